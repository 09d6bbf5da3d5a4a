"""The dashboard's upload helpers (service/dashboard/static/upload.js) under Node: the model section a
form builds for each format, and the spec text with its `model:` / `dataset:` entry replaced (YAML in
flow or block style, or JSON) so that the result still validates. Skipped without `node`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.specs import parse_spec

REPO = Path(__file__).resolve().parents[2]
UPLOAD_JS = REPO / "service" / "dashboard" / "static" / "upload.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

EXAMPLE = """name: digits-tiny
dataset: {name: digits, train_size: 200, test_size: 100, seed: 0}
model:
  architecture: mlp   # a block mapping with a comment
  params: {hidden: [16]}

training: {epochs: 2}
regularizers:
  - {name: erm, kind: none}
"""


def run(script: str) -> Any:
    code = (f"import * as up from {json.dumps(UPLOAD_JS.as_uri())};\n"
            f"console.log(JSON.stringify(await (async () => {{ {script} }})()));")
    done = subprocess.run([str(NODE), "--input-type=module", "-e", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_model_sections_per_format() -> None:
    fields = {"architecture": "mlp", "params": "", "name": "", "inputShape": "8x8x1", "numClasses": "10",
              "layout": "nhwc", "inputRange": "0, 255", "mean": "127.5", "std": "64", "outputs": "logits"}
    sections = run(f"const f = {json.dumps(fields)}; return ['registry', 'onnx'].map((format) => "
                   "up.modelSection({...f, format}));")
    assert sections[0] == {"architecture": "mlp"}
    assert sections[1] == {"format": "onnx", "input_shape": [8, 8, 1], "num_classes": 10, "layout": "nhwc",
                           "input_range": [0, 255], "mean": [127.5], "std": [64], "outputs": "logits"}
    errors = run(f"const f = {json.dumps(fields)}; return [{{...f, format: 'timm'}}, {{...f, format: 'onnx', "
                 "inputShape: '1.5, 8'}, {...f, format: 'onnx', inputRange: '255'}].map((x) => { try { "
                 "up.modelSection(x); return null; } catch (e) { return e.message; } });")
    assert [e.split(":")[0] for e in errors] == ["Name", "Input shape", "Input range"]


@pytest.mark.parametrize("text", [EXAMPLE, json.dumps(yaml.safe_load(EXAMPLE), indent=2)])
def test_set_section_replaces_the_entry_and_the_spec_still_validates(text: str) -> None:
    model = {"format": "onnx", "input_shape": [1, 8, 8], "num_classes": 10, "mean": None}
    dataset = {"name": "upload", "id": "0f6c2f57-8c1e-4a43-9a55-2f1b8a3d0c11"}
    out = run(f"let t = {json.dumps(text)}; t = up.setSection(t, 'model', {json.dumps(model)}).text; "
              f"return up.setSection(t, 'dataset', {json.dumps(dataset)});")
    spec = parse_spec(yaml.safe_load(out["text"]))
    section = spec.model.model_dump(mode="json")
    assert section["format"] == "onnx" and section["input_shape"] == [1, 8, 8] and section["mean"] is None
    assert spec.dataset.model_dump(mode="json") == {**dataset, "train_size": None, "test_size": None, "seed": 0}
    assert spec.training.epochs == 2 and [r.name for r in spec.regularizers] == ["erm"]  # the rest untouched
    assert out["text"].splitlines()[out["line"] - 1].lstrip().startswith(("dataset", '"dataset"'))
