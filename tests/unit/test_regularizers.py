"""Every regularizer against an independent brute-force computation, in float64 on a tiny model.

Brute force = the full per-sample Jacobian / Hessian from torch.autograd.functional, sample by
sample, never the batched tricks the implementations use. Exact methods must agree to rounding;
estimators in the mean over many draws; finite differences within a tolerance at small h.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from torch.autograd.functional import hessian, jacobian

from core.enums import RegularizerKind, Task
from core.specs.regularizers import (
    AdversarialTraining,
    ConfidencePenalty,
    DataGradL1,
    DoubleBackprop,
    InputHessian,
    JacobianReg,
    MaxUp,
    NoRegularizer,
    Sobolev,
    SpectralReg,
)
from models.attacks.perturb import fgsm_linf, pgd_linf
from models.regularizers import REGULARIZERS, Batch, build_regularizer, per_sample_loss
from models.regularizers.augment import maxup_copies
from models.regularizers.hessian import (
    hessian_norm_estimate,
    hessian_rayleigh_quotient,
    input_hessian_top_eigenvalue,
)
from tests.unit.regularizer_fixtures import B, C, D, TinyNet, data, weights

CLS = Task.CLASSIFICATION


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def net() -> TinyNet:
    return TinyNet(*weights())


# ---- brute force, one sample at a time -------------------------------------------------------


def _sample_loss(model: TinyNet, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(xb[None]), yb[None])


def brute_loss_grads(model: TinyNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([jacobian(lambda v, b=b: _sample_loss(model, v, y[b]), x[b]) for b in range(len(x))])


def brute_jacobians(model: TinyNet, x: torch.Tensor, transform=lambda o: o) -> torch.Tensor:
    return torch.stack(
        [jacobian(lambda v: transform(model(v[None]))[0], x[b]) for b in range(len(x))]
    )  # B×C×D


def brute_hessians(model: TinyNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([hessian(lambda v, b=b: _sample_loss(model, v, y[b]), x[b]) for b in range(len(x))])


def penalty(spec, model, x, y, seed=0, teacher=None, task=CLS, dydx=None) -> torch.Tensor:
    reg = build_regularizer(spec, task, teacher)
    return reg.objective(model, Batch(x, y, dydx), gen(seed)).penalty


def mean_and_stderr(samples: list[torch.Tensor]) -> tuple[float, float]:
    s = torch.stack(samples)
    return float(s.mean()), float(s.std() / len(s) ** 0.5)


# ---- exact penalties -------------------------------------------------------------------------


def test_registry_is_complete() -> None:
    assert REGULARIZERS.missing() == []
    assert {k.value for k in REGULARIZERS} == {k.value for k in RegularizerKind}


def test_double_backprop_exact_equals_brute_force(net) -> None:
    x, y = data()
    expected = brute_loss_grads(net, x, y).pow(2).sum(dim=1).mean()
    got = penalty(DoubleBackprop(name="db", kind="double_backprop", weight=1.0), net, x, y)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=0)


def test_datagrad_l1_equals_brute_force(net) -> None:
    x, y = data()
    expected = brute_loss_grads(net, x, y).abs().sum(dim=1).mean()
    got = penalty(DataGradL1(name="dg", kind="datagrad_l1"), net, x, y)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("target", ["softmax", "logits"])
def test_jacobian_exact_equals_brute_force(net, target) -> None:
    x, y = data()
    transform = (lambda o: F.softmax(o, dim=1)) if target == "softmax" else (lambda o: o)
    expected = brute_jacobians(net, x, transform).pow(2).sum(dim=(1, 2)).mean()
    got = penalty(JacobianReg(name="j", kind="jacobian", target=target), net, x, y)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=0)


def test_confidence_penalty_equals_brute_force(net) -> None:
    x, y = data()
    p = F.softmax(net(x), dim=1)
    expected = (p * p.log()).sum(dim=1).mean()
    got = penalty(ConfidencePenalty(name="c", kind="confidence_penalty"), net, x, y)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=0)


def test_plain_training_has_no_penalty_and_mean_cross_entropy(net) -> None:
    x, y = data()
    reg = build_regularizer(NoRegularizer(name="erm", kind="none"), CLS)
    obj = reg.objective(net, Batch(x, y), gen())
    torch.testing.assert_close(obj.loss, F.cross_entropy(net(x), y))
    assert float(obj.penalty) == 0.0


# ---- estimators: unbiased in the mean --------------------------------------------------------


@pytest.mark.parametrize("target", ["softmax", "logits"])
def test_jacobian_projections_are_unbiased(net, target) -> None:
    x, y = data()
    transform = (lambda o: F.softmax(o, dim=1)) if target == "softmax" else (lambda o: o)
    exact = float(brute_jacobians(net, x, transform).pow(2).sum(dim=(1, 2)).mean())
    spec = JacobianReg(name="j", kind="jacobian", target=target, projections=1)
    mean, stderr = mean_and_stderr([penalty(spec, net, x, y, seed=s) for s in range(1500)])
    assert abs(mean - exact) < 4 * stderr + 1e-12, (mean, exact, stderr)


def test_spectral_is_unbiased_for_logit_jacobian_norm(net) -> None:
    x, y = data()
    exact = float(brute_jacobians(net, x).pow(2).sum(dim=(1, 2)).mean())
    spec = SpectralReg(name="s", kind="spectral")
    mean, stderr = mean_and_stderr([penalty(spec, net, x, y, seed=s) for s in range(1500)])
    assert abs(mean - exact) < 4 * stderr, (mean, exact, stderr)


def test_sobolev_is_unbiased_for_log_prob_jacobian_gap(net) -> None:
    x, y = data()
    teacher = TinyNet(*(w.detach() for w in weights(seed=7)))
    log_softmax = functools.partial(F.log_softmax, dim=1)
    gap = brute_jacobians(net, x, log_softmax) - brute_jacobians(teacher, x, log_softmax)
    exact = float(gap.pow(2).sum(dim=(1, 2)).mean() / C)  # E over unit v of ‖vᵀΔJ‖² = ‖ΔJ‖²_F / C
    spec = Sobolev(name="sob", kind="sobolev", teacher="erm", projections=1)
    mean, stderr = mean_and_stderr(
        [penalty(spec, net, x, y, seed=s, teacher=teacher) for s in range(1500)]
    )
    assert abs(mean - exact) < 4 * stderr, (mean, exact, stderr)


def test_sobolev_distills_teacher_probabilities(net) -> None:
    x, y = data()
    teacher = TinyNet(*(w.detach() for w in weights(seed=7)))
    spec = Sobolev(name="sob", kind="sobolev", teacher="erm", weight=0.0)
    obj = build_regularizer(spec, CLS, teacher).objective(net, Batch(x, y), gen())
    q = F.softmax(teacher(x), dim=1)
    torch.testing.assert_close(obj.loss, -(q * F.log_softmax(net(x), dim=1)).sum(1).mean())


def test_sobolev_regression_matches_exact_target_gradients() -> None:
    model = TinyNet(*weights(outputs=1))
    x, _ = data(outputs=1)
    y = torch.randn(B, 1, dtype=torch.float64, generator=gen(3))
    dydx = torch.randn(B, D, dtype=torch.float64, generator=gen(4))
    grads = brute_jacobians(model, x)[:, 0, :]  # B×D
    expected = (grads - dydx).pow(2).sum(dim=1).mean()
    spec = Sobolev(name="sob", kind="sobolev", teacher="dataset")
    got = penalty(spec, model, x, y, task=Task.REGRESSION, dydx=dydx)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=0)


# ---- Hessian ---------------------------------------------------------------------------------


def _brute_power_norm(
    hessians: torch.Tensor, start: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """‖H_b v_b‖ after `iterations` products from `start` (the last one included), and H_b v_b."""
    v = start / start.norm(dim=1, keepdim=True)
    for _ in range(iterations - 1):
        v = torch.einsum("bij,bj->bi", hessians, v)
        v = v / v.norm(dim=1, keepdim=True)
    hv = torch.einsum("bij,bj->bi", hessians, v)
    return hv.norm(dim=1), hv


@pytest.mark.parametrize("iterations", [1, 3])
def test_input_hessian_penalty_equals_brute_force_power_iteration(net, iterations) -> None:
    """Start at the input gradient, same number of products, explicit Hessian matrices: same ‖Hv‖."""
    x, y = data()
    hessians = brute_hessians(net, x, y)  # B×D×D
    expected, _ = _brute_power_norm(hessians, brute_loss_grads(net, x, y), iterations)
    spec = InputHessian(name="h", kind="input_hessian", weight=1.0, power_iterations=iterations)
    torch.testing.assert_close(penalty(spec, net, x, y), expected.mean(), rtol=1e-9, atol=0)


def test_input_hessian_carries_each_samples_direction_to_its_next_visit(net) -> None:
    """With sample indices, a second visit starts from ĉ·sign(ĉ·ĝ) + ĝ, ĉ = the first visit's H v."""
    x, y = data()
    hessians, grads = brute_hessians(net, x, y), brute_loss_grads(net, x, y)
    reg = build_regularizer(InputHessian(name="h", kind="input_hessian", weight=1.0), CLS)
    index = torch.tensor([5, 0, 9, 2])
    first = reg.objective(net, Batch(x, y, index=index), gen()).penalty
    first_expected, carried = _brute_power_norm(hessians, grads, 1)
    torch.testing.assert_close(first, first_expected.mean(), rtol=1e-9, atol=0)

    order = torch.tensor([2, 0, 3, 1])  # the same samples in another order, as the next epoch would bring them
    second = reg.objective(net, Batch(x[order], y[order], index=index[order]), gen()).penalty
    c = carried[order] / carried[order].norm(dim=1, keepdim=True)
    g = grads[order] / grads[order].norm(dim=1, keepdim=True)
    start = torch.where((c * g).sum(dim=1, keepdim=True) < 0, -c, c) + g
    second_expected, _ = _brute_power_norm(hessians[order], start, 1)
    torch.testing.assert_close(second, second_expected.mean(), rtol=1e-9, atol=0)
    assert not torch.allclose(second_expected, first_expected[order])  # the carried direction mattered


def test_power_iteration_finds_top_eigenvalue_within_one_percent(net) -> None:
    x, y = data()
    top = torch.linalg.eigvalsh(brute_hessians(net, x, y)).abs().max(dim=1).values
    estimate = input_hessian_top_eigenvalue(net, x, y, CLS, iterations=200, generator=gen())
    assert torch.all((estimate - top).abs() <= 0.01 * top), (estimate, top)


def test_cure_finite_difference_approaches_hessian_times_direction(net) -> None:
    x, y = data()
    h = 1e-5
    grads = brute_loss_grads(net, x, y)
    z = grads.sign() / grads.sign().norm(dim=1, keepdim=True)
    expected = torch.einsum("bij,bj->bi", brute_hessians(net, x, y), z).norm(dim=1).mean()
    spec = InputHessian(name="cure", kind="input_hessian", method="finite_difference", h=h)
    got = penalty(spec, net, x, y) / h
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=0)


# ---- finite-difference gradient norm ---------------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "norm"),
    [("l2", lambda g: g.norm(dim=1)), ("linf", lambda g: g.abs().sum(dim=1) / D**0.5)],
)
def test_double_backprop_finite_difference_approaches_gradient_norm(net, direction, norm) -> None:
    x, y = data()
    expected = norm(brute_loss_grads(net, x, y)).pow(2).mean()
    spec = DoubleBackprop(
        name="fd", kind="double_backprop", method="finite_difference", h=1e-6, direction=direction
    )
    torch.testing.assert_close(penalty(spec, net, x, y), expected, rtol=1e-4, atol=0)


@pytest.mark.parametrize("direction", ["l2", "linf"])
def test_carried_direction_is_the_gradient_the_previous_backward_measured(net, direction) -> None:
    """`gradient: carried`: the first visit measures g as the paper does; the step's own backward
    stores its direction (∂L/∂x_b = c_b g_b, oriented by c_b's sign) for the next visit, whose slope
    along it is then g_b·v_b at the weights of that visit (brute force, float64)."""
    x, y = data()
    spec = DoubleBackprop(name="fd", kind="double_backprop", method="finite_difference", h=1e-6, weight=80.0,
                          direction=direction, gradient="carried")
    reg = build_regularizer(spec, CLS)
    index = torch.tensor([3, 1, 4, 0])
    first = reg.objective(net, Batch(x, y, index=index), gen())
    assert first.probes == ()  # a first visit: nothing to carry from
    grads = brute_loss_grads(net, x, y)
    fresh = build_regularizer(spec.model_copy(update={"gradient": "fresh"}), CLS)
    torch.testing.assert_close(first.penalty, fresh.objective(net, Batch(x, y), gen()).penalty, rtol=0, atol=0)

    order = torch.tensor([2, 0, 3, 1])
    second = reg.objective(net, Batch(x[order], y[order], index=index[order]), gen())
    (probe,) = second.probes
    v = grads[order] / grads[order].norm(dim=1, keepdim=True)
    if direction == "linf":
        v = v.sign() / D**0.5
    expected = (grads[order] * v).sum(dim=1).pow(2).mean()
    torch.testing.assert_close(second.penalty, expected, rtol=1e-4, atol=0)
    weights_of_net = [net.w1, net.b1, net.w2, net.b2]
    torch.autograd.backward(second.loss, inputs=[*weights_of_net, probe])
    # the weights move; the backward of this step measures the gradient there, for the third visit
    before = grads.clone()
    with torch.no_grad():
        for w in weights_of_net:
            w.add_(0.3 * torch.randn(w.shape, generator=gen(7), dtype=w.dtype))
    third_grads = brute_loss_grads(net, x, y)
    assert not torch.allclose(third_grads, before, atol=1e-3)
    objective = reg.objective(net, Batch(x, y, index=index), gen())
    torch.autograd.backward(objective.loss, inputs=[*weights_of_net, *objective.probes])
    stored = reg.carried.store.directions[index].flatten(1)
    assert torch.allclose(stored, third_grads / third_grads.norm(dim=1, keepdim=True), atol=1e-6)
    assert (1 - 2 * 80.0 * objective.penalty.sqrt() / 1e-6) < 0  # c_b < 0 here: the sign was needed


def test_carried_direction_needs_the_probes_in_the_backward(net) -> None:
    x, y = data()
    spec = DoubleBackprop(name="fd", kind="double_backprop", method="finite_difference", gradient="carried")
    reg = build_regularizer(spec, CLS)
    batch = Batch(x, y, index=torch.arange(len(x)))
    weights_of_net = [net.w1, net.b1, net.w2, net.b2]
    reg.objective(net, batch, gen()).loss.backward(inputs=weights_of_net)  # first visit: no probes
    objective = reg.objective(net, batch, gen())
    objective.loss.backward(inputs=weights_of_net)  # the probes left out
    with pytest.raises(RuntimeError, match="probes"):
        reg.objective(net, batch, gen())


def test_finite_difference_error_shrinks_with_h(net) -> None:
    x, y = data()
    exact = brute_loss_grads(net, x, y).pow(2).sum(dim=1).mean()
    errors = [
        float((penalty(DoubleBackprop(name="fd", kind="double_backprop", method="finite_difference",
                                      h=h), net, x, y) - exact).abs())
        for h in (1e-1, 1e-2, 1e-3)
    ]
    assert errors[0] > errors[1] > errors[2]


# ---- MaxUp and adversarial training ----------------------------------------------------------


def test_maxup_loss_and_gradient_are_those_of_the_worst_copy(net) -> None:
    x, y = data()
    spec = MaxUp(name="m", kind="maxup", copies=5, perturbation="uniform", eps=0.3)
    obj = build_regularizer(spec, CLS).objective(net, Batch(x, y), gen(2))
    (grad_w1,) = torch.autograd.grad(obj.loss, net.w1)

    copies = maxup_copies(x, spec, gen(2))  # the same draws
    brute = torch.stack(
        [torch.stack([_sample_loss(net, copies[i, b], y[b]) for i in range(5)]).max() for b in range(B)]
    ).mean()
    (brute_grad_w1,) = torch.autograd.grad(brute, net.w1)
    torch.testing.assert_close(obj.loss, brute, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad_w1, brute_grad_w1, rtol=1e-10, atol=1e-12)


def _float32_net() -> torch.nn.Module:
    w1, b1, w2, b2 = (w.detach().float() for w in weights())
    return TinyNet(w1, b1, w2, b2)


def test_fgsm_matches_torchattacks() -> None:
    model = _float32_net()
    x, y = data()
    x = x.float()
    ours = fgsm_linf(model, x, y, 0.1, functools.partial(per_sample_loss, task=CLS))
    reference = torchattacks.FGSM(model, eps=0.1)(x, y)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)


def test_pgd_matches_torchattacks_without_random_start() -> None:
    model = _float32_net()
    x, y = data()
    x = x.float()
    loss = functools.partial(per_sample_loss, task=CLS)
    ours = pgd_linf(model, x, y, 0.1, loss, steps=7, step_size=0.02, random_start=False)
    reference = torchattacks.PGD(model, eps=0.1, alpha=0.02, steps=7, random_start=False)(x, y)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_adversarial_training_trains_on_admissible_worse_inputs(net, attack) -> None:
    x, y = data()
    spec = AdversarialTraining(name="at", kind="adversarial_training", attack=attack, eps=0.1)
    reg = build_regularizer(spec, CLS)
    x_adv = reg.perturb(net, x, y, gen())
    assert (x_adv - x).abs().max() <= 0.1 + 1e-12
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    obj = reg.objective(net, Batch(x, y), gen())
    torch.testing.assert_close(obj.loss, F.cross_entropy(net(x_adv), y))
    assert float(obj.loss.detach()) > float(F.cross_entropy(net(x), y).detach())


# ---- gradients with respect to the parameters ------------------------------------------------

DIFFERENTIABLE_SPECS = [
    NoRegularizer(name="erm", kind="none"),
    DoubleBackprop(name="db", kind="double_backprop", weight=0.7),
    DataGradL1(name="dg", kind="datagrad_l1", weight=0.3),
    JacobianReg(name="j", kind="jacobian", weight=0.5, target="softmax"),
    JacobianReg(name="jp", kind="jacobian", weight=0.5, target="logits", projections=2),
    SpectralReg(name="s", kind="spectral", weight=0.2),
    ConfidencePenalty(name="c", kind="confidence_penalty", weight=0.4),
    Sobolev(name="sob", kind="sobolev", weight=0.5, teacher="erm", projections=2),
    InputHessian(name="cure", kind="input_hessian", method="finite_difference", h=0.05),
]


@pytest.mark.parametrize("spec", DIFFERENTIABLE_SPECS, ids=lambda s: s.name)
def test_objective_passes_gradcheck_in_parameters(spec) -> None:
    x, y = data()
    teacher = TinyNet(*(w.detach() for w in weights(seed=7)))
    reg = build_regularizer(spec, CLS, teacher)

    def loss(*w: torch.Tensor) -> torch.Tensor:
        return reg.objective(TinyNet(*w), Batch(x, y), gen(11)).loss  # same draws every call

    assert torch.autograd.gradcheck(loss, weights(), eps=1e-6, atol=1e-5)


def test_hessian_quotient_passes_gradcheck_for_a_fixed_direction() -> None:
    """With v fixed (no power iterations), vᵀHv is an ordinary function of the weights."""
    x, y = data()

    def quotient(*w: torch.Tensor) -> torch.Tensor:
        xl = x.clone().requires_grad_(True)
        losses = per_sample_loss(TinyNet(*w)(xl), y, CLS)
        (g,) = torch.autograd.grad(losses.sum(), xl, create_graph=True)
        return hessian_rayleigh_quotient(g, xl, 0, gen(3), create_graph=True)[0].abs().mean()

    assert torch.autograd.gradcheck(quotient, weights(), eps=1e-6, atol=1e-5)


def test_hessian_norm_estimate_passes_gradcheck_for_a_fixed_start() -> None:
    x, y = data()
    start = torch.randn(x.shape, generator=gen(4), dtype=x.dtype)

    def estimate(*w: torch.Tensor) -> torch.Tensor:
        xl = x.clone().requires_grad_(True)
        losses = per_sample_loss(TinyNet(*w)(xl), y, CLS)
        (g,) = torch.autograd.grad(losses.sum(), xl, create_graph=True)
        return hessian_norm_estimate(g, xl, 1, start, create_graph=True)[0].mean()

    assert torch.autograd.gradcheck(estimate, weights(), eps=1e-6, atol=1e-5)


def test_gradient_field_keeps_old_spec_hashes_and_needs_finite_difference() -> None:
    """`gradient` is left out of dumps at its default (spec hashes of earlier specs do not change),
    and `carried` with the exact method is an error that says what to do."""
    plain = DoubleBackprop(name="fd", kind="double_backprop", method="finite_difference")
    assert "gradient" not in plain.model_dump(mode="json")
    carried = DoubleBackprop(name="fd", kind="double_backprop", method="finite_difference", gradient="carried")
    assert carried.model_dump(mode="json")["gradient"] == "carried"
    with pytest.raises(ValueError, match="method: finite_difference"):
        DoubleBackprop(name="db", kind="double_backprop", gradient="carried")
