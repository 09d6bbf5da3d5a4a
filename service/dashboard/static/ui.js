// Small DOM helpers: elements are built, never parsed from strings, so names and messages that
// come from users cannot inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  el.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];

export function badge(status) {
  return h("span", { class: `status status-${status}` }, status);
}

export function percent(fraction) {
  return `${Math.round(Math.max(0, Math.min(1, fraction || 0)) * 100)} %`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function ago(iso) {
  if (!iso) return "";
  const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
  if (seconds < 45) return "just now";
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

// The progress bar with its stage, message and time left; `progress` is the job's.
export function progressBar(job) {
  const p = job.progress || {};
  const fraction = job.status === "succeeded" ? 1 : p.fraction || 0;
  const eta = job.status === "running" && p.eta_seconds ? `about ${duration(p.eta_seconds)} left` : "";
  const label = [p.stage, p.message].filter(Boolean).join(": ");
  return h("div", { class: `progress progress-${job.status}` },
    h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
               "aria-valuenow": String(Math.round(fraction * 100)), "aria-label": `progress of ${jobName(job)}` },
      h("span", { style: `width:${(fraction * 100).toFixed(1)}%` })),
    h("div", { class: "progress-text" },
      h("span", { class: "fraction" }, percent(fraction)),
      h("span", { class: "stage" }, label),
      eta && h("span", { class: "eta" }, eta)));
}

export function jobName(job) {
  return (job.spec && job.spec.name) || job.id.slice(0, 8);
}

// A list of problems from the API ({path, message, line?}) as an accessible alert.
export function problemList(error) {
  const items = (error.problems || []).map((p) =>
    h("li", {}, p.path ? h("code", {}, p.path) : null, p.path ? ": " : "", p.message));
  return h("div", { class: "alert", role: "alert" }, h("p", {}, error.message), items.length ? h("ul", {}, items) : null);
}

export function alert(message, kind = "error") {
  return h("div", { class: `alert alert-${kind}`, role: kind === "error" ? "alert" : "status" }, message);
}
