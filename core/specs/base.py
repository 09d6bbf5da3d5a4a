"""The base every spec model shares: frozen, closed to unknown fields."""

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """A frozen pydantic model that rejects unknown fields.

    The same objects validate an HTTP request, travel over Redis as JSON and are embedded in
    checkpoints and reports, so they must never change after validation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
