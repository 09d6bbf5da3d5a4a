// The dashboard's entry point: a hash router over four views, and sign-in state.
//   #/signin   #/jobs[?status=running]   #/jobs/<id>   #/submit

import { forgetKey, setUnauthorizedHandler, storedKey } from "./api.js";
import { renderJob } from "./job.js";
import { renderJobs } from "./jobs.js";
import { renderSignIn } from "./signin.js";
import { renderSubmit } from "./submit.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let leaving = () => {}; // the current view's clean-up: stops its polling

function parseHash() {
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query) };
}

function route() {
  leaving();
  leaving = () => {};
  const { parts, params } = parseHash();
  const signedIn = Boolean(storedKey());
  nav.hidden = !signedIn;
  if (!signedIn && parts[0] !== "signin") {
    location.replace("#/signin");
    return;
  }
  const view = parts[0] || "jobs";
  for (const link of nav.querySelectorAll("a[data-route]")) {
    if (link.dataset.route === view && parts.length === 1) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.replaceChildren();
  let stop;
  if (view === "signin") stop = renderSignIn(main, params);
  else if (view === "jobs" && parts[1]) stop = renderJob(main, decodeURIComponent(parts[1]));
  else if (view === "jobs") stop = renderJobs(main, params);
  else if (view === "submit") stop = renderSubmit(main);
  else {
    location.replace("#/jobs");
    return;
  }
  leaving = stop || (() => {});
  window.scrollTo(0, 0);
}

function signOut(reason) {
  forgetKey();
  location.hash = reason ? `#/signin?reason=${encodeURIComponent(reason)}` : "#/signin";
}

document.getElementById("sign-out").addEventListener("click", () => signOut());
setUnauthorizedHandler((error) => signOut(`The server refused your key: ${error.message}. Sign in again.`));
window.addEventListener("hashchange", route);
route();
