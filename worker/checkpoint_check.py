"""Check an uploaded checkpoint in a process of its own: `python -m worker.checkpoint_check PATH ...`.

The API never imports torch (DESIGN §4), and an upload is untrusted: the safe loader
(models.checkpoints: safetensors, or `.pt` through torch.load(weights_only=True) only) runs here,
in a short-lived child process. It rebuilds the registry model and checks keys, shapes, dtypes and
finiteness. A file without robustlab metadata (a `.pt` state_dict) needs --input-shape and
--num-outputs, and with --out it is re-saved as a self-describing safetensors file, which is what
the service stores and evaluate jobs load.

Prints one JSON line: {"ok": true, "architecture", "params", "input_shape", "num_outputs",
"converted"} and exits 0, or {"ok": false, "error": "..."} and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def check(path: Path, architecture: str, params: dict[str, Any] | None, input_shape: list[int] | None,
          num_outputs: int | None, out: Path | None) -> dict[str, Any]:
    import torch

    from models.checkpoints import CheckpointError, load_model, read_metadata, save_checkpoint

    torch.set_num_threads(1)
    meta = read_metadata(path) if path.suffix.lower() == ".safetensors" else {}
    if meta:
        if meta["architecture"] != architecture:
            raise CheckpointError(f"{path.name} holds a {meta['architecture']!r} model (its metadata says so), "
                                  f"not {architecture!r}: upload it with architecture={meta['architecture']}")
        load_model(path, architecture=architecture, params=params)  # disagreeing params are refused
        return {"ok": True, "architecture": architecture, "params": meta["params"],
                "input_shape": meta["input_shape"], "num_outputs": meta["num_outputs"], "converted": False}
    # No metadata: the file is read weights-only first, so a pickle payload is refused before the
    # missing-arguments message could hide it.
    model = load_model(path, architecture=architecture, params=params if params is not None else {},
                       input_shape=input_shape, num_outputs=num_outputs)
    assert input_shape is not None and num_outputs is not None  # load_model refuses a file without them
    if out is not None:
        save_checkpoint(out, model, architecture=architecture, params=params or {}, input_shape=input_shape,
                        num_outputs=num_outputs, spec_hash=None, epoch=None, extra={"uploaded_as": path.name})
    return {"ok": True, "architecture": architecture, "params": params or {}, "input_shape": input_shape,
            "num_outputs": num_outputs, "converted": out is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.checkpoint_check", description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--architecture", required=True)
    parser.add_argument("--params", default=None, help="JSON object of architecture parameters")
    parser.add_argument("--input-shape", default=None, help="JSON list, e.g. [1, 8, 8] (files without metadata)")
    parser.add_argument("--num-outputs", type=int, default=None, help="number of classes (files without metadata)")
    parser.add_argument("--out", type=Path, default=None, help="re-save a file without metadata here (.safetensors)")
    args = parser.parse_args(argv)
    try:
        from models.checkpoints import CheckpointError
    except ImportError as exc:  # an installation problem, not the file's fault
        print(json.dumps({"ok": False, "error": f"cannot import the checkpoint loader: {exc}"}))
        return 2
    try:
        params = json.loads(args.params) if args.params else None
        shape = json.loads(args.input_shape) if args.input_shape else None
        result = check(args.path, args.architecture, params, shape, args.num_outputs, args.out)
    except CheckpointError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
