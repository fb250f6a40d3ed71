"""API keys and roles.

A key is shown once when created; the database keeps only its sha256 and a short public
prefix (the key id, safe to log and audit). Roles are ordered: viewer < clinician < admin,
and a route names the least role it needs.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from cnnlab.errors import CnnlabError
from cnnlab.serve.store import Store, as_utc, utcnow

KEY_PREFIX = "cnl_"
KEY_HEADER = "X-API-Key"


class Role(IntEnum):
    viewer = 1
    clinician = 2
    admin = 3


ROLE_NAMES = tuple(r.name for r in Role)


def parse_role(name: str) -> Role:
    try:
        return Role[name]
    except KeyError:
        raise CnnlabError(f"role must be one of {', '.join(ROLE_NAMES)}, not '{name}'") from None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(store: Store, role: Role, name: str = "", expires_at: datetime | None = None) -> tuple[str, str]:
    """(key id, the full key); the key itself is not stored and cannot be shown again.
    From `expires_at` on (None: never), the key is refused."""
    key_id = KEY_PREFIX + secrets.token_hex(4)
    key = f"{key_id}_{secrets.token_urlsafe(32)}"
    store.add_key(key_id, hash_key(key), role.name, name, expires_at)
    return key_id, key


def expiry_after(days: float | None) -> datetime | None:
    """The moment a key made now for `days` days expires (None: never)."""
    if days is None:
        return None
    if not days > 0:
        raise CnnlabError(f"--expires-in must be a positive number of days, not {days:g}")
    return utcnow() + timedelta(days=days)


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: Role
    name: str = ""
    expires_at: datetime | None = None


_header = APIKeyHeader(name=KEY_HEADER, auto_error=False, description="An API key from `cnnlab keys create`.")


def _authenticate(request: Request, key: str | None) -> Principal:
    if not key:
        raise HTTPException(401, "missing API key (send it in the X-API-Key header)")
    store: Store = request.app.state.store
    row = store.key_by_hash(hash_key(key))
    if row is None or row.revoked_at is not None:
        raise HTTPException(401, "invalid or revoked API key")
    expires = as_utc(row.expires_at) if row.expires_at else None
    if expires is not None and row.expired():
        raise HTTPException(401, f"API key expired (at {expires:%Y-%m-%d %H:%M} UTC); ask for a new one")
    principal = Principal(row.key_id, Role[row.role], row.name, expires)
    # The audit middleware reads who asked, whether or not the role then suffices.
    request.state.key_id, request.state.role = principal.key_id, principal.role.name
    return principal


def require(least: Role, public_flag: str | None = None) -> Callable[..., Principal | None]:
    """A dependency admitting keys of role `least` or above; when the settings flag named
    `public_flag` is on, anyone is admitted (as no principal)."""

    def dependency(request: Request, key: Annotated[str | None, Security(_header)] = None) -> Principal | None:
        if public_flag and getattr(request.app.state.settings, public_flag):
            return None
        principal = _authenticate(request, key)
        if principal.role < least:
            raise HTTPException(403, f"this needs the {least.name} role or above; the key has {principal.role.name}")
        return principal

    return dependency


Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Clinician = Annotated[Principal, Depends(require(Role.clinician))]
Admin = Annotated[Principal, Depends(require(Role.admin))]
MetricsReader = Annotated[Principal | None, Depends(require(Role.viewer, "public_metrics"))]
DocsReader = Annotated[Principal | None, Depends(require(Role.viewer, "public_docs"))]
