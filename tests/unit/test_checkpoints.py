"""Checkpoints: safetensors round trips, checked `.pt` state_dicts, and pickle payloads refused."""

from __future__ import annotations

import os
import pickle
import random
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from models.architectures import NormalizedModel, build_model
from models.checkpoints import CheckpointError, load_model, read_metadata, save_checkpoint

ARCH = "cnn_small"
PARAMS: dict[str, Any] = {"channels": [4, 8], "hidden": 16}
SHAPE = (3, 8, 8)
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
ARGS: dict[str, Any] = {"architecture": ARCH, "params": PARAMS, "input_shape": SHAPE, "num_outputs": 10}


@pytest.fixture
def model() -> NormalizedModel:
    torch.manual_seed(0)
    return build_model(ARCH, PARAMS, SHAPE, 10, MEAN, STD).eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, shape: tuple[int, ...] = SHAPE) -> None:
    x = torch.rand(4, *shape)
    assert torch.equal(a(x), b(x))


def _save(path: Path, model: NormalizedModel, **overrides: Any) -> Path:
    kwargs: dict[str, Any] = {**ARGS, "spec_hash": "abc123", "epoch": 3, "extra": {"acc": 0.5}}
    return save_checkpoint(path, model, **{**kwargs, **overrides})


def test_safetensors_round_trip(tmp_path: Path, model: NormalizedModel) -> None:
    path = _save(tmp_path / "sub" / "model.safetensors", model)
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # no temp file left
    loaded = load_model(path)
    assert not loaded.training and not any(m.training for m in loaded.modules())
    _same_outputs(model, loaded)
    meta = read_metadata(path)
    assert meta["architecture"] == ARCH and meta["input_shape"] == list(SHAPE)
    assert meta["params"] == PARAMS and meta["num_outputs"] == 10
    assert (meta["spec_hash"], meta["epoch"], meta["extra"]) == ("abc123", 3, {"acc": 0.5})
    assert meta["format_version"] == 1
    assert load_model(path, architecture=ARCH, num_outputs=10) is not None  # repeating metadata is fine
    with pytest.raises(CheckpointError, match="disagrees on num_outputs"):
        load_model(path, num_outputs=3)


def test_round_trip_keeps_batchnorm_buffers_and_tied_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    resnet = build_model("resnet18", {"width": 2}, (1, 8, 8), 2)
    resnet.train()(torch.rand(4, 1, 8, 8))  # move the running statistics off their defaults
    resnet.eval()
    path = _save(tmp_path / "r.safetensors", resnet, architecture="resnet18", params={"width": 2},
                 input_shape=(1, 8, 8), num_outputs=2)
    _same_outputs(resnet, load_model(path), (1, 8, 8))

    tied = build_model("mlp", {"hidden": [4]}, (4,), 4, [0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0]).eval()
    tied.net.out.weight = tied.net.hidden.fc1.weight  # shared storage: safetensors refuses it as is
    path = _save(tmp_path / "t.safetensors", tied, architecture="mlp", params={"hidden": [4]},
                 input_shape=(4,), num_outputs=4)
    _same_outputs(tied, load_model(path), (4,))  # also per-feature statistics of a vector input
    torch.save(tied.state_dict(), tmp_path / "t.pt")
    _same_outputs(tied, load_model(tmp_path / "t.pt", architecture="mlp", params={"hidden": [4]},
                                   input_shape=(4,), num_outputs=4), (4,))


def test_pt_state_dicts_full_and_bare(tmp_path: Path, model: NormalizedModel) -> None:
    torch.save(model.state_dict(), tmp_path / "full.pt")
    _same_outputs(model, load_model(tmp_path / "full.pt", **ARGS))

    torch.save(model.net.state_dict(), tmp_path / "bare.pth")
    _same_outputs(model, load_model(tmp_path / "bare.pth", **ARGS, mean=MEAN, std=STD))
    identity = load_model(tmp_path / "bare.pth", **ARGS)
    x = torch.rand(2, *SHAPE)
    assert torch.equal(identity(x), model.net(x))

    torch.save({"state_dict": model.state_dict(), "epoch": 7}, tmp_path / "wrapped.pt")
    _same_outputs(model, load_model(tmp_path / "wrapped.pt", **ARGS))


def test_pt_needs_the_architecture(tmp_path: Path, model: NormalizedModel) -> None:
    torch.save(model.state_dict(), tmp_path / "full.pt")
    with pytest.raises(CheckpointError, match="pass architecture, input_shape"):
        load_model(tmp_path / "full.pt", params={}, num_outputs=10)
    with pytest.raises(CheckpointError, match="do not pass mean/std"):
        load_model(tmp_path / "full.pt", **ARGS, mean=MEAN, std=STD)
    with pytest.raises(CheckpointError, match="unknown architecture 'vgg'"):
        load_model(tmp_path / "full.pt", **{**ARGS, "architecture": "vgg"})


def _edit(state: dict[str, torch.Tensor], change: str) -> dict[str, torch.Tensor]:
    state = dict(state)
    if change == "missing":
        del state["net.classifier.1.bias"]
    elif change == "unexpected":
        state["net.classifier.9.weight"] = torch.zeros(3)
    elif change == "shape":
        state["net.classifier.3.weight"] = torch.zeros(3, 16)
    elif change == "nan":
        state["net.features.0.weight"] = state["net.features.0.weight"].clone()
        state["net.features.0.weight"][0, 0, 0, 0] = float("nan")
    elif change == "int":
        state["net.features.0.bias"] = torch.zeros(4, dtype=torch.int64)
    elif change == "std":
        state["normalize.std"] = torch.zeros_like(state["normalize.std"])
    return state


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing", "missing keys net.classifier.1.bias"),
        ("unexpected", "unexpected keys net.classifier.9.weight"),
        ("shape", r"net.classifier.3.weight has shape \(3, 16\) but the model expects \(10, 16\)"),
        ("nan", "net.features.0.weight contains NaN or inf"),
        ("int", "net.features.0.bias has dtype torch.int64 but the model expects torch.float32"),
        ("std", "normalize.std has values <= 0"),
    ],
)
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_bad_weights_are_rejected_by_name(
    tmp_path: Path, model: NormalizedModel, change: str, message: str, suffix: str
) -> None:
    path = tmp_path / f"bad{suffix}"
    state = _edit(model.state_dict(), change)
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))  # no metadata: args needed
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(path, **ARGS)
    assert "\n" not in str(info.value)


def test_unreadable_files_are_rejected(tmp_path: Path, model: NormalizedModel) -> None:
    good = _save(tmp_path / "good.safetensors", model)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"not a readable safetensors file.*truncated"):
        load_model(truncated)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_metadata(truncated)

    garbage = random.Random(0).randbytes(4096)  # .pt: refused by the weights-only unpickler or unreadable
    for name, message in [("junk.safetensors", "not a readable safetensors"),
                          ("junk.pt", "NOT executed|not a readable PyTorch file")]:
        (tmp_path / name).write_bytes(garbage)
        with pytest.raises(CheckpointError, match=message):
            load_model(tmp_path / name, **ARGS)
    torch.save(model.state_dict(), tmp_path / "ok.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:-200])
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        load_model(tmp_path / "cut.pt", **ARGS)

    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"unknown checkpoint type '\.onnx'"):
        load_model(tmp_path / "model.onnx", **ARGS)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ("{not json", "bad JSON"),
        ('{"format_version": 99}', "format_version 99"),
        ('{"format_version": 1, "architecture": "vgg", "params": {}, "input_shape": [3, 8, 8], '
         '"num_outputs": 10}', "unknown architecture 'vgg'"),
        ('{"format_version": 1, "architecture": "cnn_small", "params": {"channels": []}, '
         '"input_shape": [3, 8, 8], "num_outputs": 10}', "cannot build cnn_small from its metadata"),
    ],
)
def test_bad_metadata_is_rejected(
    tmp_path: Path, model: NormalizedModel, metadata: str, message: str
) -> None:
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"robustlab": metadata})
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_save_refuses_what_it_could_not_load(tmp_path: Path, model: NormalizedModel) -> None:
    with pytest.raises(CheckpointError, match=r"save checkpoints as \.safetensors"):
        _save(tmp_path / "m.pt", model)
    with pytest.raises(CheckpointError, match="not JSON"):
        _save(tmp_path / "m.safetensors", model, extra={"loss": float("nan")})
    assert list(tmp_path.iterdir()) == []


# --- security: a pickle payload must be refused without running -------------------------------


class _OpenPayload:
    """Unpickling this calls open(sentinel, "w"), which creates the sentinel file."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.sentinel), "w"))


class _ShellPayload(_OpenPayload):
    """Unpickling this runs `touch sentinel` through os.system."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.sentinel))}",))


def test_payload_is_live(tmp_path: Path) -> None:
    """Control: the payload really does create the sentinel when unpickled the unsafe way."""
    sentinel = tmp_path / "control"
    pickle.loads(pickle.dumps(_OpenPayload(sentinel))).close()
    assert sentinel.exists()


@pytest.mark.parametrize("payload", [_OpenPayload, _ShellPayload])
@pytest.mark.parametrize("container", ["pickle", "torch_zip"])
def test_pickle_payload_is_rejected_and_not_run(
    tmp_path: Path, model: NormalizedModel, payload: type[_OpenPayload], container: str
) -> None:
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if container == "pickle":
        with path.open("wb") as f:
            pickle.dump(payload(sentinel), f)
    else:  # a valid-looking state_dict zip with one poisoned entry
        torch.save({**model.state_dict(), "net.features.0.extra": payload(sentinel)}, path)
    with pytest.raises(CheckpointError, match="NOT executed") as info:
        load_model(path, **ARGS)
    assert "code or Python objects beyond tensors" in str(info.value)
    assert not sentinel.exists()
