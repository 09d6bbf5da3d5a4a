// The units of a job as a timeline: one lane per worker, a bar per unit from its start to its end
// (or to now while it runs), coloured by status. `unitLayout` is the geometry alone (no DOM, tested
// under Node); `unitTimeline` draws it, with a table of the same units for screen readers and
// for reading exact times.

import { duration, h, when } from "./ui.js";

const WAITING = "not started";

function ms(iso) {
  const t = iso ? Date.parse(iso) : NaN;
  return Number.isFinite(t) ? t : null;
}

// Lanes (a worker each, in order of first start; units not started yet last) with each unit's
// left and width in percent of the span from the first start to the last end (or `nowMs`).
// A queued unit that ran before (lost, waiting to resume) waits with the others, not on a lane.
export function unitLayout(units, nowMs = Date.now()) {
  const placed = units.filter((u) => u.status !== "queued" && ms(u.started_at) !== null);
  const starts = placed.map((u) => ms(u.started_at));
  const ends = placed.map((u) => ms(u.finished_at)).filter((t) => t !== null);
  const running = placed.some((u) => u.status === "running" && !u.finished_at);
  const t0 = starts.length ? Math.min(...starts) : null;
  // A browser clock behind the server's must not end a running bar before its start.
  const t1 = t0 === null ? null : Math.max(t0 + 1000, ...starts, ...ends, running ? nowMs : -Infinity);
  const span = t1 === null ? 1 : t1 - t0;
  const lanes = new Map();
  const counts = {};
  for (const unit of units) {
    counts[unit.status] = (counts[unit.status] || 0) + 1;
    const start = placed.includes(unit) ? ms(unit.started_at) : null;
    const lane = start === null ? WAITING : unit.worker || "unknown worker";
    if (!lanes.has(lane)) lanes.set(lane, { worker: lane, first: start ?? Infinity, bars: [] });
    const entry = lanes.get(lane);
    if (start === null) {
      entry.bars.push({ unit, left: null, width: null, seconds: null });
      continue;
    }
    entry.first = Math.min(entry.first, start);
    const end = ms(unit.finished_at) ?? (unit.status === "running" ? Math.max(nowMs, start) : start);
    entry.bars.push({ unit, left: ((start - t0) / span) * 100, width: (Math.max(0, end - start) / span) * 100,
                      seconds: Math.max(0, end - start) / 1000 });
  }
  const ordered = [...lanes.values()].sort((a, b) => (a.worker === WAITING) - (b.worker === WAITING) ||
    a.first - b.first || a.worker.localeCompare(b.worker));
  for (const lane of ordered) lane.bars.sort((a, b) => (a.left ?? Infinity) - (b.left ?? Infinity));
  return { lanes: ordered, seconds: t0 === null ? 0 : span / 1000, counts, start: t0,
           workers: ordered.filter((l) => l.worker !== WAITING).length };
}

export function unitTooltip({ unit, seconds }) {
  const attempts = `${unit.attempts} attempt${unit.attempts === 1 ? "" : "s"}`;
  const time = unit.started_at ? `${when(unit.started_at)}${seconds !== null ? `, ${duration(seconds) || "0 s"}` : ""}`
    : "not started";
  return `${unit.name} · ${unit.kind} · ${unit.status} · ${attempts} · ${unit.worker || "no worker yet"} · ${time}`;
}

function bar(item) {
  const { unit } = item;
  const tip = unitTooltip(item);
  return h("div", {
    class: `unit unit-${unit.status}${unit.attempts > 1 ? " unit-retried" : ""}`, title: tip, role: "img",
    "aria-label": tip, style: `left:${item.left.toFixed(3)}%;width:${item.width.toFixed(3)}%`,
    dataset: { name: unit.name, status: unit.status, kind: unit.kind, attempts: String(unit.attempts),
               worker: unit.worker || "" },
  }, h("span", { class: "unit-label" }, unit.name));
}

function lane(entry) {
  if (entry.worker === WAITING) {
    return h("li", { class: "lane lane-waiting", dataset: { worker: "" } },
      h("span", { class: "lane-name" }, `${entry.bars.length} not started`),
      h("ul", { class: "waiting-units" }, entry.bars.map((item) =>
        h("li", { class: `unit-chip unit-${item.unit.status}`, title: unitTooltip(item),
                  dataset: { name: item.unit.name, status: item.unit.status } }, item.unit.name))));
  }
  return h("li", { class: "lane", dataset: { worker: entry.worker } },
    h("span", { class: "lane-name", title: entry.worker }, entry.worker),
    h("div", { class: "lane-track" }, entry.bars.map(bar)));
}

function table(units, layout) {
  const seconds = new Map(layout.lanes.flatMap((l) => l.bars.map((b) => [b.unit, b.seconds])));
  return h("details", { class: "unit-table" }, h("summary", {}, "The units as a table"),
    h("div", { class: "table-scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Unit", "Kind", "Status", "Worker", "Started", "Duration", "Attempts"]
        .map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, units.map((u) => h("tr", {},
        h("td", {}, u.name), h("td", {}, u.kind), h("td", {}, u.status), h("td", {}, u.worker || "—"),
        h("td", {}, when(u.started_at)), h("td", {}, seconds.get(u) === null ? "—" : duration(seconds.get(u)) || "0 s"),
        h("td", { class: "num" }, String(u.attempts))))))));
}

// The section for a job, or null when it has no units (not planned yet, or an old-style job).
// `open` keeps the table open across redraws.
export function unitTimeline(job, { nowMs = Date.now(), open = false } = {}) {
  const units = job.units || [];
  if (!units.length) return null;
  const layout = unitLayout(units, nowMs);
  const parts = ["running", "queued", "succeeded", "failed", "cancelled"]
    .filter((s) => layout.counts[s]).map((s) => `${layout.counts[s]} ${s}`);
  const summary = `${units.length} unit${units.length === 1 ? "" : "s"} (${parts.join(", ")}) on ` +
    `${layout.workers} worker${layout.workers === 1 ? "" : "s"}`;
  const drawn = layout.lanes.filter((l) => l.worker !== WAITING);
  const section = h("section", { class: "card", id: "units", "aria-labelledby": "units-title" },
    h("h2", { id: "units-title" }, "Units"),
    h("p", { class: "muted small", id: "units-summary" }, summary,
      layout.seconds ? ` · ${duration(layout.seconds) || "0 s"} from the first start` : ""),
    drawn.length ? h("div", { class: "timeline-axis muted small", "aria-hidden": "true" },
      h("span", {}, when(new Date(layout.start).toISOString())),
      h("span", {}, `+${duration(layout.seconds / 2) || "0 s"}`),
      h("span", {}, `+${duration(layout.seconds) || "0 s"}`)) : null,
    h("ol", { class: "timeline", "aria-label": "units by worker over time" }, layout.lanes.map(lane)),
    h("ul", { class: "legend small muted", "aria-hidden": "true" },
      ["running", "succeeded", "failed", "cancelled", "queued"].map((s) => h("li", {}, h("span", {
        class: `swatch unit-${s}` }), s))),
    table(units, layout));
  if (open) section.querySelector("details.unit-table").open = true;
  return section;
}
