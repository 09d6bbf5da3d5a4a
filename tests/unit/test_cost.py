"""The cost estimate of a spec (core.cost): the shipped examples pass the default limits, the
specs that exhausted workers do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.cost import estimate, over_limits
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
