"""scikit-learn's bundled UCI optical digits: real handwriting that needs no download.

1,797 images of 8×8 pixels with 17 grey levels (0..16), 10 classes. It is the dataset every test
and CI run can rely on, so its split is stratified (each class keeps its share in both parts,
which matters at this size) and fully determined by the spec's seed.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.datasets import load_digits as sklearn_load_digits
from sklearn.model_selection import train_test_split

from core.enums import Task
from core.specs.dataset import DigitsDataset
from models.datasets.base import DatasetBundle, select

log = logging.getLogger(__name__)

NUM_CLASSES = 10
MAX_GREY = 16.0


def load_digits(spec: DigitsDataset) -> DatasetBundle:
    """Digits as 1×8×8 float32 in [0, 1] with int64 labels, split by test_fraction, then subsampled.

    Two seeded steps: a stratified split (sklearn, random_state=seed) holding out test_fraction,
    then seeded train_size / test_size subsets of each part (torch.Generator seeded by seed).
    """
    raw = sklearn_load_digits()
    images = (raw.images.astype(np.float32) / MAX_GREY)[:, None]  # N×1×8×8
    labels = raw.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=spec.test_fraction, random_state=spec.seed, stratify=labels
    )
    g = torch.Generator().manual_seed(spec.seed)
    train = select(len(x_tr), spec.train_size, g)
    test = select(len(x_te), spec.test_size, g)
    x_train = torch.from_numpy(np.ascontiguousarray(x_tr))[train].contiguous()
    x_test = torch.from_numpy(np.ascontiguousarray(x_te))[test].contiguous()
    y_train = torch.from_numpy(np.ascontiguousarray(y_tr))[train]
    y_test = torch.from_numpy(np.ascontiguousarray(y_te))[test]
    log.info("digits: %d train, %d test images", len(x_train), len(x_test))
    return DatasetBundle(
        name="digits", task=Task.CLASSIFICATION, x_train=x_train, y_train=y_train,
        x_test=x_test, y_test=y_test, num_outputs=NUM_CLASSES,
    )
