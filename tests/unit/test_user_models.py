"""Users' own models: ONNX (three input conventions), timm / torchvision by name, registry .pt state_dicts,
hostile files refused with a reason, wrong declarations caught by a forward pass."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from safetensors.torch import save_file

from core.specs import FGSMAttack, PGDAttack, parse_spec
from models.architectures import build_model
from models.attacks import run_attack
from models.evaluation.compare import evaluate_checkpoint
from models.sources import InputConventions, ModelSourceError, load_any_model, load_user_model
from tests.user_model_fixtures import (
    SECTIONS,
    digits,
    example_input,
    export_onnx,
    exported,
    spec_dict,
    trained_cnn,
)


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return digits()


@pytest.fixture(scope="module")
def cnn(data):  # type: ignore[no-untyped-def]
    return trained_cnn(data)


@pytest.mark.parametrize("variant", list(SECTIONS))
def test_onnx_model_is_attacked_exactly_like_the_torch_module(variant: str, cnn, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Sample for sample: the converted graph behind its declared conventions == the native module."""
    spec = parse_spec(spec_dict(SECTIONS[variant])).model
    native = exported(cnn, variant)
    path = export_onnx(native, example_input(variant), tmp_path / f"{variant}.onnx")
    converted = load_user_model(path, spec)
    reference = InputConventions(native, spec).eval()
    x, y = data.x_test[:60], data.y_test[:60]
    with torch.no_grad():
        assert torch.equal(converted(x).argmax(1), reference(x).argmax(1))
        assert (converted(x).argmax(1) == y).double().mean() > 0.7  # a trained classifier, not noise
    for attack in (FGSMAttack(kind="fgsm", eps=[0.05, 0.1]), PGDAttack(kind="pgd", eps=[0.05, 0.1], steps=10)):
        ours = run_attack(converted, x, y, attack, seed=5, batch_size=32)
        theirs = run_attack(reference, x, y, attack, seed=5, batch_size=32)
        assert torch.equal(ours.correct, theirs.correct), (variant, attack.kind)
    # and the declared conventions are really applied: the same file read as plain NCHW [0, 1] differs
    if variant == "nhwc255":
        with pytest.raises(ModelSourceError, match="forward pass"):
            load_user_model(path, parse_spec(spec_dict(SECTIONS["plain"])).model)


def test_evaluate_checkpoint_reads_an_onnx_file_with_its_model_section(cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = export_onnx(cnn, example_input("plain"), tmp_path / "cnn.onnx")
    report = evaluate_checkpoint(parse_spec(spec_dict(SECTIONS["plain"], max_samples=40)), path)
    run = report.runs[0]
    assert report.kind == "evaluate" and run.checkpoint == "cnn.onnx" and run.clean_accuracy > 0.7
    assert {w.eps for w in run.worst_case} == {0.05, 0.1}


def _declared(name: str, dims: list[int]) -> TensorProto:
    """A float tensor that declares `dims` and holds no data."""
    tensor = TensorProto()
    tensor.name, tensor.data_type = name, TensorProto.FLOAT
    tensor.dims.extend(dims)
    return tensor


def _graph_with(initializer: TensorProto, path: Path, op: str = "Add", domain: str = "") -> Path:
    node = helper.make_node(op, ["x", initializer.name], ["y"], domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [initializer])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def _onnx_spec(shape: list[int] = [4], classes: int = 4):  # type: ignore[no-untyped-def]  # noqa: B006
    return parse_spec(spec_dict({"format": "onnx", "input_shape": shape, "num_classes": classes})).model


def test_hostile_onnx_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    weights = helper.make_tensor("w", TensorProto.FLOAT, [1, 4], [0.0] * 4)
    external = _declared("w", [1, 4])
    external.data_location = TensorProto.EXTERNAL
    entry = external.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    with pytest.raises(ModelSourceError, match=r"external file \('../../etc/passwd'\).*not accepted"):
        load_user_model(_graph_with(external, tmp_path / "external.onnx"), _onnx_spec())
    huge = _declared("w", [50_000, 50_000])  # declares 10 GB, holds nothing
    with pytest.raises(ModelSourceError, match="declares 10,000,000,000 bytes"):
        load_user_model(_graph_with(huge, tmp_path / "huge.onnx"), _onnx_spec(), max_bytes=10**8)
    unsupported = _graph_with(weights, tmp_path / "unsupported.onnx", op="StringNormalizer")
    with pytest.raises(ModelSourceError, match=r"cannot be converted.*StringNormalizer"):
        load_user_model(unsupported, _onnx_spec())
    custom = _graph_with(weights, tmp_path / "custom.onnx", op="Evil", domain="com.example")
    with pytest.raises(ModelSourceError, match=r"custom-domain operators.*com\.example::Evil"):
        load_user_model(custom, _onnx_spec())
    whole = _graph_with(weights, tmp_path / "whole.onnx").read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ModelSourceError, match="not a readable ONNX file"):
        load_user_model(tmp_path / "truncated.onnx", _onnx_spec())


def test_wrong_declarations_are_caught_by_one_forward_pass(cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = export_onnx(cnn, example_input("plain"), tmp_path / "cnn.onnx")
    with pytest.raises(ModelSourceError, match=r"returned \[2, 10\].*num_classes is 7"):
        load_user_model(path, _onnx_spec([1, 8, 8], 7))
    with pytest.raises(ModelSourceError, match="outputs is 'probabilities' but the outputs are not"):
        load_user_model(path, parse_spec(spec_dict({**SECTIONS["plain"], "outputs": "probabilities"})).model)
    with pytest.raises(ModelSourceError, match=r"dataset's images are \[1, 8, 8\]"):
        load_any_model(path, _onnx_spec([3, 8, 8], 10), input_shape=(1, 8, 8), num_outputs=10)


@pytest.mark.parametrize("name", ["model.pt2", "model.ts", "model.pkl"])
def test_formats_that_execute_on_load_are_refused(name: str, tmp_path: Path) -> None:
    (tmp_path / name).write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ModelSourceError, match="refused"):
        load_user_model(tmp_path / name, _onnx_spec())


def test_timm_model_by_name_with_safetensors_weights(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import timm

    section = {"format": "timm", "name": "test_resnet", "input_shape": [1, 8, 8], "num_classes": 10}
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=10, in_chans=1).eval()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "timm.safetensors"))
    spec = parse_spec(spec_dict(section, max_samples=16))
    model = load_user_model(tmp_path / "timm.safetensors", spec.model)
    with torch.no_grad():
        assert torch.allclose(model(data.x_test[:8]), net(data.x_test[:8]), atol=1e-5)
    report = evaluate_checkpoint(spec, tmp_path / "timm.safetensors")
    assert report.runs[0].samples == 16
    wrong = parse_spec(spec_dict({**section, "name": "test_resnett"})).model
    with pytest.raises(ModelSourceError, match="no architecture 'test_resnett': did you mean test_resnet"):
        load_user_model(tmp_path / "timm.safetensors", wrong)
    other = parse_spec(spec_dict({**section, "name": "test_vit"})).model
    with pytest.raises(ModelSourceError, match="does not fit timm:test_vit"):
        load_user_model(tmp_path / "timm.safetensors", other)


def test_torchvision_model_by_name(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.get_model("resnet18", weights=None, num_classes=10).eval()
    save_file(dict(net.state_dict()), str(tmp_path / "r18.safetensors"))
    section = {"format": "torchvision", "name": "resnet18", "input_shape": [3, 16, 16], "num_classes": 10,
               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    model = load_user_model(tmp_path / "r18.safetensors", parse_spec(spec_dict(section)).model)
    x = torch.rand(4, 3, 16, 16)
    mean, std = torch.tensor(section["mean"]).view(3, 1, 1), torch.tensor(section["std"]).view(3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - mean) / std), atol=1e-5)
    gray = parse_spec(spec_dict({**section, "input_shape": [1, 16, 16], "mean": None, "std": None})).model
    with pytest.raises(ModelSourceError, match="takes 3-channel images"):
        load_user_model(tmp_path / "r18.safetensors", gray)


def test_registry_pt_state_dict_is_described_by_the_spec(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = build_model("mlp", {"hidden": [16]}, (1, 8, 8), 10).eval()
    torch.save(net.state_dict(), tmp_path / "mlp.pt")
    spec = parse_spec(spec_dict({"architecture": "mlp", "params": {"hidden": [16]}}, max_samples=20))
    model = load_any_model(tmp_path / "mlp.pt", spec.model, input_shape=(1, 8, 8), num_outputs=10)
    with torch.no_grad():
        assert torch.equal(model(data.x_test[:5]), net(data.x_test[:5]))
    assert evaluate_checkpoint(spec, tmp_path / "mlp.pt").runs[0].samples == 20


ISSUE_EXAMPLES = [
    "model: {format: onnx, input_shape: [1, 8, 8], num_classes: 10}\n",
    """model:
  format: onnx
  input_shape: [8, 8, 1]     # one sample, as the model takes it
  layout: nhwc               # the dataset's C×H×W images are transposed to this
  num_classes: 10
  input_range: [0, 255]      # what the model expects; attacks and ε stay in [0, 1]
  mean: [127.5]              # normalization the model expects, applied after scaling
  std: [64.0]
  outputs: logits            # or probabilities
""",
    "model: {format: timm, name: resnet18, input_shape: [3, 32, 32], num_classes: 10}\n",
]


@pytest.mark.parametrize("example", ISSUE_EXAMPLES)
def test_the_model_sections_of_the_issue_validate_exactly_as_written(example: str) -> None:
    import yaml

    spec = spec_dict(yaml.safe_load(example)["model"])
    model = parse_spec(spec).model
    assert model.format in ("onnx", "timm") and model.num_classes == 10
