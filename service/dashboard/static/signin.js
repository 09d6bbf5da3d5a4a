// Sign-in: the key is checked with a cheap authenticated call before it is kept.

import { ApiError, request, storeKey } from "./api.js";
import { alert, h } from "./ui.js";

export function renderSignIn(main, params) {
  const message = h("div", { id: "signin-message", "aria-live": "polite" });
  const reason = params.get("reason");
  if (reason) message.append(alert(reason, "warn"));
  const key = h("input", { id: "api-key", name: "api-key", type: "password", required: true,
                           autocomplete: "current-password", spellcheck: "false", placeholder: "your API key" });
  const remember = h("input", { id: "remember", type: "checkbox" });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");

  async function submit(event) {
    event.preventDefault();
    const value = key.value.trim();
    if (!value) return;
    button.disabled = true;
    message.replaceChildren(alert("Checking the key…", "info"));
    try {
      await request("/v1/jobs?limit=1", { key: value });
      storeKey(value, remember.checked);
      location.hash = "#/jobs";
    } catch (err) {
      const text = err instanceof ApiError && err.status === 401
        ? `This key was refused: ${err.message}.`
        : `Could not sign in: ${err.message}`;
      message.replaceChildren(alert(text));
      key.select();
    } finally {
      button.disabled = false;
    }
  }

  main.append(h("section", { class: "card signin" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Use an API key of this service: ", h("code", {}, "robustlab up"),
      " prints one when it starts; an operator sets them with ", h("code", {}, "ROBUSTLAB_API_KEYS"), "."),
    h("form", { onsubmit: submit, id: "signin-form" },
      h("label", { for: "api-key" }, "API key"), key,
      h("label", { class: "check" }, remember, " Remember on this device"),
      h("p", { class: "hint" }, "Unticked, the key is forgotten when you close this tab."),
      button),
    message));
  key.focus();
}
