// The job list: the page of jobs (GET /v1/jobs) refreshed now and then, and every queued or running
// job polled on its own with its ETag, so an unchanged job costs a bodiless 304.

import { getJson, pollJob } from "./api.js";
import { poller } from "./poll.js";
import { ago, alert, badge, h, jobName, progressBar, STATUSES } from "./ui.js";

const ACTIVE = new Set(["queued", "running"]);

export function cancelButton(job, after) {
  if (!ACTIVE.has(job.status) || job.cancel_requested) return null;
  return h("button", {
    type: "button", class: "danger small", "aria-label": `cancel ${jobName(job)}`,
    onclick: async (event) => {
      event.preventDefault();
      event.currentTarget.disabled = true;
      try {
        after(await getJson(`/v1/jobs/${encodeURIComponent(job.id)}/cancel`, { method: "POST" }));
      } catch (err) {
        window.alert(`Could not cancel: ${err.message}`);
      }
    },
  }, "Cancel");
}

function jobRow(job, onChange) {
  const href = `#/jobs/${encodeURIComponent(job.id)}`;
  return h("li", { class: `job-row is-${job.status}`, dataset: { id: job.id, status: job.status } },
    h("div", { class: "job-title" },
      h("a", { href, class: "job-link" }, jobName(job)),
      h("span", { class: "muted small" }, `${job.kind} · ${job.id.slice(0, 8)} · ${ago(job.created_at)}`)),
    h("div", { class: "job-status" }, badge(job.status),
      job.cancel_requested && job.status === "running" ? h("span", { class: "muted small" }, "cancelling…") : null),
    progressBar(job),
    h("div", { class: "job-actions" }, cancelButton(job, onChange)));
}

export function renderJobs(main, params) {
  const status = STATUSES.includes(params.get("status")) ? params.get("status") : "";
  const list = h("ul", { class: "job-list", id: "job-list" }); // not aria-live: it redraws every second
  const message = h("div");
  const jobs = new Map(); // id -> { job, etag }

  const filter = h("select", { id: "status-filter", onchange: () => {
    location.hash = filter.value ? `#/jobs?status=${filter.value}` : "#/jobs";
  } }, h("option", { value: "" }, "all"), STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)));

  function draw() {
    const rows = [...jobs.values()].map(({ job }) => jobRow(job, update));
    if (!rows.length) {
      rows.push(h("li", { class: "empty" }, status ? `No ${status} jobs.` : "No jobs yet. ",
        h("a", { href: "#/submit" }, "Submit one")));
    }
    list.replaceChildren(...rows);
  }

  function update(job) {
    const known = jobs.get(job.id);
    jobs.set(job.id, { job, etag: known ? known.etag : null });
    draw();
  }

  async function refreshList() {
    const query = new URLSearchParams({ limit: "50" });
    if (status) query.set("status", status);
    try {
      const page = await getJson(`/v1/jobs?${query}`);
      const etags = new Map([...jobs].map(([id, entry]) => [id, entry.etag]));
      jobs.clear();
      for (const job of page.items) jobs.set(job.id, { job, etag: etags.get(job.id) || null });
      message.replaceChildren();
      draw();
    } catch (err) {
      message.replaceChildren(alert(`Could not load the jobs: ${err.message}`));
    }
  }

  async function pollActive() {
    let finished = false;
    let changed = false;
    for (const [id, entry] of jobs) {
      if (!ACTIVE.has(entry.job.status)) continue;
      const { job, etag } = await pollJob(id, entry.etag);
      entry.etag = etag;
      if (job) {
        entry.job = job;
        changed = true;
        finished ||= !ACTIVE.has(job.status);
      }
    }
    if (changed) draw(); // a 304 changes nothing: keep the DOM (and the focus) as it is
    if (finished && status) await refreshList(); // it leaves a filtered list
  }

  main.append(
    h("div", { class: "page-head" },
      h("h1", {}, "Jobs"),
      h("div", { class: "tools" },
        h("label", { for: "status-filter" }, "Status"), filter,
        h("a", { class: "button primary", href: "#/submit" }, "New job"))),
    message, list);

  const listTimer = poller(refreshList, { visibleMs: 10_000, hiddenMs: 60_000 });
  const jobTimer = poller(pollActive, { visibleMs: 1_000, hiddenMs: 15_000 });
  return () => {
    listTimer.stop();
    jobTimer.stop();
  };
}
