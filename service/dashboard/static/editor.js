// A plain textarea with a line-number gutter: lines with a problem are marked in the gutter and
// by a band across the text, and the textarea says it is invalid, so the problem is at the field.

import { h } from "./ui.js";

const LINE = 20; // px: the textarea's and the gutter's line-height (style.css), so they stay aligned

export function editor({ id, label, text }) {
  const textarea = h("textarea", { id, name: "spec", spellcheck: "false", wrap: "off", autocapitalize: "off",
                                   autocomplete: "off", rows: 18, "aria-describedby": "spec-status" });
  textarea.value = text;
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  const marks = h("div", { class: "marks", "aria-hidden": "true" });
  const element = h("div", { class: "field" },
    h("label", { for: id }, label),
    h("div", { class: "editor" }, gutter, h("div", { class: "code" }, marks, textarea)));
  let byLine = new Map(); // line -> messages

  function drawGutter() {
    const count = textarea.value.split("\n").length;
    const numbers = [];
    for (let n = 1; n <= count; n++) {
      const bad = byLine.get(n);
      numbers.push(h("span", { class: bad ? "bad" : null, title: bad ? bad.join("\n") : null,
                               dataset: { line: String(n) } }, String(n)));
    }
    gutter.replaceChildren(...numbers);
    marks.replaceChildren(...[...byLine.keys()].map((n) =>
      h("div", { class: "mark", dataset: { line: String(n) }, style: `top:${(n - 1) * LINE}px` })));
    sync();
  }

  function sync() {
    gutter.scrollTop = textarea.scrollTop;
    marks.style.transform = `translateY(${-textarea.scrollTop}px)`;
  }

  function goTo(line) {
    if (!line) return;
    const lines = textarea.value.split("\n");
    const start = lines.slice(0, line - 1).reduce((sum, l) => sum + l.length + 1, 0);
    textarea.focus();
    textarea.setSelectionRange(start, start + (lines[line - 1] || "").length);
    textarea.scrollTop = Math.max(0, (line - 1) * LINE - textarea.clientHeight / 3);
    sync();
  }

  textarea.addEventListener("scroll", sync);
  textarea.addEventListener("input", drawGutter);
  drawGutter();

  return {
    element,
    text: () => textarea.value,
    setText(value) {
      textarea.value = value;
      drawGutter();
    },
    onInput(handler) {
      textarea.addEventListener("input", handler);
    },
    // problems: [{path, message, line?}] from /v1/specs/validate
    mark(problems) {
      byLine = new Map();
      for (const p of problems) {
        if (!p.line) continue;
        byLine.set(p.line, [...(byLine.get(p.line) || []), `${p.path ? `${p.path}: ` : ""}${p.message}`]);
      }
      textarea.setAttribute("aria-invalid", problems.length ? "true" : "false");
      drawGutter();
    },
    goTo,
    focusFirstProblem() {
      const first = Math.min(...byLine.keys());
      if (isFinite(first)) goTo(first);
    },
  };
}
