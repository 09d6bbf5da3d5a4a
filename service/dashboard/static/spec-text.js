// Editing spec text without a YAML library: the example spec, and adding a regularizer entry to
// the `regularizers` list whether the text is JSON or block-style YAML.

export const EXAMPLE = `# A small digits comparison: two regularizers, one seed; finishes in seconds on a CPU.
name: digits-tiny
dataset: {name: digits, train_size: 200, test_size: 100, seed: 0}
model: {architecture: mlp, params: {hidden: [16]}}
training: {epochs: 10, batch_size: 64, optimizer: adam, lr: 0.02}
regularizers:
  - {name: erm, kind: none}
  - {name: doubleback, kind: double_backprop, weight: 1.0}
seeds: [0]
evaluation:
  attacks:
    - {kind: fgsm, norm: linf, eps: [0.05, 0.1]}
    - {kind: pgd, norm: linf, eps: [0.1], steps: 5}
`;

// Placeholders for parameters without a default: validation then points at them.
const REQUIRED_PLACEHOLDERS = { teacher: "erm", eps: 0.1 };

// The entry for a catalog regularizer: name, kind and every parameter at its default.
export function entryFor(regularizer, text) {
  const base = regularizer.name === "none" ? "erm" : regularizer.name;
  let name = base;
  const escape = (s) => s.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&");
  const taken = (n) => new RegExp(`name["']?\\s*:\\s*["']?${escape(n)}["']?\\s*[,}\\n]`).test(text);
  for (let i = 2; taken(name); i++) name = `${base}-${i}`;
  const entry = { name, kind: regularizer.name };
  for (const p of regularizer.parameters) {
    if (p.default !== null && p.default !== undefined) entry[p.name] = p.default;
    else if (p.required) entry[p.name] = REQUIRED_PLACEHOLDERS[p.name] ?? null;
  }
  return entry;
}

function flow(entry) {
  // JSON values are valid YAML flow values; keys are plain words.
  return `{${Object.entries(entry).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(", ")}}`;
}

// The text with `entry` added; { text, line } where line (1-based) is the new entry's.
export function addRegularizer(text, entry) {
  try {
    const data = JSON.parse(text);
    if (data && typeof data === "object" && !Array.isArray(data)) {
      data.regularizers = [...(Array.isArray(data.regularizers) ? data.regularizers : []), entry];
      const out = JSON.stringify(data, null, 2);
      const line = out.split("\n").findIndex((l) => l.includes(`"name": ${JSON.stringify(entry.name)}`)) + 1;
      return { text: `${out}\n`, line };
    }
  } catch {
    // not JSON: YAML below
  }
  const lines = text.replace(/\n+$/, "").split("\n");
  const start = lines.findIndex((l) => /^regularizers\s*:/.test(l));
  if (start < 0) {
    lines.push("regularizers:", `  - ${flow(entry)}`);
    return { text: `${lines.join("\n")}\n`, line: lines.length };
  }
  const inline = lines[start].match(/^(regularizers\s*:\s*\[.*?)\s*\]\s*(#.*)?$/);
  if (inline) { // regularizers: [{...}, {...}]
    const empty = /\[\s*$/.test(inline[1]);
    lines[start] = `${inline[1]}${empty ? "" : ", "}${flow(entry)}]`;
    return { text: `${lines.join("\n")}\n`, line: start + 1 };
  }
  let last = start; // the last line of the block: indented, a list item, or blank inside it
  let indent = "  ";
  for (let i = start + 1; i < lines.length; i++) {
    const l = lines[i];
    if (l.trim() === "" || l.trimStart().startsWith("#")) continue;
    if (!/^\s/.test(l) && !l.startsWith("-")) break;
    if (last === start) indent = l.match(/^(\s*)/)[1];
    last = i;
  }
  lines.splice(last + 1, 0, `${indent}- ${flow(entry)}`);
  return { text: `${lines.join("\n")}\n`, line: last + 2 };
}
