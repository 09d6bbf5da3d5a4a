"""`robustlab.evaluate(model, x, y)`: the whole robustness evaluation of an in-memory torch module.

What RobustBench's `benchmark()` is to its users, for a notebook: the same attacks, worst case,
validity checks and sensitivity numbers as `robustlab evaluate` and an evaluate job, on tensors you
already hold, returned as a `core.reports.Report` (write it to report.html/.md/.json with
`reports.files.write_report(report, Path("out"))`).

    import robustlab
    report = robustlab.evaluate(net, x_test, y_test, eps=[0.03, 0.06])
    report.runs[0].clean_accuracy, report.runs[0].worst_case

x is given as the model takes it (N×C×H×W, N×H×W×C with layout="nhwc", or N×D), with values in
[0, 1]: attacks and ε live there. A model that expects something else declares it, as a spec's
model section does: `input_range=(0, 255)`, `mean`/`std` (applied after scaling), `layout="nhwc"`,
`outputs="probabilities"`; the module is then wrapped in `models.sources.InputConventions`.
Imported lazily by `robustlab/__init__.py`, so `import robustlab` stays free of torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from core.enums import Task
from core.reports import Cost, Report, RunReport
from core.specs.evaluation import STANDARD_EPS, EvaluationSpec
from core.specs.model import OnnxModel
from models.datasets.base import DatasetBundle
from models.evaluation.compare import environment, overall_checks
from models.evaluation.evaluate import evaluate_model
from models.sources.conventions import InputConventions, check_outputs
from models.sources.probe import diagnose_run
from reports.statistics import summarize
from robustlab.threads import apply_threads

Layout = Literal["nchw", "nhwc"]


def _tensor(value: Any, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    try:
        return torch.from_numpy(np.ascontiguousarray(np.asarray(value)))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a numpy array or a torch tensor ({exc})") from None


def _inputs(x: Any, layout: Layout) -> Tensor:
    """x as robustlab's float32 N×C×H×W (or N×D) in [0, 1]."""
    t = _tensor(x, "x")
    if not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int64, torch.int32)):
        raise ValueError(f"x has dtype {t.dtype}: give float inputs in [0, 1]")
    t = t.float()
    if t.dim() not in (2, 4):
        raise ValueError(f"x has shape {list(t.shape)}: give N×C×H×W images (N×H×W×C with layout='nhwc') "
                         "or N×D vectors; add the channel axis to grayscale images (x[:, None])")
    if layout == "nhwc":
        if t.dim() != 4:
            raise ValueError(f"layout='nhwc' needs N×H×W×C images, got x of shape {list(t.shape)}")
        t = t.permute(0, 3, 1, 2)
    t = t.contiguous()
    if len(t) == 0:
        raise ValueError("x holds no samples")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("x contains NaN or infinite values")
    low, high = float(t.min()), float(t.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"x has values in [{low:g}, {high:g}], but attacks and eps live in [0, 1]: scale x to "
                         "[0, 1] (e.g. x / 255) and declare what the model expects with input_range=(0, 255) "
                         "and mean/std")
    return t


def _labels(y: Any, n: int) -> Tensor:
    t = _tensor(y, "y")
    if t.dim() == 2 and t.shape[1] > 1:
        raise ValueError(f"y has shape {list(t.shape)}: give class indices (N,), not one-hot rows "
                         "(use y.argmax(1))")
    t = t.reshape(-1)
    if t.is_floating_point():
        if not bool((t == t.round()).all()):
            raise ValueError("y holds non-integer values: give class indices")
    elif t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"y has dtype {t.dtype}: give integer class indices")
    t = t.long()
    if len(t) != n:
        raise ValueError(f"x has {n} samples but y has {len(t)} labels")
    if bool((t < 0).any()):
        raise ValueError(f"y has negative labels (minimum {int(t.min())}): give class indices 0..K-1")
    return t


def _attacks(attacks: Sequence[dict[str, Any]] | None, eps: float | Sequence[float] | None,
             norm: str) -> list[dict[str, Any]]:
    radii = None if eps is None else ([float(eps)] if isinstance(eps, int | float) else [float(e) for e in eps])
    if attacks is None:
        return [{"kind": "suite", "name": "standard", "norm": norm, "eps": radii or STANDARD_EPS[norm]}]
    out = []
    for attack in attacks:
        entry = dict(attack)
        if "eps" not in entry:
            if radii is None:
                raise ValueError(f"attack {entry} has no eps: give it one, or pass eps=[...]")
            entry["eps"] = radii
        entry.setdefault("norm", norm)
        out.append(entry)
    return out


def _device_of(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def evaluate(
    model: nn.Module,
    x: Any,
    y: Any,
    *,
    attacks: Sequence[dict[str, Any]] | None = None,
    eps: float | Sequence[float] | None = None,
    norm: Literal["linf", "l2"] = "linf",
    batch_size: int = 256,
    seed: int = 0,
    max_samples: int | None = None,
    input_range: tuple[float, float] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    layout: Layout = "nchw",
    outputs: Literal["logits", "probabilities"] = "logits",
    num_classes: int | None = None,
    name: str = "model",
    progress: bool | Callable[[str], None] | None = True,
    threads: int | None = None,
) -> Report:
    """Attack `model` on (x, y) and return the report (one run, kind "evaluate").

    - `attacks`: attack dicts as in a spec's `evaluation.attacks`, e.g.
      `[{"kind": "pgd", "eps": [0.03], "steps": 20}]`; an entry without eps takes `eps`. None: the
      standard suite (APGD-CE, targeted APGD-DLR, Square control) at `eps` (default L∞ 0.1, 0.2).
    - `input_range`, `mean`, `std`, `layout`, `outputs`: what the model expects and returns (see
      docs/user-models.md); x itself is always in [0, 1].
    - `num_classes`: default the model's output width (one forward pass).
    - `progress`: True (default) shows a tqdm progress bar (a widget in Jupyter, text elsewhere) with
      the current stage; False or None shows nothing; a callable is called with each stage's name
      (e.g. "pgd linf ε=[0.1]", "validity checks") instead.
    - `threads`: torch threads for this call (default: OMP_NUM_THREADS when set, else picked for the
      machine's cores, as the CLI does: robustlab/threads.py); torch's count is restored afterwards.
    The module runs on its own device, in eval mode; every submodule's training flag is restored afterwards.
    A clean accuracy near chance comes with the check `input_conventions`, which names the input
    convention (input_range, mean/std, layout) that would classify the samples correctly.
    """
    if layout not in ("nchw", "nhwc"):
        raise ValueError(f"layout {layout!r}: use 'nchw' or 'nhwc'")
    if outputs not in ("logits", "probabilities"):
        raise ValueError(f"outputs {outputs!r}: use 'logits' or 'probabilities'")
    inputs = _inputs(x, layout)
    labels = _labels(y, len(inputs))
    evaluation = EvaluationSpec.model_validate({"attacks": _attacks(attacks, eps, norm), "batch_size": batch_size,
                                                "seed": seed, "max_samples": max_samples})
    device = _device_of(model)
    modes = [(module, module.training) for module in model.modules()]
    before = torch.get_num_threads()
    apply_threads(threads)
    bar = _ProgressBar(evaluation, name) if progress is True else None
    finished = False
    stage: Callable[[str], None] | None = bar.stage if bar is not None else (
        progress if callable(progress) else None)
    model.eval()
    try:
        with torch.no_grad():
            probe = model(_model_view(inputs[:2], layout).to(device))
        if not isinstance(probe, Tensor) or probe.dim() != 2:
            got = list(probe.shape) if isinstance(probe, Tensor) else type(probe).__name__
            raise ValueError(f"the model returned {got} for 2 samples: robustlab evaluates classifiers that "
                             "return N×K logits (or probabilities with outputs='probabilities')")
        classes = int(num_classes or probe.shape[1])
        if probe.shape[1] != classes:
            raise ValueError(f"num_classes is {classes} but the model returns {probe.shape[1]} outputs")
        if int(labels.max()) >= classes:
            raise ValueError(f"y has labels up to {int(labels.max())} but the model has {classes} classes")
        conventions = {"input_range": input_range, "mean": mean, "std": std}
        declared = {k: list(v) for k, v in conventions.items() if v is not None}
        wrapped = model
        if declared or layout != "nchw" or outputs != "logits":
            section = OnnxModel(format="onnx", input_shape=_model_shape(inputs, layout), num_classes=classes,
                                layout=layout, outputs=outputs, **declared)
            wrapped = InputConventions(model, section).to(device).eval()
            check_outputs(wrapped, section, device)
        data = DatasetBundle(name="in-memory", task=Task.CLASSIFICATION, x_train=inputs[:0], y_train=labels[:0],
                             x_test=inputs, y_test=labels, num_outputs=classes)
        result = evaluate_model(wrapped, data, evaluation, progress=stage)
        run = RunReport(regularizer=name, kind="model", seed=seed, clean_accuracy=result.clean_accuracy,
                        samples=result.samples, robust=result.robust, worst_case=result.worst_case,
                        sensitivity=result.sensitivity, cost=Cost(eval_seconds=result.seconds),
                        checks=result.checks, trustworthy=result.trustworthy)
        section = OnnxModel(format="onnx", input_shape=_model_shape(inputs, layout), num_classes=classes,
                            layout=layout, outputs=outputs, **declared)
        run = diagnose_run(run, model, section, inputs, labels, num_classes=classes, device=device)
        finished = True
    finally:
        for module, training in modes:  # each submodule as it was (a frozen BatchNorm stays frozen)
            module.training = training
        torch.set_num_threads(before)
        if bar is not None:
            bar.close(finished)

    digest = hashlib.sha256()
    for tensor in (inputs, labels):
        digest.update(tensor.numpy().tobytes())
    spec = {"name": name,
            "dataset": {"name": "in-memory", "samples": len(inputs), "sample_shape": list(inputs.shape[1:]),
                        "sha256": digest.hexdigest()},
            "model": {"format": "module", "class": type(model).__name__, "num_classes": classes, "layout": layout,
                      "outputs": outputs, **declared},
            "evaluation": evaluation.model_dump(mode="json")}
    spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return Report(kind="evaluate", spec=spec, spec_hash=spec_hash, environment=environment(str(device)),
                  baseline=None, runs=[run], summary=summarize([run], None), checks=overall_checks([run]))


def _model_view(inputs: Tensor, layout: Layout) -> Tensor:
    """robustlab's N×C×H×W inputs back in the layout the model takes (for the probe forward pass)."""
    return inputs.permute(0, 2, 3, 1) if layout == "nhwc" else inputs


def _model_shape(inputs: Tensor, layout: Layout) -> list[int]:
    """One sample's shape as the model takes it (C×H×W, H×W×C with layout nhwc, or D)."""
    return list(inputs.shape[1:]) if layout == "nchw" or inputs.dim() != 4 else [*inputs.shape[2:], inputs.shape[1]]


class _ProgressBar:
    """A tqdm bar over the evaluation's stages (each attack, then the checks and sensitivity), the
    current stage as its description. The stage count is an estimate: the bar never passes its last
    step before the evaluation ends."""

    def __init__(self, evaluation: EvaluationSpec, name: str) -> None:
        from tqdm.auto import tqdm

        self.total = len(evaluation.attacks) + 3  # attacks, input gradients, validity checks, sensitivity
        self.bar = tqdm(total=self.total, desc=f"evaluate {name}", unit="stage", leave=True)

        self.started = False

    def stage(self, text: str) -> None:
        """A stage starts: the one before it is done."""
        if self.started and self.bar.n < self.total - 1:
            self.bar.update(1)
        self.started = True
        self.bar.set_postfix_str(text, refresh=True)

    def close(self, finished: bool) -> None:
        if finished:
            self.bar.update(self.total - self.bar.n)
        self.bar.set_postfix_str("done" if finished else "stopped", refresh=True)
        self.bar.close()
