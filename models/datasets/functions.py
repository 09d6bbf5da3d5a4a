"""Regression on classic optimisation test functions, with exact input gradients.

Sobolev training (Czarnecki et al., 2017, experiment 1) fits a network to a function's values AND
its derivatives, so the targets' gradients must be exact, not finite differences: each function
here comes with its analytic gradient, computed in float64 (a test checks it against autograd).

Model inputs are u ∈ [0, 1]^dim (the lab's input convention); the function sees
x = lo + (hi − lo)·u on its usual domain. Raw values span very different ranges (Rosenbrock reaches
thousands, Booth hundreds), so targets are standardised with FIXED per-(function, dim) constants:

    y = (f(x) − m) / s,   dy/du = f'(x) · (hi − lo) / s

where m and s are the mean and std of f over a reference sample of REFERENCE_SAMPLES points drawn
with the fixed seed REFERENCE_SEED (see `reference_stats`). They do not depend on the spec's seed
or sample size, so the same input always has the same target across datasets and runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from core.enums import Task
from core.specs.dataset import FunctionRegressionDataset
from models.datasets.base import DatasetBundle, select
from models.datasets.errors import DatasetError

log = logging.getLogger(__name__)

TRAIN_FRACTION = 0.7
REFERENCE_SEED = 20_170_523
REFERENCE_SAMPLES = 4096
Array = np.ndarray


def _styblinski_tang(x: Array) -> Array:
    return np.asarray(0.5 * (x**4 - 16.0 * x**2 + 5.0 * x).sum(axis=1))


def _styblinski_tang_grad(x: Array) -> Array:
    return 0.5 * (4.0 * x**3 - 32.0 * x + 5.0)


def _rosenbrock(x: Array) -> Array:
    a, b = x[:, :-1], x[:, 1:]
    return np.asarray((100.0 * (b - a**2) ** 2 + (1.0 - a) ** 2).sum(axis=1))


def _rosenbrock_grad(x: Array) -> Array:
    a, b = x[:, :-1], x[:, 1:]
    g = np.zeros_like(x)
    g[:, :-1] += -400.0 * a * (b - a**2) - 2.0 * (1.0 - a)  # terms where x_i is the "a"
    g[:, 1:] += 200.0 * (b - a**2)  # terms where x_i is the "b"
    return g


_ACKLEY_A, _ACKLEY_B, _ACKLEY_C = 20.0, 0.2, 2.0 * np.pi


def _ackley(x: Array) -> Array:
    r = np.sqrt((x**2).mean(axis=1))
    cosine = np.exp(np.cos(_ACKLEY_C * x).mean(axis=1))
    return np.asarray(-_ACKLEY_A * np.exp(-_ACKLEY_B * r) - cosine + _ACKLEY_A + np.e)


def _ackley_grad(x: Array) -> Array:
    d = x.shape[1]
    r = np.sqrt((x**2).mean(axis=1, keepdims=True))
    safe_r = np.where(r > 0.0, r, 1.0)  # at the origin the gradient of r is undefined: use 0
    radial = np.where(r > 0.0, _ACKLEY_A * _ACKLEY_B * np.exp(-_ACKLEY_B * r) * x / (d * safe_r), 0.0)
    cosine = np.exp(np.cos(_ACKLEY_C * x).mean(axis=1, keepdims=True))
    return np.asarray(radial + cosine * _ACKLEY_C * np.sin(_ACKLEY_C * x) / d)


def _rastrigin(x: Array) -> Array:
    return np.asarray(10.0 * x.shape[1] + (x**2 - 10.0 * np.cos(2.0 * np.pi * x)).sum(axis=1))


def _rastrigin_grad(x: Array) -> Array:
    return 2.0 * x + 20.0 * np.pi * np.sin(2.0 * np.pi * x)


def _beale_terms(x: Array) -> tuple[Array, Array, Array, Array, Array]:
    p, q = x[:, 0], x[:, 1]
    return p, q, 1.5 - p + p * q, 2.25 - p + p * q**2, 2.625 - p + p * q**3


def _beale(x: Array) -> Array:
    _, _, t1, t2, t3 = _beale_terms(x)
    return np.asarray(t1**2 + t2**2 + t3**2)


def _beale_grad(x: Array) -> Array:
    p, q, t1, t2, t3 = _beale_terms(x)
    dp = 2.0 * (t1 * (q - 1.0) + t2 * (q**2 - 1.0) + t3 * (q**3 - 1.0))
    dq = 2.0 * p * (t1 + 2.0 * q * t2 + 3.0 * q**2 * t3)
    return np.stack([dp, dq], axis=1)


def _booth(x: Array) -> Array:
    p, q = x[:, 0], x[:, 1]
    return np.asarray((p + 2.0 * q - 7.0) ** 2 + (2.0 * p + q - 5.0) ** 2)


def _booth_grad(x: Array) -> Array:
    p, q = x[:, 0], x[:, 1]
    e1, e2 = p + 2.0 * q - 7.0, 2.0 * p + q - 5.0
    return np.stack([2.0 * e1 + 4.0 * e2, 4.0 * e1 + 2.0 * e2], axis=1)


@dataclass(frozen=True)
class BenchmarkFunction:
    """A test function on its usual hypercube domain [lo, hi]^dim, with its exact gradient."""

    value: Callable[[Array], Array]  # N×dim float64 -> N
    grad: Callable[[Array], Array]  # N×dim float64 -> N×dim
    lo: float
    hi: float


# Domains as in the Virtual Library of Simulation Experiments (Surjanovic & Bingham); Rosenbrock
# uses the common restriction [-2.048, 2.048] (its wider [-5, 10] is mostly a flat-looking ramp).
FUNCTIONS: dict[str, BenchmarkFunction] = {
    "styblinski_tang": BenchmarkFunction(_styblinski_tang, _styblinski_tang_grad, -5.0, 5.0),
    "rosenbrock": BenchmarkFunction(_rosenbrock, _rosenbrock_grad, -2.048, 2.048),
    "ackley": BenchmarkFunction(_ackley, _ackley_grad, -32.768, 32.768),
    "rastrigin": BenchmarkFunction(_rastrigin, _rastrigin_grad, -5.12, 5.12),
    "beale": BenchmarkFunction(_beale, _beale_grad, -4.5, 4.5),
    "booth": BenchmarkFunction(_booth, _booth_grad, -10.0, 10.0),
}


@lru_cache(maxsize=64)
def reference_stats(function: str, dim: int) -> tuple[float, float]:
    """Fixed (mean, std) of the function over REFERENCE_SAMPLES points from REFERENCE_SEED."""
    fn = FUNCTIONS[function]
    u = np.random.default_rng(REFERENCE_SEED).random((REFERENCE_SAMPLES, dim))
    values = fn.value(fn.lo + (fn.hi - fn.lo) * u)
    std = float(values.std())
    return float(values.mean()), std if std > 0.0 else 1.0


def evaluate(function: str, u: Array) -> tuple[Array, Array]:
    """Standardised targets y (N×1) and their exact gradients dy/du (N×dim), float64."""
    fn = FUNCTIONS[function]
    mean, std = reference_stats(function, u.shape[1])
    x = fn.lo + (fn.hi - fn.lo) * u
    y = (fn.value(x) - mean) / std
    dydu = fn.grad(x) * ((fn.hi - fn.lo) / std)
    return y[:, None], dydu


def load_function_regression(spec: FunctionRegressionDataset) -> DatasetBundle:
    """Uniform seeded inputs, split 70/30, then train_size / test_size subsets (all seeded)."""
    if spec.function not in FUNCTIONS:
        raise DatasetError(f"unknown function {spec.function!r}: use one of {', '.join(FUNCTIONS)}")
    # Draw in float32 first, so the targets are exact for the inputs the model actually sees.
    u32 = np.random.default_rng(spec.seed).random((spec.n_samples, spec.dim), dtype=np.float32)
    y, dydu = evaluate(spec.function, u32.astype(np.float64))
    g = torch.Generator().manual_seed(spec.seed)
    perm = select(spec.n_samples, None, g)
    n_train = max(1, min(spec.n_samples - 1, round(TRAIN_FRACTION * spec.n_samples)))
    parts = perm[:n_train], perm[n_train:]
    try:
        train = parts[0][select(len(parts[0]), spec.train_size, g)]
        test = parts[1][select(len(parts[1]), spec.test_size, g)]
    except ValueError as error:
        raise DatasetError(
            f"{error} ({spec.n_samples} samples split {TRAIN_FRACTION:.0%} / "
            f"{1 - TRAIN_FRACTION:.0%}): raise n_samples or lower train_size / test_size"
        ) from error
    u_t = torch.from_numpy(u32)
    y_t = torch.from_numpy(y.astype(np.float32))
    d_t = torch.from_numpy(dydu.astype(np.float32))
    log.info("function %s (dim %d): %d train, %d test", spec.function, spec.dim, len(train), len(test))
    return DatasetBundle(
        name="function_regression", task=Task.REGRESSION,
        x_train=u_t[train].contiguous(), y_train=y_t[train], x_test=u_t[test].contiguous(),
        y_test=y_t[test], num_outputs=1, dydx_train=d_t[train], dydx_test=d_t[test],
    )
