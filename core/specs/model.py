"""Model specs: a registry architecture and its validated parameters (a union on `architecture`)."""

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from core.specs.base import FieldError, Spec


class Normalization(Spec):
    """Per-channel normalization, applied by a layer inside the model (attacks work in [0, 1])."""

    mean: list[float] = Field(min_length=1, description="per-channel mean (one value per channel)")
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, description="per-channel std, > 0")

    @model_validator(mode="after")
    def _same_length(self) -> "Normalization":
        if len(self.mean) != len(self.std):
            raise FieldError(
                f"mean has {len(self.mean)} values and std {len(self.std)}: give one of each per channel",
                "std",
            )
        return self


NormalizationChoice = Annotated[
    Literal["dataset", "none"] | Normalization,
    Field(
        description="'dataset': per-channel mean/std of the training inputs; 'none'; "
        "or explicit {mean: [...], std: [...]}"
    ),
]

Activation = Literal["relu", "tanh", "softplus", "gelu"]


class MLPParams(Spec):
    """Fully connected network on the flattened input: hidden layers, then a linear classifier."""

    hidden: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [256, 256], max_length=16, description="hidden layer widths"
    )
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class LeNet5Params(Spec):
    """LeNet-5 (LeCun et al. 1998): two convolution and pooling stages, then fully connected layers."""

    activation: Activation = "relu"
    pooling: Literal["max", "avg"] = "max"


class CNNSmallParams(Spec):
    """Small CNN: stride-2 4×4 convolutions, one fully connected layer, then the classifier."""

    channels: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [16, 32], min_length=1, max_length=6,
        description="channels of the stride-2 4×4 convolutions",
    )
    hidden: int = Field(100, ge=1, le=65536, description="width of the fully connected layer")


class ResNet18Params(Spec):
    """ResNet-18 (He et al. 2016): four stages of two basic blocks, for 32×32 images such as CIFAR-10."""

    width: int = Field(64, ge=1, le=1024, description="channels of the first stage")


class WideResNetParams(Spec):
    """Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016), the usual robustness benchmark model."""

    depth: int = Field(28, ge=10, le=100, description="total depth; (depth - 4) must be divisible by 6")
    widen_factor: int = Field(10, ge=1, le=20)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("depth")
    @classmethod
    def _depth_6n_plus_4(cls, depth: int) -> int:
        if (depth - 4) % 6 != 0:
            nearest = 6 * round((depth - 4) / 6) + 4
            raise ValueError(f"depth {depth} is not 6n+4: use e.g. {nearest}")
        return depth


class _Model(Spec):
    normalization: NormalizationChoice = "dataset"


class MLPModel(_Model):
    architecture: Literal["mlp"]
    params: MLPParams = Field(default_factory=MLPParams)


class LeNet5Model(_Model):
    architecture: Literal["lenet5"]
    params: LeNet5Params = Field(default_factory=LeNet5Params)


class CNNSmallModel(_Model):
    architecture: Literal["cnn_small"]
    params: CNNSmallParams = Field(default_factory=CNNSmallParams)


class ResNet18Model(_Model):
    architecture: Literal["resnet18"]
    params: ResNet18Params = Field(default_factory=ResNet18Params)


class WideResNetModel(_Model):
    architecture: Literal["wide_resnet"]
    params: WideResNetParams = Field(default_factory=WideResNetParams)


ModelSpec = Annotated[
    MLPModel | LeNet5Model | CNNSmallModel | ResNet18Model | WideResNetModel,
    Field(discriminator="architecture"),
]

# Which params class belongs to which architecture (catalog listings, checkpoint metadata).
ARCHITECTURE_PARAMS: dict[str, type[Spec]] = {
    "mlp": MLPParams,
    "lenet5": LeNet5Params,
    "cnn_small": CNNSmallParams,
    "resnet18": ResNet18Params,
    "wide_resnet": WideResNetParams,
}
