"""Why a model robustlab did not train scores near chance: probe the common input conventions.

A user's model that expects pixels in [0, 255], NHWC images, ImageNet mean/std or [-1, 1] inputs,
evaluated without declaring it, classifies almost nothing correctly: its report would blame the
training (which robustlab never did) or the attacks. `probe_conventions` runs the model on a few
samples under each common convention (and the pairs of them) and names the one that gives a high
clean accuracy, with the lines to put in the spec's model section. A model whose outputs look like
probabilities while the section says logits is named too: its argmax is right, but the attacks'
cross-entropy on probabilities is flat, which looks like gradient masking.

Pure computation: a module, tensors and a model section in, a `ConventionProbe` out.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from core.reports import Check, RunReport
from core.specs.model import is_user_model
from models.sources.conventions import InputConventions, UserModel

PROBE_SAMPLES = 128  # enough to tell 10 % from 90 % at once; a forward pass each, no gradients
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
MNIST_MEAN, MNIST_STD = [0.1307], [0.3081]
CHECK_NAME = "input_conventions"


@dataclass(frozen=True)
class Candidate:
    """A model section changed by `changes` (spec fields and their values) and its clean accuracy."""

    what: str  # e.g. "input_range [0, 255]"
    changes: dict[str, Any]
    accuracy: float

    def spec_lines(self) -> list[str]:
        """The YAML lines to put in the spec's model section, e.g. `input_range: [0, 255]`."""
        return [f"{key}: {_yaml(value)}" for key, value in self.changes.items()]


@dataclass(frozen=True)
class ConventionProbe:
    samples: int
    chance: float
    declared_accuracy: float  # with the model section as declared
    candidates: list[Candidate] = field(default_factory=list)  # best first
    looks_like_probabilities: bool = False  # declared logits, but every row is a probability vector

    @property
    def near_chance(self) -> bool:
        return near_chance(self.declared_accuracy, self.chance)

    @property
    def best(self) -> Candidate | None:
        """The convention that fixes the model: high accuracy where the declared one is near chance."""
        if not self.candidates:
            return None
        top = self.candidates[0]
        high = self.chance + 0.5 * (1.0 - self.chance)  # half way from chance to perfect
        return top if top.accuracy >= high and top.accuracy >= self.declared_accuracy + 0.2 else None

    def message(self) -> str:
        """What the user reads: the accuracy, the likely cause, and the lines to add."""
        head = (f"clean accuracy {self.declared_accuracy:.3f} is near chance ({self.chance:.3f}) on a model robustlab "
                f"did not train: its input conventions are the likely cause, not training or the attacks.")
        best = self.best
        if best is not None:
            lines = "\n".join(f"    {line}" for line in best.spec_lines())
            return (f"{head} With {best.what} it classifies {best.accuracy:.0%} of {self.samples} samples "
                    f"correctly: add to the spec's model section\n{lines}")
        tried = ", ".join(dict.fromkeys(c.what for c in self.candidates)) or "none applicable"
        return (f"{head} None of the common conventions raised it on {self.samples} samples (tried: {tried}): "
                "check that the file is the model you meant, that num_classes and the label order match the "
                "dataset, and the model's own documentation for its input range, mean/std and layout.")


def near_chance(accuracy: float, chance: float, margin: float = 0.1) -> bool:
    """The training_healthy rule: below chance + 10 % of the way to perfect."""
    return accuracy < chance + margin * (1.0 - chance)


def _yaml(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _variants(spec: UserModel) -> list[tuple[str, dict[str, Any]]]:
    """The single conventions a model may expect and its section does not say, each as (what, changes)."""
    channels = spec.image_shape[0] if len(spec.image_shape) == 3 else None
    out: list[tuple[str, dict[str, Any]]] = []
    if tuple(spec.input_range) != (0.0, 255.0):
        out.append(("input_range [0, 255]", {"input_range": [0, 255]}))
    if tuple(spec.input_range) != (-1.0, 1.0):
        out.append(("input_range [-1, 1]", {"input_range": [-1, 1]}))
    if channels == 3 and spec.mean is None:
        out.append(("ImageNet mean/std", {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}))
    if channels == 1 and spec.mean is None:
        out.append(("MNIST mean/std", {"mean": MNIST_MEAN, "std": MNIST_STD}))
    if channels is not None:
        c, h, w = spec.image_shape
        if spec.layout == "nchw":
            out.append(("layout nhwc", {"layout": "nhwc", "input_shape": [h, w, c]}))
        else:
            out.append(("layout nchw", {"layout": "nchw", "input_shape": [c, h, w]}))
    return out


def _combined(a: tuple[str, dict[str, Any]], b: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    if set(a[1]) & set(b[1]):
        return None  # two input ranges, two layouts: not a pair
    changes = {**a[1], **b[1]}
    if "mean" in changes and changes.get("input_range") == [0, 255]:  # mean/std applied after scaling
        changes["mean"] = [round(m * 255, 3) for m in changes["mean"]]
        changes["std"] = [round(s * 255, 3) for s in changes["std"]]
    if "mean" in changes and changes.get("input_range") == [-1, 1]:
        return None  # a model normalized from [-1, 1] with ImageNet statistics is not a convention
    return f"{a[0]} and {b[0]}", changes


@torch.no_grad()
def _accuracy(net: nn.Module, spec: UserModel, x: Tensor, y: Tensor, device: torch.device) -> float | None:
    """Clean accuracy of `net` under the section `spec` (None when the model cannot take it)."""
    try:
        model = InputConventions(net, spec).to(device).eval()
        out = model(x.to(device))
    except Exception:  # a layout the graph cannot take: not this convention
        return None
    if not isinstance(out, Tensor) or out.dim() != 2 or not bool(torch.isfinite(out).all()):
        return None
    return float((out.argmax(1).cpu() == y).float().mean())


@torch.no_grad()
def _looks_like_probabilities(net: nn.Module, spec: UserModel, x: Tensor, device: torch.device) -> bool:
    if spec.outputs == "probabilities":
        return False
    try:
        wrapped = InputConventions(net, spec).to(device).eval()
        raw = wrapped.net(wrapped.model_input(x.to(device)))
    except Exception:  # any operator error: not a probability vector
        return False
    if not isinstance(raw, Tensor) or raw.dim() != 2 or raw.shape[1] < 2:
        return False
    sums = raw.sum(dim=1)
    return bool((raw >= -1e-4).all()) and bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-3))


def probe_conventions(net: nn.Module, spec: UserModel, x: Tensor, y: Tensor, *, num_classes: int | None = None,
                      device: str | torch.device = "cpu", samples: int = PROBE_SAMPLES) -> ConventionProbe:
    """Clean accuracy of `net` (the user's module, without robustlab's wrapper) under the declared section
    and under each common convention and each pair of them, on the first `samples` of (x, y).

    x: robustlab's N×C×H×W (or N×D) inputs in [0, 1]; y: class indices. Only conventions whose
    accuracy could be measured (the graph takes the layout) are listed, best first.
    """
    if isinstance(net, InputConventions):
        net = net.net
    device = torch.device(device)
    x, y = x[:samples].float(), y[:samples].long().cpu()
    chance = 1.0 / float(num_classes or spec.num_classes)
    declared = _accuracy(net, spec, x, y, device)
    singles = _variants(spec)
    pairs = [p for a, b in itertools.combinations(singles, 2) if (p := _combined(a, b)) is not None]
    candidates = []
    for what, changes in [*singles, *pairs]:
        try:
            variant = spec.model_validate({**spec.model_dump(), **changes})
        except ValueError:
            continue
        accuracy = _accuracy(net, variant, x, y, device)
        if accuracy is not None:
            candidates.append(Candidate(what, changes, accuracy))
    # Best first; of equal accuracy, the simpler change (fewer fields) first.
    candidates.sort(key=lambda c: (-c.accuracy, len(c.changes)))
    return ConventionProbe(samples=len(x), chance=chance, declared_accuracy=declared or 0.0, candidates=candidates,
                           looks_like_probabilities=_looks_like_probabilities(net, spec, x, device))


def convention_check(probe: ConventionProbe) -> Check:
    """The probe as a report check (`input_conventions`): fail with the cause and the lines to add."""
    messages = []
    if probe.near_chance:
        messages.append(probe.message())
    if probe.looks_like_probabilities:
        messages.append("the model's outputs are probabilities (non-negative, each row sums to 1) but the model "
                        "section says logits: the attacks' loss on them is nearly flat, which looks like gradient "
                        "masking; add to the spec's model section\n    outputs: probabilities")
    best = probe.best
    values: dict[str, Any] = {"samples": probe.samples, "declared_accuracy": probe.declared_accuracy,
                              "chance": probe.chance, "looks_like_probabilities": probe.looks_like_probabilities,
                              "candidates": [{"convention": c.what, "changes": c.changes, "accuracy": c.accuracy}
                                             for c in probe.candidates[:5]]}
    if best is not None:
        values["suggested"] = best.changes
    if not messages:
        return Check(name=CHECK_NAME, status="pass", values=values,
                     detail=f"clean accuracy {probe.declared_accuracy:.3f} with the declared input conventions")
    return Check(name=CHECK_NAME, status="fail", detail="\n".join(messages), values=values)


def diagnose_run(run: RunReport, model: nn.Module, section: Any, x: Tensor, y: Tensor, *,
                 num_classes: int | None = None, device: str | torch.device = "cpu") -> RunReport:
    """An evaluated user model's run with the `input_conventions` check added when its clean accuracy is
    near chance (or its outputs look like probabilities declared as logits); otherwise the run as it was.

    A model robustlab did not train cannot have failed robustlab's training: the training_healthy
    check's "training failed" is reworded to point at the conventions.
    """
    if not is_user_model(section):
        return run
    chance = 1.0 / float(num_classes or section.num_classes)
    if near_chance(run.clean_accuracy, chance):
        check = convention_check(probe_conventions(model, section, x, y, num_classes=num_classes, device=device))
    else:  # a working model: only the one forward pass that tells probabilities from logits
        net = model.net if isinstance(model, InputConventions) else model
        probabilities = _looks_like_probabilities(net, section, x[:PROBE_SAMPLES].float(), torch.device(device))
        check = convention_check(ConventionProbe(samples=min(len(x), PROBE_SAMPLES), chance=chance,
                                                 declared_accuracy=run.clean_accuracy,
                                                 looks_like_probabilities=probabilities))
    if check.status == "pass":
        return run
    checks = [c.model_copy(update={"detail": c.detail.replace(
        "training failed", "not a training failure: robustlab did not train this model, see input_conventions")})
        if c.name == "training_healthy" else c for c in run.checks]
    # not a failed training either: the run is judged (a gate exits 1 on its thresholds, not 2)
    return run.model_copy(update={"checks": [*checks, check], "trustworthy": False, "training_failed": False})
