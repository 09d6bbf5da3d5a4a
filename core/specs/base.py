"""The base every spec model shares: frozen, closed to unknown fields."""

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """A frozen pydantic model that rejects unknown fields.

    The same objects validate an HTTP request, travel over Redis as JSON and are embedded in
    checkpoints and reports, so they must never change after validation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")


class FieldError(ValueError):
    """A ValueError raised by a model validator that knows which field below the model is at fault.

    Pydantic attributes an error raised in a model validator to the whole model; raising this
    instead lets `core.specs.loading` point a person at the field (`regularizers[3].teacher`)
    rather than at the whole spec. `loc` is relative to the model being validated.
    """

    def __init__(self, message: str, *loc: str | int) -> None:
        super().__init__(message)
        self.loc: tuple[str | int, ...] = loc
