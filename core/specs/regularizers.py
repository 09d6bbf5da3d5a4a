"""Regularizer specs: a discriminated union on `kind`, one class per kind (DESIGN §2).

Every class carries `name`, the run's name within a spec (unique; used in file names), and the
parameters of its kind. Weights are the λ of DESIGN §2. Where a paper's convention differs from
ours by a constant, the class docstring says how to convert.
"""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from core.specs.base import FieldError, Spec

RunName = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="run name: letters, digits, '_', '.', '-' (1-64 characters, used in file names)",
    ),
]
Weight = Annotated[float, Field(ge=0.0, le=1e6, description="penalty weight λ")]


class _Regularizer(Spec):
    name: RunName


class NoRegularizer(_Regularizer):
    """Plain training (ERM): mean cross-entropy."""

    kind: Literal["none"]


class WeightDecay(_Regularizer):
    """Weight decay through the optimizer; overrides training.weight_decay for this run."""

    kind: Literal["weight_decay"]
    weight: Weight = 5e-4


class DoubleBackprop(_Regularizer):
    """λ · mean_b ‖∇ₓ ℓ_b‖₂² (Drucker & LeCun; DataGrad-L2).

    `finite_difference` (Finlay & Oberman 2019) estimates the same quantity with d_b =
    (ℓ_b(x + h v_b) − ℓ_b(x)) / h and penalty λ · mean_b d_b², v_b the normalized gradient
    direction. Finlay & Oberman write (λ'/2)·d²: their λ' is 2·weight here.
    """

    kind: Literal["double_backprop"]
    weight: Weight = 1.0
    method: Literal["exact", "finite_difference"] = "exact"
    h: float = Field(0.01, gt=0.0, le=1.0, description="finite_difference: step length in input space")
    direction: Literal["l2", "linf"] = Field(
        "l2", description="finite_difference: v = g/‖g‖₂ (l2) or sign(g)/√d (linf)"
    )
    gradient: Literal["fresh", "carried"] = Field(
        "fresh",
        # left out of dumps at its default, so that specs written before it existed keep their hash
        exclude_if=lambda value: value == "fresh",
        description="finite_difference: g measured at every step (fresh, as the paper) or the one the "
        "training step's own backward measured at the sample's previous visit (carried: 2 ERM steps "
        "instead of about 2.3)",
    )


    @model_validator(mode="after")
    def _carried_needs_finite_difference(self) -> "DoubleBackprop":
        if self.gradient == "carried" and self.method != "finite_difference":
            raise FieldError(
                "gradient: carried is for method: finite_difference (the exact penalty measures the gradient "
                "itself): add method: finite_difference, or remove gradient", "gradient")
        return self


class DataGradL1(_Regularizer):
    """λ · mean_b ‖∇ₓ ℓ_b‖₁ (Ororbia et al. 2017)."""

    kind: Literal["datagrad_l1"]
    weight: Weight = 0.01


class JacobianReg(_Regularizer):
    """λ · mean_b ‖∂o_b/∂x‖_F², o = softmax (JacReg, Varga et al.) or logits ("Frob").

    `projections: null` is exact (one backward pass per class); `projections: n` is the
    unbiased random-projection estimate of Hoffman et al. 2019 with n unit vectors per sample.
    Hoffman et al. write λ_JR/2 · ‖J‖_F²: their λ_JR is 2·weight here.
    """

    kind: Literal["jacobian"]
    weight: Weight = 1.0
    target: Literal["softmax", "logits"] = "softmax"
    projections: int | None = Field(
        None, ge=1, le=1000, description="null: exact; n: random projections per sample"
    )


class SpectralReg(_Regularizer):
    """λ · mean_b ‖∇ₓ (rᵀ f(x_b))‖₂², one r ~ N(0, I_C) per batch (SpectReg, Varga et al.)."""

    kind: Literal["spectral"]
    weight: Weight = 0.03


class ConfidencePenalty(_Regularizer):
    """β · mean_b Σ_k p_bk log p_bk = −β · mean entropy (Pereyra et al.; Varga sums over the batch)."""

    kind: Literal["confidence_penalty"]
    weight: Weight = 0.01


class InputHessian(_Regularizer):
    """λ · mean_b σ_max(∇ₓ² ℓ_b) (Mustafa et al. 2020), or CURE's finite difference.

    `exact`: `power_iterations` Hessian-vector products in all, from the input gradient's direction
    (and the direction the sample's previous visit found, during training); the penalty is the power
    method's ‖H_b v_b‖ at the last one, differentiated through (≤ σ_max, ≥ |v_bᵀ H_b v_b|).
    `finite_difference` (CURE, Moosavi-Dezfooli et al. 2019): λ · mean_b ‖∇ℓ(x_b + h z_b) − ∇ℓ(x_b)‖₂,
    z_b = sign(∇ℓ_b)/‖sign(∇ℓ_b)‖. CURE's h = 3 on [0, 255] pixels is about 0.012 on [0, 1].
    """

    kind: Literal["input_hessian"]
    weight: Weight = 0.1
    method: Literal["exact", "finite_difference"] = "exact"
    power_iterations: int = Field(1, ge=1, le=100, description="exact: HVPs per step, the penalty's included")
    h: float = Field(0.01, gt=0.0, le=1.0, description="finite_difference: step length")


class Sobolev(_Regularizer):
    """Sobolev training (Czarnecki et al. 2017): match a teacher's outputs and input derivatives.

    Loss ℓ(f(x), g(x)) + λ · mean_b mean_k ‖v_bkᵀ(J_f(x_b) − J_g(x_b))‖², v_bk random unit vectors
    over the outputs (log-probabilities for classifiers, so the shift of logits does not matter).
    `teacher`: the name of another run of the same spec (trained first), a checkpoint path
    (.safetensors / .pt), or `dataset` for regression sets with exact target gradients.
    """

    kind: Literal["sobolev"]
    weight: Weight = 1.0
    teacher: str = Field(
        min_length=1, description="run name, uploaded model id, checkpoint path (local runs only), or 'dataset'"
    )
    projections: int = Field(1, ge=1, le=1000)


class MaxUp(_Regularizer):
    """MaxUp (Gong et al. 2020): mean_b max_i ℓ(f(x_b + δ_bi), y_b) over m perturbed copies."""

    kind: Literal["maxup"]
    copies: int = Field(4, ge=1, le=64, description="m, perturbed copies per sample")
    perturbation: Literal["gaussian", "uniform"] = "gaussian"
    sigma: float | None = Field(None, gt=0.0, le=10.0, description="gaussian: noise std")
    eps: float | None = Field(None, gt=0.0, le=1.0, description="uniform: L∞ radius")

    @model_validator(mode="after")
    def _scale_matches_perturbation(self) -> "MaxUp":
        if self.perturbation == "gaussian" and self.sigma is None:
            raise FieldError("gaussian perturbation needs sigma (e.g. sigma: 0.1)", "sigma")
        if self.perturbation == "uniform" and self.eps is None:
            raise FieldError("uniform perturbation needs eps (e.g. eps: 0.1)", "eps")
        if self.perturbation == "gaussian" and self.eps is not None:
            raise FieldError("eps is for uniform perturbation: use sigma with gaussian, or remove eps", "eps")
        if self.perturbation == "uniform" and self.sigma is not None:
            raise FieldError(
                "sigma is for gaussian perturbation: use eps with uniform, or remove sigma", "sigma"
            )
        return self


class AdversarialTraining(_Regularizer):
    """Train on adversarial examples: FGSM with random start (Wong et al. 2020) or PGD (Madry et al.).

    Defaults: FGSM step α = 1.25 ε with δ ~ U(−ε, ε); PGD step 2.5 ε / steps with a random start.
    """

    kind: Literal["adversarial_training"]
    attack: Literal["fgsm", "pgd"] = "fgsm"
    eps: float = Field(gt=0.0, le=1.0, description="L∞ radius in [0, 1] input space")
    steps: int | None = Field(None, ge=1, le=1000, description="pgd: iterations (default 7)")
    step_size: float | None = Field(None, gt=0.0, le=1.0, description="default: see class docstring")
    random_start: bool = True
    clean_weight: float = Field(0.0, ge=0.0, le=1.0, description="share of the clean loss in the mix")

    @model_validator(mode="after")
    def _fgsm_takes_one_step(self) -> "AdversarialTraining":
        if self.attack == "fgsm" and self.steps not in (None, 1):
            raise FieldError("fgsm takes one step: remove steps, or use attack: pgd", "steps")
        return self

    @property
    def pgd_steps(self) -> int:
        return 7 if self.steps is None else self.steps


RegularizerSpec = Annotated[
    NoRegularizer
    | WeightDecay
    | DoubleBackprop
    | DataGradL1
    | JacobianReg
    | SpectralReg
    | ConfidencePenalty
    | InputHessian
    | Sobolev
    | MaxUp
    | AdversarialTraining,
    Field(discriminator="kind"),
]

REGULARIZER_SPECS: dict[str, type[_Regularizer]] = {
    "none": NoRegularizer,
    "weight_decay": WeightDecay,
    "double_backprop": DoubleBackprop,
    "datagrad_l1": DataGradL1,
    "jacobian": JacobianReg,
    "spectral": SpectralReg,
    "confidence_penalty": ConfidencePenalty,
    "input_hessian": InputHessian,
    "sobolev": Sobolev,
    "maxup": MaxUp,
    "adversarial_training": AdversarialTraining,
}
