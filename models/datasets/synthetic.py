"""Seeded synthetic classification sets (scikit-learn generators), inputs scaled into [0, 1].

Small, fast and fully controlled: the place to see a regularizer's effect on a decision boundary
before spending time on images. Attacks assume inputs live in [0, 1], so the features are
min-max scaled with the TRAINING part's range (the test part never informs the scaling, as it
would not in practice) and then clipped, since test points may fall slightly outside that range.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from sklearn.datasets import make_blobs, make_circles, make_classification, make_moons

from core.enums import Task
from core.specs.dataset import SyntheticDataset
from models.datasets.base import DatasetBundle, select
from models.datasets.errors import DatasetError

log = logging.getLogger(__name__)

TRAIN_FRACTION = 0.7
MAX_ELEMENTS = 100_000_000  # n_samples × n_features: ~800 MB in float64 while generating
BLOB_SCALE = 10.0  # make_blobs draws centres in [-10, 10]: noise is relative to that half-width


def generate(spec: SyntheticDataset) -> tuple[np.ndarray, np.ndarray]:
    """Raw features (float64, N×D) and labels (int64) of the spec's generator, seeded by spec.seed.

    noise means, per generator: moons/circles the Gaussian std added to the points (their native
    parameter); blobs the cluster std as a fraction of the centre box half-width
    (cluster_std = 10 × noise); classification the fraction of labels flipped (capped at 0.5).
    """
    n, d, k, seed = spec.n_samples, spec.n_features, spec.n_classes, spec.seed
    if n * d > MAX_ELEMENTS:
        raise DatasetError(
            f"n_samples × n_features = {n * d} exceeds {MAX_ELEMENTS}: lower one of them"
        )
    if spec.generator == "moons":
        x, y = make_moons(n_samples=n, noise=spec.noise, random_state=seed)
    elif spec.generator == "circles":
        x, y = make_circles(n_samples=n, noise=spec.noise, factor=0.5, random_state=seed)
    elif spec.generator == "blobs":
        x, y = make_blobs(
            n_samples=n, n_features=d, centers=k, cluster_std=BLOB_SCALE * spec.noise,
            random_state=seed,
        )
    else:
        informative = max(2, math.ceil(math.log2(k)) + 1)
        if informative > d:
            raise DatasetError(
                f"generator 'classification' with {k} classes needs n_features ≥ {informative} "
                "(informative features to separate the classes): raise n_features or lower n_classes"
            )
        x, y = make_classification(
            n_samples=n, n_features=d, n_informative=informative, n_redundant=0,
            n_classes=k, n_clusters_per_class=1, flip_y=min(spec.noise, 0.5), random_state=seed,
        )
    return x, y.astype(np.int64)


def scale_unit(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Min-max scale every array with the training array's per-feature range, clip to [0, 1].

    A constant feature (zero range) maps to 0 rather than dividing by zero.
    """
    lo, hi = train.min(axis=0), train.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return [np.clip((a - lo) / span, 0.0, 1.0).astype(np.float32) for a in (train, *others)]


def load_synthetic(spec: SyntheticDataset) -> DatasetBundle:
    """A seeded 70/30 split of the generated points, scaled, then train_size / test_size subsets."""
    x, y = generate(spec)
    g = torch.Generator().manual_seed(spec.seed)
    perm = select(len(x), None, g).numpy()
    n_train = round(TRAIN_FRACTION * len(x))
    tr, te = perm[:n_train], perm[n_train:]
    x_tr, x_te = scale_unit(x[tr], x[te])
    try:
        train = select(len(tr), spec.train_size, g)
        test = select(len(te), spec.test_size, g)
    except ValueError as error:
        raise DatasetError(
            f"{error} ({spec.n_samples} samples split {TRAIN_FRACTION:.0%} train / "
            f"{1 - TRAIN_FRACTION:.0%} test): raise n_samples or lower train_size / test_size"
        ) from error
    num_outputs = 2 if spec.generator in ("moons", "circles") else spec.n_classes
    log.info("synthetic %s: %d train, %d test, %d features", spec.generator, len(train), len(test),
             x.shape[1])
    return DatasetBundle(
        name="synthetic", task=Task.CLASSIFICATION,
        x_train=torch.from_numpy(x_tr)[train].contiguous(), y_train=torch.from_numpy(y[tr])[train],
        x_test=torch.from_numpy(x_te)[test].contiguous(), y_test=torch.from_numpy(y[te])[test],
        num_outputs=num_outputs,
    )
