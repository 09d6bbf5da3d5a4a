"""The cost estimate of a spec (core.cost): the shipped examples pass the default limits, the
specs that exhausted workers do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.cost import UploadedData, UploadedModel, estimate, over_limits
from core.settings import Settings
from core.specs import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
LIMITS = Settings(redis_url=None).limits_for("anyone")


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_fits_the_default_limits(path: Path) -> None:
    assert over_limits(estimate(load_spec(path)), LIMITS) == []


def _spec(**changes: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "name": "x", "dataset": {"name": "digits"}, "model": {"architecture": "mlp", "params": {"hidden": [16]}},
        "regularizers": [{"name": "erm", "kind": "none"}],
    }
    return spec | changes


@pytest.mark.parametrize(("changes", "figure"), [
    ({"model": {"architecture": "mlp", "params": {"hidden": [65536, 65536]}}}, "parameters"),
    ({"dataset": {"name": "cifar10"}, "model": {"architecture": "resnet18", "params": {"width": 1024}}},
     "parameters"),
    ({"dataset": {"name": "function_regression", "dim": 1000, "n_samples": 1_000_000}}, "dataset_bytes"),
    ({"evaluation": {"attacks": [{"kind": "pgd", "norm": "linf", "eps": [0.1], "steps": 10_000, "restarts": 100}]}},
     "attack_steps_per_radius"),
])
def test_the_specs_that_exhausted_workers_are_over_a_limit(changes: dict[str, object], figure: str) -> None:
    problems = over_limits(estimate(parse_spec(_spec(**changes))), LIMITS)
    assert any(f"estimated {figure.replace('_', ' ')}" in message for _, message in problems), problems


def test_a_tenant_override_applies_to_that_tenant_only() -> None:
    settings = Settings(redis_url=None, tenant_limits='{"big": {"max_job_parameters": 10000000000}}')  # type: ignore[arg-type]
    assert settings.limits_for("big")["max_job_parameters"] == 10**10
    assert settings.limits_for("small")["max_job_parameters"] == settings.max_job_parameters


UPLOAD_ID = "5d0c7a8e-8f7a-4d2c-9c52-2b8f0b1d6a10"


def test_an_uploaded_dataset_counts_like_a_built_in_one() -> None:
    """Issue 21: an mlp of hidden [2048] on 65,536 features was refused on synthetic data and accepted on
    an uploaded .npz of the same width (it wrote a 537 MB checkpoint). Both are refused now."""
    model = {"architecture": "mlp", "params": {"hidden": [2048]}}
    built_in = parse_spec(_spec(model=model, dataset={"name": "synthetic", "n_features": 65536, "n_samples": 1000}))
    uploaded = parse_spec(_spec(model=model, dataset={"name": "upload", "id": UPLOAD_ID}))
    facts = UploadedData(sample_shape=[65536], num_classes=10, train_samples=800, test_samples=200)
    for cost in (estimate(built_in), estimate(uploaded, dataset=facts)):
        problems = over_limits(cost, LIMITS)
        assert any(p == "spec.model.params" and "MAX_JOB_PARAMETERS" in m for p, m in problems), problems
    assert estimate(uploaded, dataset=facts).dataset_bytes == 4 * 65536 * 1000
    narrow = UploadedData(sample_shape=[1, 8, 8], num_classes=10, train_samples=800, test_samples=200)
    assert over_limits(estimate(uploaded, dataset=narrow), LIMITS) == []


def test_an_uploaded_model_costs_what_its_check_measured() -> None:
    spec = parse_spec(_spec(model={"format": "onnx", "input_shape": [1, 8, 8], "num_classes": 10}))
    small = estimate(spec, model=UploadedModel(parameters=50_000, forward_flops=2_000_000))
    assert (small.parameters, small.forward_flops) == (50_000, 2_000_000)
    assert over_limits(small, LIMITS) == []
    vit = estimate(spec, model=UploadedModel(parameters=303_000_000, forward_flops=120_000_000_000))
    problems = dict((m.split("(")[-1].split(")")[0], p) for p, m in over_limits(vit, LIMITS))
    assert {"MAX_MODEL_PARAMETERS", "MAX_FORWARD_FLOPS", "MAX_JOB_PARAMETERS"} <= set(problems), problems
    lowered = Settings(redis_url=None, tenant_limits='{"t": {"max_model_parameters": 1000}}')  # type: ignore[arg-type]
    assert any("MAX_MODEL_PARAMETERS" in m for _, m in over_limits(small, lowered.limits_for("t")))


def test_registry_models_have_a_forward_cost_too() -> None:
    wide = estimate(parse_spec(_spec(dataset={"name": "cifar10"},
                                     model={"architecture": "wide_resnet", "params": {"depth": 28}})))
    assert 5e9 < wide.forward_flops < 5e10  # WRN-28-10 on 32x32: ~10.5 GFLOPs
    assert estimate(parse_spec(_spec())).forward_flops == 2 * estimate(parse_spec(_spec())).parameters
