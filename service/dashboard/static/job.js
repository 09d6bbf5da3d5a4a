// One job: status and progress (polled with its ETag until it finishes), its error, and once it
// succeeded, the server-rendered report in a sandboxed frame plus every artifact as a download.

import { ApiError, download, getJson, pollJob, request } from "./api.js";
import { cancelButton } from "./jobs.js";
import { poller } from "./poll.js";
import { unitTimeline } from "./timeline.js";
import { alert, badge, h, jobName, progressBar, when } from "./ui.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

function summary(job, onChange) {
  const facts = [
    ["Kind", job.kind], ["Job id", h("code", {}, job.id)], ["Submitted", when(job.created_at)],
    ["Started", when(job.started_at)], ["Finished", when(job.finished_at)], ["Attempts", String(job.attempts)],
  ];
  if (job.checkpoint) facts.splice(2, 0, ["Checkpoint", h("code", {}, job.checkpoint)]);
  return h("section", { class: "card", id: "job-summary" },
    h("div", { class: "page-head" },
      h("h1", {}, jobName(job), " ", badge(job.status)),
      h("div", { class: "tools" }, cancelButton(job, onChange))),
    job.status === "succeeded" ? null : progressBar(job),
    job.error ? h("div", { class: "alert", role: "alert", id: "job-error" },
      h("strong", {}, job.error.type), ": ", job.error.message) : null,
    job.cancel_requested && !FINISHED.has(job.status) ? alert("Cancellation requested: the worker stops within seconds.",
      "info") : null,
    // Once the job has finished its report matters most: the facts fold away so that the report's
    // headline numbers are on screen without scrolling, on a phone too.
    FINISHED.has(job.status)
      ? h("details", { class: "job-facts" }, h("summary", {}, `Job ${job.id.slice(0, 8)} · ${when(job.finished_at)}`),
        factList(facts))
      : factList(facts));
}

function factList(facts) {
  return h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function artifactList(id, items) {
  const rows = items.map((item) => h("li", {},
    h("button", { type: "button", class: "link", onclick: () => download(item.url, item.name.split("/").pop())
      .catch((err) => window.alert(`Download failed: ${err.message}`)) }, item.name),
    h("span", { class: "muted small" }, size(item.bytes))));
  return h("section", { class: "card", id: "artifacts" },
    h("h2", {}, "Artifacts"),
    h("p", { class: "muted small" }, "Downloads are fetched with your key; nothing is exposed in a link."),
    h("ul", { class: "artifacts" }, rows));
}

// The report page has no script and escapes every user string; the sandbox (no allow-scripts)
// makes sure of it. allow-same-origin lets this page read the frame's height to fit it, and turn the
// page's links to the job's own files (`<a data-artifact="outcomes.csv">`) into downloads with the key.
function reportFrame(html, items = []) {
  const frame = h("iframe", { id: "report-frame", title: "Report", sandbox: "allow-same-origin", srcdoc: html });
  const fit = () => {
    const doc = frame.contentDocument;
    if (doc && doc.documentElement) frame.style.height = `${doc.documentElement.scrollHeight + 4}px`;
  };
  frame.addEventListener("load", () => {
    fit();
    new ResizeObserver(fit).observe(frame.contentDocument.documentElement);
    for (const link of frame.contentDocument.querySelectorAll("a[data-artifact]")) {
      const item = items.find((i) => i.name === link.dataset.artifact);
      if (!item) {
        link.replaceWith(frame.contentDocument.createTextNode(`${link.dataset.artifact} (not stored)`));
        continue;
      }
      link.addEventListener("click", (event) => {
        event.preventDefault();
        download(item.url, item.name.split("/").pop()).catch((err) => window.alert(`Download failed: ${err.message}`));
      });
    }
  });
  return h("section", { class: "card report" }, h("h2", {}, "Report"), frame);
}

export function renderJob(main, id) {
  const top = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const results = h("div", { id: "results" });
  const units = h("div", { id: "unit-timeline" });
  let current = null;
  let etag = null;
  let loadedResults = false;

  function draw(job) {
    current = job;
    top.replaceChildren(summary(job, draw));
    drawUnits();
    // Once the job has finished its report comes first (its headline on screen as the page opens).
    if (FINISHED.has(job.status) && units.previousElementSibling !== results) results.after(units);
    if (job.status === "succeeded" && !loadedResults) {
      loadedResults = true;
      loadResults();
    }
  }

  // Also on an unchanged poll (304): a running unit's bar grows to now.
  function drawUnits() {
    const open = Boolean(units.querySelector("details.unit-table[open]"));
    const section = current ? unitTimeline(current, { open }) : null;
    units.replaceChildren(...(section ? [section] : []));
  }

  async function loadResults() {
    results.replaceChildren(h("p", { class: "muted" }, "Loading the report…"));
    try {
      const [report, artifacts] = await Promise.all([
        request(`/v1/jobs/${encodeURIComponent(id)}/report.html`, { json: false }).then((r) => r.text()),
        getJson(`/v1/jobs/${encodeURIComponent(id)}/artifacts`),
      ]);
      results.replaceChildren(reportFrame(report, artifacts.items), artifactList(id, artifacts.items));
    } catch (err) {
      results.replaceChildren(alert(`Could not load the report: ${err.message}`));
    }
  }

  async function poll() {
    if (current && FINISHED.has(current.status)) {
      timer.stop();
      return;
    }
    try {
      const answer = await pollJob(id, etag);
      etag = answer.etag;
      if (answer.job) draw(answer.job);
      else drawUnits();
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        timer.stop();
        top.replaceChildren(alert(`No job ${id} for your key. `), h("a", { href: "#/jobs" }, "Back to the jobs"));
      } else {
        throw err;
      }
    }
  }

  main.append(h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← Jobs")), top, units, results);
  const timer = poller(poll, { visibleMs: 1_000, hiddenMs: 15_000 });
  return () => timer.stop();
}
