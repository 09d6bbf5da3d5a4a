"""robustlab: an adversarial-robustness lab. The `robustlab` console script lives in robustlab.cli.

`robustlab.evaluate(model, x, y, ...)` evaluates an in-memory torch module (robustlab.notebook); it
is imported on first use, so `import robustlab` itself stays free of torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate"]

if TYPE_CHECKING:
    from robustlab.notebook import evaluate


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from robustlab.notebook import evaluate

        return evaluate
    raise AttributeError(f"module 'robustlab' has no attribute {name!r}")
