"""Job specs: frozen pydantic models that validate requests, travel as JSON and sit in reports."""

from core.specs.base import Spec
from core.specs.dataset import (
    DatasetSpec,
    DigitsDataset,
    FunctionRegressionDataset,
    ImageFileDataset,
    NpzDataset,
    SyntheticDataset,
    UploadedDataset,
)
from core.specs.evaluation import AttackSpec, EvaluationSpec, FGSMAttack, PGDAttack
from core.specs.experiment import ExperimentSpec, spec_hash
from core.specs.loading import SpecError, load_spec, parse_spec
from core.specs.model import (
    ARCHITECTURE_PARAMS,
    MODEL_FORMATS,
    ModelSpec,
    Normalization,
    OnnxModel,
    TimmModel,
    TorchvisionModel,
    UserModelSpec,
    is_user_model,
)
from core.specs.regularizers import REGULARIZER_SPECS, RegularizerSpec
from core.specs.training import TrainingSpec

__all__ = [
    "ARCHITECTURE_PARAMS",
    "MODEL_FORMATS",
    "REGULARIZER_SPECS",
    "AttackSpec",
    "DatasetSpec",
    "DigitsDataset",
    "EvaluationSpec",
    "ExperimentSpec",
    "FGSMAttack",
    "FunctionRegressionDataset",
    "ImageFileDataset",
    "ModelSpec",
    "Normalization",
    "NpzDataset",
    "OnnxModel",
    "PGDAttack",
    "RegularizerSpec",
    "Spec",
    "SpecError",
    "SyntheticDataset",
    "TimmModel",
    "TorchvisionModel",
    "TrainingSpec",
    "UploadedDataset",
    "UserModelSpec",
    "is_user_model",
    "load_spec",
    "parse_spec",
    "spec_hash",
]
