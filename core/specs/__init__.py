"""Job specs: frozen pydantic models that validate requests, travel as JSON and sit in reports."""

from core.specs.base import Spec
from core.specs.dataset import (
    DatasetSpec,
    DigitsDataset,
    FunctionRegressionDataset,
    ImageFileDataset,
    NpzDataset,
    SyntheticDataset,
)
from core.specs.evaluation import AttackSpec, EvaluationSpec, FGSMAttack, PGDAttack
from core.specs.experiment import ExperimentSpec, spec_hash
from core.specs.loading import SpecError, load_spec, parse_spec
from core.specs.model import ARCHITECTURE_PARAMS, ModelSpec, Normalization
from core.specs.regularizers import REGULARIZER_SPECS, RegularizerSpec
from core.specs.training import TrainingSpec

__all__ = [
    "ARCHITECTURE_PARAMS",
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
    "PGDAttack",
    "RegularizerSpec",
    "Spec",
    "SpecError",
    "SyntheticDataset",
    "TrainingSpec",
    "load_spec",
    "parse_spec",
    "spec_hash",
]
