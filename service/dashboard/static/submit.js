// Submitting a job: the spec editor (validated by POST /v1/specs/validate as you type, problems
// marked at their line), the regularizer picker from the catalog, and the model and dataset uploads
// (upload.js) that lead to an evaluate job.

import { getJson, request } from "./api.js";
import { editor } from "./editor.js";
import { addRegularizer, entryFor, EXAMPLE } from "./spec-text.js";
import { alert, h, problemList } from "./ui.js";
import { datasetUploadForm, modelUploadForm, setSection } from "./upload.js";

const DRAFT = "robustlab.draftSpec";

function modelLabel(model) {
  if (model.architecture) return model.architecture;
  return model.name ? `${model.format}:${model.name}` : `${model.format} model`;
}

function describeSpec(spec) {
  const regs = spec.regularizers.length;
  const seeds = spec.seeds.length;
  const dataset = spec.dataset.name === "upload" ? `uploaded dataset ${spec.dataset.id.slice(0, 8)}` : spec.dataset.name;
  if (spec.model.format) return `${spec.name}: ${dataset}, ${modelLabel(spec.model)} (a model file: evaluate only)`;
  return `${spec.name}: ${dataset}, ${modelLabel(spec.model)}, ${regs} regularizer${regs === 1 ? "" : "s"}` +
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

export function renderSubmit(main) {
  const status = h("div", { id: "spec-status", "aria-live": "polite" });
  const outcome = h("div", { id: "submit-result" });
  const ed = editor({ id: "spec-editor", label: "Spec (YAML or JSON)", text: sessionStorage.getItem(DRAFT) || EXAMPLE });
  const kind = h("select", { id: "job-kind", name: "kind" },
    h("option", { value: "compare" }, "compare: train and attack every regularizer"),
    h("option", { value: "evaluate" }, "evaluate: attack an uploaded model"));
  const checkpoint = h("input", { id: "checkpoint-id", name: "checkpoint", spellcheck: "false",
                                  placeholder: "id from the model upload below", autocomplete: "off" });
  const checkpointRow = h("div", { class: "field", hidden: true },
    h("label", { for: "checkpoint-id" }, "Model id"), checkpoint);
  kind.addEventListener("change", () => { checkpointRow.hidden = kind.value !== "evaluate"; });
  function evaluateKind() {
    kind.value = "evaluate";
    checkpointRow.hidden = false;
  }
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
      if (result.valid && result.spec.model.format && kind.value !== "evaluate") evaluateKind(); // a file: no training
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
    uploadSlot.replaceChildren(modelUploadForm(catalog, (created) => {
      if (created.model) ed.setText(setSection(ed.text(), "model", created.model).text);
      evaluateKind();
      checkpoint.value = created.id;
      checkpoint.focus();
      validate();
    }), datasetUploadForm((created) => {
      const { text, line } = setSection(ed.text(), "dataset", { name: "upload", id: created.id });
      ed.setText(text);
      ed.goTo(line);
      validate();
    }));
  }).catch((err) => side.replaceChildren(alert(`Could not load the catalog: ${err.message}`)));

  validate();
  return () => clearTimeout(timer);
}
