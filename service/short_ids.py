"""Short job ids: `/v1/jobs/3f2a9c1e/...` works like the full id when the prefix names one job of the caller.

The dashboard and the CLI show the first 8 characters of a job's id; a person types those back. An
ASGI middleware rewrites the path before routing, so every job route (status, cancel, report,
artifacts) accepts them alike. The prefix is looked up among the caller's own jobs only (the tenant
of the API key), so it never reveals or reaches another tenant's job; two matching jobs are a 409
that asks for more characters; no match goes on unchanged and ends in the usual 404.
"""

from __future__ import annotations

import re
from typing import Any

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ApiError

PREFIX = re.compile(r"^[0-9a-f][0-9a-f-]{5,34}$")  # 6 to 35 characters of a uuid4's form
JOBS = "/v1/jobs/"


def matching_jobs(store: Any, tenant: str, prefix: str, limit: int = 2) -> list[str]:
    """Up to `limit` ids of `tenant`'s jobs that start with `prefix` (a scan of that tenant's index)."""
    found: list[str] = []
    for member, _score in store.redis.zscan_iter(store.keys.tenant_jobs(tenant), match=f"{prefix}*", count=500):
        found.append(member.decode() if isinstance(member, bytes) else str(member))
        if len(found) >= limit:
            break
    return found


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            return key.strip() if scheme.lower() == "bearer" and key.strip() else None
    return None


class ShortJobIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith(JOBS):
            ident, sep, rest = path[len(JOBS):].partition("/")
            key = _bearer(scope)
            if PREFIX.fullmatch(ident) and key is not None:
                state = scope["app"].state
                tenant = state.keyring.tenant(key)
                if tenant is not None:  # a wrong key goes on to the usual 401
                    found = await anyio.to_thread.run_sync(matching_jobs, state.services.store, tenant, ident)
                    if len(found) > 1:
                        error = ApiError(409, "ambiguous_id", f"more than one of your jobs starts with {ident!r}: "
                                         "give more characters of the id (or all 36)")
                        await error.response()(scope, receive, send)
                        return
                    if found:
                        full = f"{JOBS}{found[0]}{sep}{rest}"
                        scope = {**scope, "path": full, "raw_path": full.encode()}
        await self.app(scope, receive, send)
