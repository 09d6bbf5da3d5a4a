// Uploads on the "New job" page: a model file (POST /v1/models) with the model section its format
// needs, and an .npz dataset (POST /v1/datasets). Each leads to an evaluate job: the spec editor's
// `model:` / `dataset:` entry is replaced with what was uploaded, and the job's model id is set.

import { request } from "./api.js";
import { alert, h, problemList } from "./ui.js";

export const FORMATS = {
  registry: { label: "robustlab architecture (.safetensors / .pt state_dict)", accept: ".safetensors,.pt,.pth" },
  onnx: { label: "ONNX graph (.onnx)", accept: ".onnx" },
  timm: { label: "timm architecture by name (.safetensors / .pt weights)", accept: ".safetensors,.pt,.pth" },
  torchvision: { label: "torchvision architecture by name (.safetensors / .pt weights)",
                 accept: ".safetensors,.pt,.pth" },
};

// --- spec text: replace one top-level entry (JSON or YAML, block or flow style) ------------------

function flowValue(value) {
  if (Array.isArray(value)) return `[${value.map(flowValue).join(", ")}]`;
  if (value && typeof value === "object") {
    return `{${Object.entries(value).map(([k, v]) => `${k}: ${flowValue(v)}`).join(", ")}}`;
  }
  return JSON.stringify(value); // JSON scalars are valid YAML flow scalars
}

// The text with its top-level `key` set to `value`; { text, line } (1-based line of the entry).
export function setSection(text, key, value) {
  try {
    const data = JSON.parse(text);
    if (data && typeof data === "object" && !Array.isArray(data)) {
      data[key] = value;
      const out = JSON.stringify(data, null, 2);
      const line = out.split("\n").findIndex((l) => l.startsWith(`  "${key}":`)) + 1;
      return { text: `${out}\n`, line };
    }
  } catch {
    // not JSON: YAML below
  }
  const lines = text.replace(/\n+$/, "").split("\n");
  const entry = `${key}: ${flowValue(value)}`;
  const start = lines.findIndex((l) => new RegExp(`^${key}\\s*:`).test(l));
  if (start < 0) {
    lines.push(entry);
    return { text: `${lines.join("\n")}\n`, line: lines.length };
  }
  let end = start; // the entry's last line: indented lines (a block mapping) belong to it
  for (let i = start + 1; i < lines.length; i++) {
    const l = lines[i];
    if (l.trim() === "" || l.trimStart().startsWith("#")) continue;
    if (!/^\s/.test(l)) break;
    end = i;
  }
  lines.splice(start, end - start + 1, entry);
  return { text: `${lines.join("\n")}\n`, line: start + 1 };
}

// --- the model section from the form --------------------------------------------------------------

function numbers(text, what, { integer = false } = {}) {
  const parts = text.split(/[\s,×x[\]]+/).filter(Boolean);
  const values = parts.map(Number);
  if (!parts.length || values.some((v) => !isFinite(v) || (integer && !Number.isInteger(v)))) {
    throw new Error(`${what}: give ${integer ? "whole numbers" : "numbers"} separated by commas, e.g. ` +
      (integer ? "1, 8, 8" : "0.5, 0.5, 0.5"));
  }
  return values;
}

// The spec's model section the fields describe (throws with a message naming the field).
export function modelSection(fields) {
  const format = fields.format;
  if (format === "registry") {
    const section = { architecture: fields.architecture };
    if (fields.params.trim()) {
      try {
        section.params = JSON.parse(fields.params);
      } catch (err) {
        throw new Error(`Parameters: not JSON (${err.message}); e.g. {"hidden": [16]}`);
      }
    }
    return section;
  }
  const section = { format };
  if (format !== "onnx") {
    if (!fields.name.trim()) throw new Error(`Name: the ${format} architecture, e.g. resnet18`);
    section.name = fields.name.trim();
  }
  section.input_shape = numbers(fields.inputShape, "Input shape", { integer: true });
  section.num_classes = numbers(fields.numClasses, "Classes", { integer: true })[0];
  section.layout = fields.layout;
  section.input_range = numbers(fields.inputRange, "Input range");
  if (section.input_range.length !== 2) throw new Error("Input range: two numbers, low and high, e.g. 0, 255");
  if (fields.mean.trim() || fields.std.trim()) {
    section.mean = numbers(fields.mean, "Mean");
    section.std = numbers(fields.std, "Std");
  }
  section.outputs = fields.outputs;
  return section;
}

function field(id, label, control, hint) {
  return h("div", { class: "field", id: `${id}-field` },
    h("label", { for: id }, label), control, hint ? h("p", { class: "muted small" }, hint) : null);
}

function select(id, options, value) {
  const el = h("select", { id, name: id }, options.map(([v, text]) => h("option", { value: v }, text)));
  if (value !== undefined) el.value = value;
  return el;
}

function input(id, value, placeholder) {
  const el = h("input", { id, name: id, spellcheck: "false", autocomplete: "off", placeholder });
  el.value = value;
  return el;
}

// The model upload card; onUploaded(created) gets the server's answer ({id, model, format, ...}).
export function modelUploadForm(catalog, onUploaded) {
  const result = h("div", { id: "upload-result", "aria-live": "polite" });
  const format = select("model-format", Object.entries(FORMATS).map(([k, f]) => [k, f.label]), "registry");
  const file = h("input", { id: "ckpt-file", name: "file", type: "file", required: true,
                            accept: FORMATS.registry.accept });
  const arch = select("ckpt-arch", catalog.architectures.map((a) => [a.name, a.name]));
  const params = h("textarea", { id: "ckpt-params", name: "params", rows: 2, spellcheck: "false",
                                 placeholder: '{"hidden": [16]}' });
  const name = input("model-name", "", "resnet18");
  const inputShape = input("model-input-shape", "", "3, 32, 32");
  const numClasses = input("model-classes", "", "10");
  const layout = select("model-layout", [["nchw", "NCHW: channels first (PyTorch)"],
                                         ["nhwc", "NHWC: channels last (TensorFlow, JAX)"]]);
  const inputRange = input("model-range", "0, 1", "0, 255");
  const mean = input("model-mean", "", "optional, e.g. 0.485, 0.456, 0.406");
  const std = input("model-std", "", "optional, e.g. 0.229, 0.224, 0.225");
  const outputs = select("model-outputs", [["logits", "logits"], ["probabilities", "probabilities (softmax applied)"]]);

  const registryFields = [
    field("ckpt-arch", "Architecture", arch),
    field("ckpt-params", "Parameters (JSON, optional)", params,
          "A .safetensors file saved by robustlab describes itself; a .pt/.pth state_dict needs them."),
  ];
  const nameField = field("model-name", "Name in the library", name);
  const shapeHint = h("p", { class: "muted small" });
  const shapeFields = [
    h("div", { class: "field", id: "model-input-shape-field" },
      h("label", { for: "model-input-shape" }, "Input shape (one sample, as the model takes it)"), inputShape, shapeHint),
    field("model-classes", "Classes", numClasses),
  ];
  const userFields = [
    nameField,
    field("model-layout", "Channel order", layout),
    field("model-range", "Input range the model expects", inputRange,
          "Attacks and ε stay in [0, 1]; inputs are scaled to this range for the model."),
    field("model-mean", "Mean (per channel, after scaling)", mean),
    field("model-std", "Std (per channel)", std),
    field("model-outputs", "Outputs", outputs),
  ];
  function show() {
    const registry = format.value === "registry";
    registryFields.forEach((f) => { f.hidden = !registry; });
    userFields.forEach((f) => { f.hidden = registry; });
    nameField.hidden = registry || format.value === "onnx";
    shapeHint.textContent = registry
      ? "Only for a .pt/.pth state_dict (a robustlab .safetensors file says its own), e.g. 1, 8, 8"
      : "e.g. 1, 8, 8 (NCHW), 8, 8, 1 (NHWC) or 64 (vectors)";
    file.accept = FORMATS[format.value].accept;
  }
  format.addEventListener("change", show);
  show();

  const button = h("button", { type: "submit" }, "Upload");
  async function submit(event) {
    event.preventDefault();
    let section;
    try {
      if (!file.files.length) throw new Error("File: choose the model file to upload");
      section = modelSection({ format: format.value, architecture: arch.value, params: params.value, name: name.value,
                               inputShape: inputShape.value, numClasses: numClasses.value, layout: layout.value,
                               inputRange: inputRange.value, mean: mean.value, std: std.value,
                               outputs: outputs.value });
    } catch (err) {
      result.replaceChildren(alert(err.message));
      return;
    }
    const form = new FormData();
    form.append("file", file.files[0]);
    form.append("model", JSON.stringify(section));
    if (format.value === "registry") { // a state_dict does not say what it was trained on
      try {
        if (inputShape.value.trim()) {
          form.append("input_shape", JSON.stringify(numbers(inputShape.value, "Input shape", { integer: true })));
        }
        if (numClasses.value.trim()) form.append("num_outputs", String(numbers(numClasses.value, "Classes")[0]));
      } catch (err) {
        result.replaceChildren(alert(err.message));
        return;
      }
    }
    button.disabled = true;
    result.replaceChildren(alert("Uploading and checking…", "info"));
    try {
      const { data } = await request("/v1/models", { method: "POST", body: form, ok: [201] });
      const created = { ...data, model: data.model || section };
      const what = created.format === "registry" || !created.format ? "Checkpoint" : "Model";
      result.replaceChildren(h("div", { class: "alert alert-ok", role: "status" },
        h("p", {}, `${what} accepted.`),
        h("dl", { class: "facts" },
          h("dt", {}, "id"), h("dd", {}, h("code", { id: "ckpt-id" }, created.id)),
          h("dt", {}, "format"), h("dd", { id: "ckpt-format" }, created.format || "registry"),
          h("dt", {}, "sha256"), h("dd", {}, h("code", {}, created.sha256))),
        h("button", { type: "button", id: "evaluate-upload", onclick: () => onUploaded(created) },
          "Evaluate it: set the spec's model section and this id")));
    } catch (err) {
      result.replaceChildren(problemList(err));
    } finally {
      button.disabled = false;
    }
  }
  return h("section", { class: "card", id: "upload" },
    h("h2", {}, "Upload a model"),
    h("p", { class: "muted small" }, "Our architectures' checkpoints, ONNX exports (from PyTorch, TensorFlow, JAX…), ",
      "or timm / torchvision weights. Files are read safely: pickled code never runs. ",
      "The id goes into an evaluate job."),
    h("form", { onsubmit: submit, class: "grid-form", id: "upload-form" },
      field("model-format", "Format", format),
      field("ckpt-file", "File", file),
      registryFields, nameField, shapeFields, userFields.filter((f) => f !== nameField),
      h("div", {}, button)),
    result);
}

// The dataset upload card; onUploaded(created) gets {id, train_samples, test_samples, ...}.
export function datasetUploadForm(onUploaded) {
  const result = h("div", { id: "dataset-result", "aria-live": "polite" });
  const file = h("input", { id: "dataset-file", name: "file", type: "file", required: true, accept: ".npz" });
  const classes = input("dataset-classes", "", "optional: default the largest label + 1");
  const button = h("button", { type: "submit" }, "Upload dataset");
  async function submit(event) {
    event.preventDefault();
    if (!file.files.length) {
      result.replaceChildren(alert("File: choose an .npz file"));
      return;
    }
    const form = new FormData();
    form.append("file", file.files[0]);
    if (classes.value.trim()) form.append("num_classes", classes.value.trim());
    button.disabled = true;
    result.replaceChildren(alert("Uploading and checking…", "info"));
    try {
      const { data } = await request("/v1/datasets", { method: "POST", body: form, ok: [201] });
      result.replaceChildren(h("div", { class: "alert alert-ok", role: "status" },
        h("p", {}, "Dataset accepted."),
        h("dl", { class: "facts" },
          h("dt", {}, "id"), h("dd", {}, h("code", { id: "dataset-id" }, data.id)),
          h("dt", {}, "samples"), h("dd", {}, `${data.train_samples} train / ${data.test_samples} test`),
          h("dt", {}, "sample shape"), h("dd", {}, JSON.stringify(data.sample_shape)),
          h("dt", {}, "classes"), h("dd", {}, String(data.num_classes))),
        h("button", { type: "button", id: "use-dataset", onclick: () => onUploaded(data) },
          "Use it: set the spec's dataset section")));
    } catch (err) {
      result.replaceChildren(problemList(err));
    } finally {
      button.disabled = false;
    }
  }
  return h("section", { class: "card", id: "dataset-upload" },
    h("h2", {}, "Upload a dataset"),
    h("p", { class: "muted small" }, "An .npz with x_test and y_test (optionally x_train, y_train), inputs in [0, 1] ",
      "as N×C×H×W or N×D, integer labels. Read without pickle; a spec names it by id."),
    h("form", { onsubmit: submit, class: "grid-form", id: "dataset-form" },
      field("dataset-file", "File (.npz)", file),
      field("dataset-classes", "Classes (optional)", classes),
      h("div", {}, button)),
    result);
}
