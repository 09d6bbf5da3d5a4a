// Submitting a job: the spec editor (validated by POST /v1/specs/validate as you type, problems
// marked at their line), the regularizer picker from the catalog, and the checkpoint upload.

import { getJson, request } from "./api.js";
import { editor } from "./editor.js";
import { addRegularizer, entryFor, EXAMPLE } from "./spec-text.js";
import { alert, h, problemList } from "./ui.js";

const DRAFT = "robustlab.draftSpec";

function describeSpec(spec) {
  const regs = spec.regularizers.length;
  const seeds = spec.seeds.length;
  return `${spec.name}: ${spec.dataset.name}, ${spec.model.architecture}, ${regs} regularizer${regs === 1 ? "" : "s"}` +
    ` × ${seeds} seed${seeds === 1 ? "" : "s"} = ${regs * seeds} training run${regs * seeds === 1 ? "" : "s"}`;
}

function picker(catalog, onAdd) {
  const select = h("select", { id: "regularizer-pick" },
    catalog.regularizers.map((r) => h("option", { value: r.name }, r.name)));
  const about = h("p", { class: "muted small", id: "regularizer-about" });
  const show = () => {
    const r = catalog.regularizers.find((x) => x.name === select.value);
    const params = r.parameters.map((p) => `${p.name}=${p.default === null ? "(required)" : JSON.stringify(p.default)}`);
    about.textContent = `${r.description}${params.length ? ` Parameters: ${params.join(", ")}.` : ""}`;
  };
  select.addEventListener("change", show);
  show();
  return h("div", { class: "picker" },
    h("label", { for: "regularizer-pick" }, "Regularizer"),
    h("div", { class: "row" }, select,
      h("button", { type: "button", id: "add-regularizer",
                    onclick: () => onAdd(catalog.regularizers.find((x) => x.name === select.value)) },
        "Add to spec")),
    about);
}

function uploadForm(catalog, onUploaded) {
  const result = h("div", { id: "upload-result", "aria-live": "polite" });
  const file = h("input", { id: "ckpt-file", name: "file", type: "file", required: true,
                            accept: ".safetensors,.pt,.pth" });
  const arch = h("select", { id: "ckpt-arch", name: "architecture" },
    catalog.architectures.map((a) => h("option", { value: a.name }, a.name)));
  const params = h("textarea", { id: "ckpt-params", name: "params", rows: 2, spellcheck: "false",
                                 placeholder: '{"hidden": [16]}' });
  const button = h("button", { type: "submit" }, "Upload");
  async function submit(event) {
    event.preventDefault();
    const form = new FormData();
    form.append("file", file.files[0]);
    form.append("architecture", arch.value);
    if (params.value.trim()) form.append("params", params.value.trim());
    button.disabled = true;
    result.replaceChildren(alert("Uploading and checking…", "info"));
    try {
      const { data } = await request("/v1/checkpoints", { method: "POST", body: form, ok: [201] });
      result.replaceChildren(h("div", { class: "alert alert-ok", role: "status" },
        h("p", {}, "Checkpoint accepted."),
        h("dl", { class: "facts" }, h("dt", {}, "id"), h("dd", {}, h("code", { id: "ckpt-id" }, data.id)),
          h("dt", {}, "sha256"), h("dd", {}, h("code", {}, data.sha256))),
        h("button", { type: "button", onclick: () => onUploaded(data) }, "Evaluate it with the spec above")));
    } catch (err) {
      result.replaceChildren(problemList(err));
    } finally {
      button.disabled = false;
    }
  }
  return h("section", { class: "card", id: "upload" },
    h("h2", {}, "Upload a checkpoint"),
    h("p", { class: "muted small" }, "A .safetensors file saved by robustlab, or a .pt/.pth state_dict (read safely: ",
      "pickled code never runs). Its id goes into an evaluate job."),
    h("form", { onsubmit: submit, class: "grid-form" },
      h("label", { for: "ckpt-file" }, "File"), file,
      h("label", { for: "ckpt-arch" }, "Architecture"), arch,
      h("label", { for: "ckpt-params" }, "Parameters (JSON, optional)"), params,
      h("div", {}, button)),
    result);
}

export function renderSubmit(main) {
  const status = h("div", { id: "spec-status", "aria-live": "polite" });
  const outcome = h("div", { id: "submit-result" });
  const ed = editor({ id: "spec-editor", label: "Spec (YAML or JSON)", text: sessionStorage.getItem(DRAFT) || EXAMPLE });
  const kind = h("select", { id: "job-kind", name: "kind" },
    h("option", { value: "compare" }, "compare: train and attack every regularizer"),
    h("option", { value: "evaluate" }, "evaluate: attack an uploaded checkpoint"));
  const checkpoint = h("input", { id: "checkpoint-id", name: "checkpoint", spellcheck: "false",
                                  placeholder: "id from the upload below", autocomplete: "off" });
  const checkpointRow = h("div", { class: "field", hidden: true },
    h("label", { for: "checkpoint-id" }, "Checkpoint id"), checkpoint);
  kind.addEventListener("change", () => { checkpointRow.hidden = kind.value !== "evaluate"; });
  const submitButton = h("button", { type: "submit", class: "primary", id: "submit-job" }, "Submit job");
  let timer = null;
  let generation = 0; // answers to older texts are ignored

  async function validate() {
    const mine = ++generation;
    const text = ed.text();
    sessionStorage.setItem(DRAFT, text);
    try {
      const result = await getJson("/v1/specs/validate", { method: "POST", body: { spec_text: text } });
      if (mine !== generation) return null;
      ed.mark(result.problems);
      status.replaceChildren(result.valid
        ? h("p", { class: "ok" }, "✓ Valid — ", describeSpec(result.spec))
        : h("p", { class: "bad" }, `✗ ${result.problems.length} problem${result.problems.length === 1 ? "" : "s"}:`,
          h("ul", { class: "problems", id: "spec-problems" }, result.problems.map((p) =>
            h("li", { dataset: { path: p.path, line: p.line ?? "" } },
              h("button", { type: "button", class: "link", onclick: () => ed.goTo(p.line) },
                p.line ? `line ${p.line}` : "spec"),
              " ", p.path ? h("code", {}, p.path) : null, p.path ? ": " : "", p.message)))));
      return result;
    } catch (err) {
      status.replaceChildren(alert(`Could not validate: ${err.message}`));
      return null;
    }
  }

  ed.onInput(() => {
    clearTimeout(timer);
    timer = setTimeout(validate, 400);
  });

  async function submit(event) {
    event.preventDefault();
    clearTimeout(timer);
    outcome.replaceChildren();
    const result = await validate();
    if (!result || !result.valid) {
      ed.focusFirstProblem();
      return;
    }
    const body = { kind: kind.value, spec: result.spec };
    if (kind.value === "evaluate") body.checkpoint = checkpoint.value.trim();
    submitButton.disabled = true;
    try {
      const { data } = await request("/v1/jobs", { method: "POST", body, ok: [200, 202] });
      sessionStorage.removeItem(DRAFT);
      location.hash = `#/jobs/${encodeURIComponent(data.id)}`;
    } catch (err) {
      outcome.replaceChildren(problemList(err));
    } finally {
      submitButton.disabled = false;
    }
  }

  const side = h("div", { class: "side" }, h("p", { class: "muted" }, "Loading the catalog…"));
  const uploadSlot = h("div");
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "New job")),
    h("div", { class: "submit-layout" },
      h("form", { class: "card", id: "submit-form", onsubmit: submit },
        ed.element,
        status,
        h("div", { class: "row wrap" },
          h("button", { type: "button", id: "load-example", onclick: () => { ed.setText(EXAMPLE); validate(); } },
            "Load example"),
          h("button", { type: "button", onclick: validate }, "Validate")),
        h("div", { class: "field" }, h("label", { for: "job-kind" }, "Kind"), kind),
        checkpointRow,
        submitButton,
        outcome),
      side),
    uploadSlot);

  getJson("/v1/catalog").then((catalog) => {
    side.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Add a regularizer"),
      picker(catalog, (regularizer) => {
        const { text, line } = addRegularizer(ed.text(), entryFor(regularizer, ed.text()));
        ed.setText(text);
        ed.goTo(line);
        validate();
      })));
    uploadSlot.replaceChildren(uploadForm(catalog, (created) => {
      kind.value = "evaluate";
      checkpointRow.hidden = false;
      checkpoint.value = created.id;
      checkpoint.focus();
    }));
  }).catch((err) => side.replaceChildren(alert(`Could not load the catalog: ${err.message}`)));

  validate();
  return () => clearTimeout(timer);
}
