"""What a spec may name, with parameter schemas: the same listing as `robustlab list`."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter

from core import catalog as core_catalog
from service.auth import Tenant
from service.errors import error_responses
from service.schemas import Catalog

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])


@lru_cache(maxsize=1)
def _catalog() -> Catalog:
    # Derived from the spec classes, so it never changes while the process runs.
    return Catalog.model_validate({c: core_catalog.catalog(c) for c in core_catalog.CATEGORIES})


@router.get("", response_model=Catalog, summary="Regularizers, attacks, architectures and datasets",
            responses=error_responses(401))
def get_catalog(tenant: Tenant) -> Catalog:
    """Every name a spec may use, with its parameters (type, default, bounds, description)."""
    return _catalog()
