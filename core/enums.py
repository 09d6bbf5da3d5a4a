"""Names shared by every part: the keys of the registries in `models/`.

Each registry in `models/` is keyed by one of these enums, and a test checks that every member is
registered, so a name that validates in a spec always has an implementation behind it.
"""

from enum import StrEnum


class RegularizerKind(StrEnum):
    NONE = "none"
    WEIGHT_DECAY = "weight_decay"
    DOUBLE_BACKPROP = "double_backprop"
    DATAGRAD_L1 = "datagrad_l1"
    JACOBIAN = "jacobian"
    SPECTRAL = "spectral"
    CONFIDENCE_PENALTY = "confidence_penalty"
    INPUT_HESSIAN = "input_hessian"
    SOBOLEV = "sobolev"
    MAXUP = "maxup"
    ADVERSARIAL_TRAINING = "adversarial_training"


class Architecture(StrEnum):
    MLP = "mlp"
    LENET5 = "lenet5"
    CNN_SMALL = "cnn_small"
    RESNET18 = "resnet18"
    WIDE_RESNET = "wide_resnet"


class DatasetName(StrEnum):
    DIGITS = "digits"
    MNIST = "mnist"
    FASHION_MNIST = "fashion_mnist"
    CIFAR10 = "cifar10"
    NPZ = "npz"
    UPLOAD = "upload"
    SYNTHETIC = "synthetic"
    FUNCTION_REGRESSION = "function_regression"


class AttackKind(StrEnum):
    FGSM = "fgsm"
    PGD = "pgd"
    AUTOATTACK = "autoattack"
    SQUARE = "square"
    APGD = "apgd"
    SUITE = "suite"


class Norm(StrEnum):
    LINF = "linf"
    L2 = "l2"


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
