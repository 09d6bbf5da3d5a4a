"""Model specs: a registry architecture with validated parameters, or a user's own model file.

A section without `format` is one of our registry architectures (a union on `architecture`), as
always. `format: onnx | timm | torchvision` describes a model the user brings (an ONNX graph, or a
timm / torchvision architecture by name with safetensors weights) together with its input
conventions; attacks and ε always live in [0, 1] pixel space and a wrapper maps inputs to what
the model expects (DESIGN §6).
"""

from typing import Annotated, Any, Literal, TypeGuard

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from core.specs.base import FieldError, Spec


class Normalization(Spec):
    """Per-channel normalization, applied by a layer inside the model (attacks work in [0, 1])."""

    mean: list[float] = Field(min_length=1, max_length=64, description="per-channel mean (one value per channel)")
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, max_length=64, description="per-channel std, > 0")

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


RegistryModelSpec = Annotated[
    MLPModel | LeNet5Model | CNNSmallModel | ResNet18Model | WideResNetModel,
    Field(discriminator="architecture"),
]

ModelFormat = Literal["onnx", "timm", "torchvision"]
MODEL_FORMATS: tuple[str, ...] = ("onnx", "timm", "torchvision")
MAX_DIMENSION = 65_536  # of one axis of a sample
MAX_CLASSES = 100_000  # classes a model may output, and so the largest label + 1 of an uploaded dataset
Dimension = Annotated[int, Field(ge=1, le=MAX_DIMENSION)]


class _UserModel(Spec):
    """A model the user brings: the file holds the weights, this section its input conventions."""

    input_shape: list[Dimension] = Field(
        min_length=1, max_length=3,
        description="one sample as the model takes it, e.g. [3, 32, 32] (NCHW) or [32, 32, 3] (NHWC) or [64]",
    )
    num_classes: int = Field(ge=2, le=MAX_CLASSES, description="number of classes the model outputs")
    layout: Literal["nchw", "nhwc"] = Field(
        "nchw", description="channel order the model takes; the dataset's C×H×W images are transposed to it"
    )
    input_range: tuple[float, float] = Field(
        (0.0, 1.0), description="value range the model expects, e.g. [0, 255]; attacks and ε stay in [0, 1]"
    )
    mean: list[float] | None = Field(
        None, min_length=1, max_length=64,
        description="per-channel mean the model expects, applied after scaling to input_range",
    )
    std: list[Annotated[float, Field(gt=0)]] | None = Field(
        None, min_length=1, max_length=64, description="per-channel std (> 0), applied with mean"
    )
    outputs: Literal["logits", "probabilities"] = Field(
        "logits", description="what the model returns: logits, or probabilities (softmax already applied)"
    )

    @model_validator(mode="after")
    def _consistent_conventions(self) -> "_UserModel":
        low, high = self.input_range
        if not low < high:
            raise FieldError(f"input_range {[low, high]} must be [low, high] with low < high, e.g. [0, 255]",
                             "input_range")
        if (self.mean is None) != (self.std is None):
            raise FieldError("give both mean and std, or neither", "std" if self.std is None else "mean")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std):
                raise FieldError(f"mean has {len(self.mean)} values and std {len(self.std)}: "
                                 "give one of each per channel", "std")
            channels = self.channels
            if len(self.mean) not in (1, channels):
                raise FieldError(f"mean/std have {len(self.mean)} values but the model takes {channels} "
                                 "channel(s): give 1 value or one per channel", "mean")
        if self.layout == "nhwc" and len(self.input_shape) != 3:
            raise FieldError(f"layout nhwc needs an image input_shape [H, W, C], got {self.input_shape}",
                             "layout")
        return self

    @property
    def channels(self) -> int:
        """Channels of one sample (1 for vectors)."""
        if len(self.input_shape) != 3:
            return 1
        return self.input_shape[2] if self.layout == "nhwc" else self.input_shape[0]

    @property
    def image_shape(self) -> list[int]:
        """The input shape in robustlab's own C×H×W order (vectors unchanged)."""
        if self.layout == "nhwc":
            height, width, channels = self.input_shape
            return [channels, height, width]
        return list(self.input_shape)


class OnnxModel(_UserModel):
    """An ONNX graph (protobuf: reading it runs no code), converted to a differentiable torch module."""

    format: Literal["onnx"]


ModelName = Annotated[str, Field(
    min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
    description="an architecture name of the installed library, e.g. resnet18",
)]


class TimmModel(_UserModel):
    """A timm architecture by name (built with pretrained=False), weights from a safetensors/.pt state_dict."""

    format: Literal["timm"]
    name: ModelName


class TorchvisionModel(_UserModel):
    """A torchvision classification architecture by name, weights from a safetensors/.pt state_dict."""

    format: Literal["torchvision"]
    name: ModelName


UserModelSpec = OnnxModel | TimmModel | TorchvisionModel


def model_format(value: Any) -> str:
    """The tag of a model section: its `format`, or 'registry' when it has none (our architectures)."""
    if isinstance(value, dict):
        return str(value.get("format", "registry"))
    return str(getattr(value, "format", "registry"))


ModelSpec = Annotated[
    Annotated[RegistryModelSpec, Tag("registry")]
    | Annotated[OnnxModel, Tag("onnx")]
    | Annotated[TimmModel, Tag("timm")]
    | Annotated[TorchvisionModel, Tag("torchvision")],
    Discriminator(
        model_format,
        custom_error_type="invalid_model_format",
        custom_error_message="unknown model format: use onnx, timm or torchvision, or leave `format` out and "
        "name a registry `architecture`",
    ),
]


RegistryModel = MLPModel | LeNet5Model | CNNSmallModel | ResNet18Model | WideResNetModel


def is_user_model(model: object) -> TypeGuard[OnnxModel | TimmModel | TorchvisionModel]:
    """Whether a validated model section describes a user's own model file (not a registry architecture)."""
    return isinstance(model, OnnxModel | TimmModel | TorchvisionModel)


def require_registry(model: object) -> RegistryModel:
    """The model section as a registry architecture, or a ValueError saying that only evaluation takes files."""
    if isinstance(model, MLPModel | LeNet5Model | CNNSmallModel | ResNet18Model | WideResNetModel):
        return model
    fmt = getattr(model, "format", "?")
    raise ValueError(f"model.format {fmt!r} describes a model file to evaluate, which cannot be trained: use "
                     "robustlab evaluate --model FILE (or an evaluate job), or name a registry architecture")

# Which params class belongs to which architecture (catalog listings, checkpoint metadata).
ARCHITECTURE_PARAMS: dict[str, type[Spec]] = {
    "mlp": MLPParams,
    "lenet5": LeNet5Params,
    "cnn_small": CNNSmallParams,
    "resnet18": ResNet18Params,
    "wide_resnet": WideResNetParams,
}
