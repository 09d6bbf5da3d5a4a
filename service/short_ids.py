"""Short ids: `/v1/jobs/3f2a9c1e/...`, `/v1/models/9b1c04aa` and `/v1/datasets/51e0d2f7` work like the
full id when the prefix names one job (model, dataset) of the caller.

The dashboard and the CLI show the first 8 characters of an id; a person types those back. An ASGI
middleware rewrites the path before routing, so every route of a job (status, cancel, report,
artifacts), a model or a dataset (read, delete) accepts them alike. The prefix is looked up among
the caller's own jobs or uploads only (the tenant of the API key), so it never reveals or reaches
another tenant's; two matches are a 409 that asks for more characters; no match goes on unchanged
and ends in the route's usual 404 ("no model '9b1c04aa' for this API key").
"""

from __future__ import annotations

import re
from typing import Any

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from jobstore.uploads import Kind, UploadStore
from service.errors import ApiError

PREFIX = re.compile(r"^[0-9a-f][0-9a-f-]{5,34}$")  # 6 to 35 characters of a uuid4's form
JOBS = "/v1/jobs/"
# The collections whose ids shorten: path prefix -> (what, in messages; the kind of the upload index).
COLLECTIONS: dict[str, tuple[str, Kind | None]] = {
    JOBS: ("job", None), "/v1/models/": ("model", "model"), "/v1/datasets/": ("dataset", "dataset")}


def _scan(redis: Any, key: str, prefix: str, limit: int) -> list[str]:
    found: list[str] = []
    for member, _score in redis.zscan_iter(key, match=f"{prefix}*", count=500):
        found.append(member.decode() if isinstance(member, bytes) else str(member))
        if len(found) >= limit:
            break
    return found


def matching_jobs(store: Any, tenant: str, prefix: str, limit: int = 2) -> list[str]:
    """Up to `limit` ids of `tenant`'s jobs that start with `prefix` (a scan of that tenant's index)."""
    return _scan(store.redis, store.keys.tenant_jobs(tenant), prefix, limit)


def matching_uploads(store: Any, kind: Kind, tenant: str, prefix: str, limit: int = 2) -> list[str]:
    """Up to `limit` ids of `tenant`'s uploads of `kind` that start with `prefix` (a scan of its index)."""
    return _scan(store.redis, UploadStore(store.redis, store.keys.prefix)._index(kind, tenant), prefix, limit)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            return key.strip() if scheme.lower() == "bearer" and key.strip() else None
    return None


class ShortJobIds:
    """The middleware (named for jobs, where it began; models and datasets are looked up alike)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        base = next((b for b in COLLECTIONS if path.startswith(b)), None)
        if base is not None:
            ident, sep, rest = path[len(base):].partition("/")
            key = _bearer(scope)
            if PREFIX.fullmatch(ident) and key is not None:
                state = scope["app"].state
                tenant = state.keyring.tenant(key)
                if tenant is not None:  # a wrong key goes on to the usual 401
                    what, kind = COLLECTIONS[base]
                    services = state.services
                    if kind is None:
                        found = await anyio.to_thread.run_sync(matching_jobs, services.store, tenant, ident)
                    else:
                        found = await anyio.to_thread.run_sync(matching_uploads, services.store, kind, tenant, ident)
                    if len(found) > 1:
                        error = ApiError(409, "ambiguous_id", f"more than one of your {what}s starts with {ident!r}: "
                                         "give more characters of the id (or all 36)")
                        await error.response()(scope, receive, send)
                        return
                    if found:
                        full = f"{base}{found[0]}{sep}{rest}"
                        scope = {**scope, "path": full, "raw_path": full.encode()}
        await self.app(scope, receive, send)
