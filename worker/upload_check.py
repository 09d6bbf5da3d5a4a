"""Check an upload in a process of its own: `python -m worker.upload_check model|dataset PATH ...`.

The API never imports torch (DESIGN §4), and an upload is untrusted: the safe loaders run here, in
a short-lived child process that the API starts with a memory and CPU-time limit and a clean
environment (service.upload_check). Nothing in a file is executed: safetensors and ONNX are plain
data, `.pt` goes through torch.load(weights_only=True) only, `.npz` through allow_pickle=False.

- model: a registry checkpoint (safetensors with robustlab metadata, or a `.pt` state_dict with
  --architecture/--input-shape/--num-outputs, re-saved with --out as self-describing safetensors),
  or a user format described by --model (the spec's model section: onnx, timm, torchvision). What
  the model costs (models.sources.measure: parameters as stored once loaded, FLOPs of one sample's
  forward and how they were obtained) is measured before anything heavy runs and refused past
  --max-parameters / --max-flops; then the model is loaded, wrapped in its input conventions and
  run forward, with an input gradient, on a few inputs of the declared shape, as an evaluate job will.
- dataset: an `.npz` whose declared array sizes are read from the archive before anything is
  decompressed (zip bombs, object arrays and oversized files are refused), then loaded and checked
  array by array (models.datasets.npz).

Prints one JSON line: {"ok": true, ...details} and exits 0, or {"ok": false, "error": "..."} and exits 1
(with "over_limit": {"field", "limit", "value"} when a limit refused it).
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.specs.model import MAX_CLASSES  # the largest label + 1 an uploaded dataset may have

if TYPE_CHECKING:
    from models.sources.measure import Cost


class OverLimit(Exception):
    """The upload measures over a tenant's limit (reported as 422 over_limits, naming the limit)."""

    def __init__(self, field: str, limit: int, value: int, message: str) -> None:
        super().__init__(message)
        self.field, self.limit, self.value = field, limit, value


@dataclass(frozen=True)
class Limits:
    max_parameters: int | None = None
    max_flops: int | None = None

    def check(self, parameters: int, flops: int | None, how: str) -> None:
        if self.max_parameters is not None and parameters > self.max_parameters:
            raise OverLimit("max_model_parameters", self.max_parameters, parameters,
                            f"the model holds {parameters:,} parameters once loaded, over this tenant's limit of "
                            f"{self.max_parameters:,} (MAX_MODEL_PARAMETERS): upload a smaller model")
        if self.max_flops is not None and flops is not None and flops > self.max_flops:
            source = "counted from its graph" if how == "graph" else "counted" if how == "counted" else \
                "estimated from a timed forward pass"
            raise OverLimit("max_forward_flops", self.max_flops, flops,
                            f"one sample's forward pass costs {flops:,} FLOPs ({source}), over this tenant's limit "
                            f"of {self.max_flops:,} (MAX_FORWARD_FLOPS): upload a cheaper model or smaller inputs")


def _measured(cost: Cost, flops: int | None, how: str, seconds: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"parameters": cost.parameters, "forward_flops": flops, "flops_source": how}
    if seconds is not None:
        out["forward_seconds"] = round(seconds, 6)
    return out


def check_registry(path: Path, architecture: str, params: dict[str, Any] | None, input_shape: list[int] | None,
                   num_outputs: int | None, out: Path | None, limits: Limits = Limits()) -> dict[str, Any]:
    from models.checkpoints import CheckpointError, load_model, read_metadata, save_checkpoint
    from models.sources.measure import module_flops, module_parameters, run_like_a_job

    meta = read_metadata(path) if path.suffix.lower() == ".safetensors" else {}
    if meta:
        if meta["architecture"] != architecture:
            raise CheckpointError(f"{path.name} holds a {meta['architecture']!r} model (its metadata says so), "
                                  f"not {architecture!r}: upload it with architecture={meta['architecture']}")
        model = load_model(path, architecture=architecture, params=params)  # disagreeing params are refused
        result = {"ok": True, "format": "registry", "architecture": architecture, "params": meta["params"],
                  "input_shape": meta["input_shape"], "num_outputs": meta["num_outputs"], "converted": False}
    else:
        # No metadata: the file is read weights-only first, so a pickle payload is refused before the
        # missing-arguments message could hide it.
        model = load_model(path, architecture=architecture, params=params if params is not None else {},
                           input_shape=input_shape, num_outputs=num_outputs)
        assert input_shape is not None and num_outputs is not None  # load_model refuses a file without them
        result = {"ok": True, "format": "registry", "architecture": architecture, "params": params or {},
                  "input_shape": input_shape, "num_outputs": num_outputs, "converted": out is not None}
    shape, classes = list(result["input_shape"]), int(result["num_outputs"])
    parameters = module_parameters(model)
    limits.check(parameters, None, "counted")
    flops = module_flops(model, shape, device="cpu")  # registry networks are small: one real sample
    limits.check(parameters, flops, "counted")
    try:
        run_like_a_job(model, shape, classes)
    except ValueError as exc:
        raise CheckpointError(f"{path.name}: {exc}") from None
    if out is not None and not meta:
        save_checkpoint(out, model, architecture=architecture, params=params or {}, input_shape=shape,
                        num_outputs=classes, spec_hash=None, epoch=None, extra={"uploaded_as": path.name})
    return result | {"parameters": parameters, "forward_flops": flops, "flops_source": "counted"}


def check_user_model(path: Path, section: dict[str, Any], max_bytes: int, limits: Limits = Limits()) -> dict[str, Any]:
    from pydantic import TypeAdapter, ValidationError

    from core.specs.model import UserModelSpec
    from models.sources import load_user_model
    from models.sources.errors import ModelSourceError
    from models.sources.measure import module_parameters, run_like_a_job, timed_flops

    try:
        spec = TypeAdapter(UserModelSpec).validate_python(section)
    except ValidationError as exc:
        raise ModelSourceError(f"the model section is invalid: {exc.errors()[0]['msg']}") from None
    cost = _cost_before_loading(path, spec, max_bytes)
    limits.check(cost.parameters, cost.forward_flops, cost.how)  # before anything is built for real
    model = load_user_model(path, spec, "cpu", max_bytes=max_bytes)
    parameters = max(cost.parameters, module_parameters(model.net))
    flops, seconds = cost.forward_flops, None
    if flops is None:  # the structure did not say: one timed forward (the CPU-time limit stops a bomb)
        flops, seconds = timed_flops(model, spec.image_shape)
    limits.check(parameters, flops, cost.how)
    try:
        run_like_a_job(model, spec.image_shape, spec.num_classes)
    except ValueError as exc:
        raise ModelSourceError(f"{path.name}: {exc}") from None
    return {"ok": True, "format": spec.format, "model": spec.model_dump(mode="json"), "converted": False,
            **_measured(cost, flops, cost.how, seconds) | {"parameters": parameters}}


def _cost_before_loading(path: Path, spec: Any, max_bytes: int) -> Cost:
    """Parameters and FLOPs from the ONNX graph, or from the named architecture on the meta device."""
    from models.sources.measure import Cost, module_cost, onnx_cost

    if spec.format == "onnx" and path.suffix.lower() == ".onnx":
        from models.sources.onnx_model import inspect_onnx

        return onnx_cost(inspect_onnx(path, max_bytes), spec.input_shape)
    if spec.format in ("timm", "torchvision") and path.suffix.lower() != ".onnx":
        from models.sources.named import build_named

        return module_cost(build_named(spec), spec.input_shape)
    return Cost(0, None, "timed")  # a mismatched file: load_user_model says what is wrong


def _declared_arrays(path: Path, max_bytes: int) -> dict[str, tuple[tuple[int, ...], int]]:
    """Shape and byte size of every array the .npz declares, read from headers only."""
    import numpy as np

    from models.datasets.errors import DatasetError

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise DatasetError(f"{path.name} is not an .npz archive (a zip of .npy arrays): "
                           "save it with np.savez(path, x_test=..., y_test=...)") from None
    arrays: dict[str, tuple[tuple[int, ...], int]] = {}
    total = 0
    with archive:
        for info in archive.infolist():
            total += info.file_size
            if total > max_bytes:
                raise DatasetError(f"{path.name} unpacks to more than {max_bytes:,} bytes (the dataset limit): "
                                   "upload fewer or smaller samples")
            name = info.filename.removesuffix(".npy")
            with archive.open(info) as member:
                try:
                    version = np.lib.format.read_magic(member)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(member)  # the header only: nothing is inflated past it
                except ValueError as exc:
                    raise DatasetError(f"array {name!r} in {path.name} has no valid .npy header ({exc})") from None
            if dtype.hasobject:
                raise DatasetError(f"array {name!r} in {path.name} holds Python objects (pickled): robustlab never "
                                   "unpickles data; save plain numeric arrays")
            size = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if size > info.file_size:
                raise DatasetError(f"array {name!r} in {path.name} declares {size:,} bytes {list(shape)} but holds "
                                   f"{info.file_size:,}: the file is damaged; save it again")
            arrays[name] = (tuple(shape), size)
    return arrays


def check_dataset(path: Path, max_bytes: int, max_samples: int, num_classes: int | None) -> dict[str, Any]:
    from core.specs.dataset import NpzDataset
    from models.datasets.errors import DatasetError
    from models.datasets.npz import load_npz_file

    declared = _declared_arrays(path, max_bytes)
    samples = sum(shape[0] for name, (shape, _) in declared.items() if name in ("x_train", "x_test") and shape)
    if samples > max_samples:
        raise DatasetError(f"{path.name} has {samples:,} samples, over the limit of {max_samples:,} "
                           "(ROBUSTLAB_MAX_DATASET_SAMPLES): upload a subset")
    bundle = load_npz_file(path, NpzDataset(name="npz", path=path), shown_as=path.name)
    classes = bundle.num_outputs
    if classes > MAX_CLASSES:
        raise DatasetError(f"{path.name} has labels up to {classes - 1:,}: at most {MAX_CLASSES:,} classes are "
                           f"accepted (labels 0..{MAX_CLASSES - 1:,})")
    if num_classes is not None:
        if classes > num_classes:
            raise DatasetError(f"{path.name} has labels up to {classes - 1}, out of range for num_classes "
                               f"{num_classes}: labels must be 0..{num_classes - 1}")
        classes = num_classes
    return {"ok": True, "train_samples": len(bundle.x_train), "test_samples": len(bundle.x_test),
            "sample_shape": list(bundle.x_test.shape[1:]), "num_classes": classes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.upload_check", description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["model", "dataset"])
    parser.add_argument("path", type=Path)
    parser.add_argument("--max-bytes", type=int, default=2 * 1024**3, help="limit of declared tensor / array bytes")
    parser.add_argument("--model", default=None, help="JSON: the spec's model section (onnx, timm, torchvision)")
    parser.add_argument("--architecture", default=None, help="registry architecture")
    parser.add_argument("--params", default=None, help="JSON object of architecture parameters")
    parser.add_argument("--input-shape", default=None, help="JSON list, e.g. [1, 8, 8] (files without metadata)")
    parser.add_argument("--num-outputs", type=int, default=None, help="number of classes (files without metadata)")
    parser.add_argument("--out", type=Path, default=None, help="re-save a file without metadata here (.safetensors)")
    parser.add_argument("--max-samples", type=int, default=1_000_000, help="datasets: most samples accepted")
    parser.add_argument("--num-classes", type=int, default=None, help="datasets: labels must be below this")
    parser.add_argument("--max-parameters", type=int, default=None, help="models: most parameters once loaded")
    parser.add_argument("--max-flops", type=int, default=None, help="models: most FLOPs of one sample's forward")
    args = parser.parse_args(argv)
    try:
        import torch

        from models.checkpoints import CheckpointError
        from models.datasets.errors import DatasetError
    except ImportError as exc:  # an installation problem, not the file's fault
        print(json.dumps({"ok": False, "error": f"cannot import the upload checker: {exc}"}))
        return 2
    torch.set_num_threads(1)
    limits = Limits(args.max_parameters, args.max_flops)
    try:
        if args.what == "dataset":
            result = check_dataset(args.path, args.max_bytes, args.max_samples, args.num_classes)
        elif args.model:
            result = check_user_model(args.path, json.loads(args.model), args.max_bytes, limits)
        else:
            params = json.loads(args.params) if args.params else None
            shape = json.loads(args.input_shape) if args.input_shape else None
            result = check_registry(args.path, args.architecture or "", params, shape, args.num_outputs, args.out,
                                    limits)
    except OverLimit as exc:
        print(json.dumps({"ok": False, "error": str(exc),
                          "over_limit": {"field": exc.field, "limit": exc.limit, "value": exc.value}}))
        return 1
    except (CheckpointError, DatasetError) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    except MemoryError:
        print(json.dumps({"ok": False, "error": f"{args.path.name} needs more memory to load than an upload may "
                          "use: it declares far more data than it holds (a compression bomb?) or is too large"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
