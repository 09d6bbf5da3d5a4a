"""The attack unit test of Zimmermann et al. (NeurIPS 2022, "Increasing Confidence in Adversarial
Robustness Evaluations"): the binarization test, as the optional check `attack_unit_test`.

An evaluation cannot tell a robust model from a failed attack; this test builds a case where the
answer is known. Around each tested sample x (clean-correct, a subset of the audit samples):

1. a *boundary point* x_b inside the ε-ball (a keyed random direction, 0.99 ε from x, in [0, 1])
   and INNER_POINTS *inner points* (keyed random directions at radii up to ε) are drawn;
2. a binary classifier is built on the model's own features (the input of its last linear layer;
   the logits when it has none): a logistic readout trained to put x and every inner point in
   class 0 and x_b in class 1, its threshold then set midway between the highest inner score and
   x_b's. So the new classifier has the model's gradients, its non-differentiable parts, its
   masking, and an adversarial point inside the ball by construction;
3. the evaluation's attack (its suite, else its first attack) runs on that classifier at the
   attack's largest radius: the sample passes if the attack finds a misclassified point.

A sample whose readout cannot separate x_b from the inner points is infeasible and left out. The
check reports the pass rate over the feasible samples. Every draw is keyed by (seed, global sample
index), so the result does not depend on which other samples are tested.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.reports import Check, Status
from core.specs.evaluation import AttackSpec
from models.attacks import run_attack
from models.attacks.keyed import mix_seed

UNIT_SAMPLES = 20  # samples tested (the first clean-correct ones of the audit subset)
INNER_POINTS = 100
BOUNDARY_RADIUS = 0.99  # x_b lies this share of ε from x
READOUT_STEPS = 200
PASS_RATE, WARN_RATE = 0.9, 0.7  # pass rate at or above: pass; at or above the second: warn; else fail
_STREAM = 77_000


def _last_linear(model: nn.Module) -> nn.Linear | None:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    return last


class Features(nn.Module):
    """The model's features: the input of its last nn.Linear (forward hook), else its logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layer = _last_linear(model)

    def forward(self, x: Tensor) -> Tensor:
        if self.layer is None:
            out: Tensor = self.model(x).float().flatten(1)
            return out
        seen: list[Tensor] = []
        handle = self.layer.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return seen[-1].float().flatten(1)


class Binarized(nn.Module):
    """Two logits [0, w·f(x) + b]: class 1 (adversarial for label 0) where the readout score is positive."""

    def __init__(self, features: Features, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.features = features
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        score = self.features(x) @ self.weight + self.bias
        return torch.stack([torch.zeros_like(score), score], dim=1)


def _directions(x: Tensor, count: int, norm: str, generator: torch.Generator) -> Tensor:
    """count×… unit-norm directions (L2) or sign vectors (L∞) around x."""
    noise = torch.randn((count, *x.shape), generator=generator)
    if norm == "linf":
        signs: Tensor = noise.sign()
        return signs
    unit: Tensor = noise / noise.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * x.dim()))
    return unit


def binarized_classifier(model: nn.Module, x: Tensor, eps: float, norm: str, seed: int, key: int
                         ) -> tuple[Binarized, Tensor] | None:
    """The test case around one sample x (no batch dimension): (the binary classifier, x_b), or None
    when the readout cannot put x_b alone on the positive side."""
    generator = torch.Generator().manual_seed(mix_seed(seed, _STREAM, key))
    boundary = torch.clamp(x + BOUNDARY_RADIUS * eps * _directions(x, 1, norm, generator)[0], 0, 1)
    radii = eps * torch.rand(INNER_POINTS, generator=generator).view(-1, *([1] * x.dim()))
    inner = torch.clamp(x + radii * _directions(x, INNER_POINTS, norm, generator), 0, 1)
    features = Features(model)
    with torch.no_grad():
        f = features(torch.cat([x.unsqueeze(0), inner, boundary.unsqueeze(0)]))
    mean, scale = f.mean(dim=0), f.std(dim=0).clamp(min=1e-6)
    z = (f - mean) / scale
    labels = torch.zeros(len(z))
    labels[-1] = 1.0
    weight = torch.zeros(z.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.1)
    positive = torch.tensor(float(len(z) - 1))
    for _ in range(READOUT_STEPS):
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ weight + bias, labels, pos_weight=positive)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    with torch.no_grad():
        scores = z @ weight + bias
        negatives, positive_score = scores[:-1].max(), scores[-1]
        if not positive_score > negatives:
            return None
        # threshold midway: x_b is class 1, x and every inner point class 0
        b = bias - (negatives + positive_score) / 2
        w = weight / scale
        b = b - (mean / scale) @ weight
    binary = Binarized(features, w.detach(), b.detach()).eval()
    with torch.no_grad():
        check = binary(torch.stack([x, boundary])).argmax(dim=1)
    if check.tolist() != [0, 1]:
        return None
    return binary, boundary


def attack_unit_test(model: nn.Module, x: Tensor, y: Tensor, attacks: Sequence[AttackSpec], *, seed: int = 0,
                     samples: int = UNIT_SAMPLES, batch_size: int = 256, offset: int = 0) -> Check | None:
    """The binarization test on the first `samples` clean-correct samples of x (global indices from
    `offset`) with the evaluation's suite (else its first attack) at its largest radius."""
    if not attacks:
        return None
    spec = next((a for a in attacks if a.kind == "suite"), attacks[0])
    eps = max(spec.eps)
    single = spec.model_copy(update={"eps": [eps]})
    with torch.no_grad():
        correct = (model(x).argmax(dim=1) == y).nonzero().flatten()[:samples]
    passed = feasible = 0
    for position in correct.tolist():
        case = binarized_classifier(model, x[position], eps, spec.norm, seed, offset + position)
        if case is None:
            continue
        feasible += 1
        binary, _ = case
        result = run_attack(binary, x[position:position + 1], torch.zeros(1, dtype=torch.long), single, seed=seed,
                            batch_size=batch_size, offset=offset + position)
        passed += int(not bool(result.correct[0, 0]))
    if not feasible:
        return Check(name="attack_unit_test", status="warn",
                     detail=f"no feasible binarization test among {len(correct)} samples", values={"feasible": 0})
    rate = passed / feasible
    status: Status = "pass" if rate >= PASS_RATE else "warn" if rate >= WARN_RATE else "fail"
    return Check(
        name="attack_unit_test",
        status=status,
        detail=f"binarization test (Zimmermann et al. 2022): {spec.kind} {spec.norm} ε {eps:g} found the known "
        f"adversarial point's class on {passed}/{feasible} samples ({100 * rate:.0f} %; "
        f"{len(correct) - feasible} infeasible)",
        values={"passed": passed, "feasible": feasible, "tested": len(correct), "pass_rate": rate,
                "eps": eps, "norm": spec.norm, "attack": spec.kind},
    )
