"""Make PyPI's torchvision importable beside a CPU-only torch build.

Imported at interpreter start by robustlab_torchvision_compat.pth, so it must stay cheap: it only
puts a finder on sys.meta_path. The first `import torchvision` triggers `_prepare`, which (with a
CPU-only torch whose process cannot load torchvision's compiled ops) declares the operator schemas
that torchvision registers fake kernels for unconditionally. Nothing happens with a CUDA torch or
a torchvision whose ops load. Detection ops then fail when called ("no kernel for CPU"); the
models, transforms and datasets work.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path
from types import ModuleType

# torchvision/_meta_registrations.py calls torch.library.register_fake on these without checking
# that its compiled extension loaded; every other registration there is guarded.
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keeps the torch.library.Library alive (dropping it would undo the definitions)


def _prepare() -> None:
    global _library
    try:
        import torch
    except ImportError:
        return
    if torch.version.cuda is not None or torch.version.hip is not None:
        return  # a GPU build of torch loads torchvision's ops itself
    spec = PathFinder.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    compiled = sorted(Path(spec.origin).parent.glob("_C*.so"))
    if compiled:
        try:
            torch.ops.load_library(str(compiled[0]))
            return  # a CPU torchvision: its ops are there
        except OSError:
            pass
    if hasattr(torch.ops.torchvision, "nms"):
        return
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)


class _TorchvisionFinder(MetaPathFinder):
    """Runs `_prepare` once, just before torchvision is first imported, then steps aside."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname == "torchvision":
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            with contextlib.suppress(Exception):  # never break the import; torchvision's own error will show
                _prepare()
        return None


if not any(isinstance(f, _TorchvisionFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _TorchvisionFinder())
