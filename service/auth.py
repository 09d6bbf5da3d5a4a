"""Bearer API keys mapped to tenants (DESIGN §6).

Keys come from `ROBUSTLAB_API_KEYS` ("teamA:key1,teamB:key2") and/or the file named by
`ROBUSTLAB_API_KEYS_FILE` (one `tenant:key` per line, `#` comments). Only their SHA-256 hashes are
kept in memory; a presented key is hashed and compared with `secrets.compare_digest` against every
entry (no early exit), so neither the comparison nor the search order leaks which key was close.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.settings import Settings
from service.errors import ApiError

TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # tenant names become parts of Redis keys
MIN_KEY_LENGTH = 8


class NoApiKeys(RuntimeError):
    """The service would accept nobody: refuse to start rather than run open or closed by accident."""


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_entries(text: str, source: str, separator: str) -> list[tuple[str, str]]:
    """(tenant, key) pairs of 'tenant:key' entries; ValueError naming the bad entry."""
    entries = []
    for number, raw in enumerate(text.split(separator), 1):
        entry = raw.split("#", 1)[0].strip() if separator == "\n" else raw.strip()
        if not entry:
            continue
        tenant, colon, key = entry.partition(":")
        tenant, key = tenant.strip(), key.strip()
        where = f"{source} entry {number}"
        if not colon or not key:
            raise ValueError(f"{where}: expected 'tenant:key', got no ':' or an empty key")
        if not TENANT.match(tenant):
            raise ValueError(f"{where}: tenant {tenant!r} must be 1-64 letters, digits, '_', '.', '-'")
        if len(key) < MIN_KEY_LENGTH:
            raise ValueError(f"{where}: the key of tenant {tenant!r} is shorter than {MIN_KEY_LENGTH} characters")
        entries.append((tenant, key))
    return entries


class KeyRing:
    """Hashed keys → tenant."""

    def __init__(self, entries: list[tuple[str, str]]) -> None:
        if not entries:
            raise NoApiKeys(
                "no API keys configured: set ROBUSTLAB_API_KEYS='tenant:key,...' or ROBUSTLAB_API_KEYS_FILE "
                "(one tenant:key per line); `robustlab up` generates one for you"
            )
        self._entries: list[tuple[bytes, str]] = []
        seen: dict[bytes, str] = {}
        for tenant, key in entries:
            digest = _hash(key)
            if digest in seen and seen[digest] != tenant:
                raise ValueError(f"the same API key is given to tenants {seen[digest]!r} and {tenant!r}")
            seen[digest] = tenant
            self._entries.append((digest, tenant))

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        entries = parse_entries(settings.api_keys, "ROBUSTLAB_API_KEYS", ",")
        if settings.api_keys_file is not None:
            path = Path(settings.api_keys_file)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise NoApiKeys(f"cannot read the API keys file {path}: {exc.strerror or exc}") from None
            entries += parse_entries(text, str(path), "\n")
        return cls(entries)

    def tenant(self, key: str) -> str | None:
        digest = _hash(key)
        found: str | None = None
        for known, tenant in self._entries:  # every entry, always: constant work whatever the key
            if secrets.compare_digest(known, digest):
                found = tenant
        return found


_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer <key>`")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="robustlab"'}


def authenticate(request: Request,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The caller's tenant, or 401."""
    if credentials is None:
        raise ApiError(401, "unauthorized", "missing API key: send the header 'Authorization: Bearer <key>'",
                       headers=_CHALLENGE)
    keyring: KeyRing = request.app.state.keyring
    tenant = keyring.tenant(credentials.credentials)
    if tenant is None:
        raise ApiError(401, "unauthorized", "wrong API key: check the key (it is not valid for this service)",
                       headers={"WWW-Authenticate": 'Bearer realm="robustlab", error="invalid_token"'})
    return tenant


Tenant = Annotated[str, Depends(authenticate)]
