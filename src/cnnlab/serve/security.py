"""API keys and roles.

A key is shown once when created; the database keeps only its sha256 and a short public
prefix (the key id, safe to log and audit). Roles are ordered: viewer < clinician < admin,
and a route names the least role it needs (serve/deps.py checks a request's key).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum

from cnnlab.data.patients import keyed_patient_id
from cnnlab.errors import CnnlabError
from cnnlab.serve.store import Store, utcnow

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


PATIENT_SECRET = "patient_id_key"
"""The name of the service-made patient hashing key in the database's secrets."""


@dataclass(frozen=True)
class PatientKeys:
    """Patient ids become keyed hashes (HMAC-SHA256) before anything is stored: the same patient always
    gets the same key (canary routing, grouping in training) and nobody without the secret can test a
    guessed id against an export. The default secret lives in the database beside the hashes (a dump
    holds both); a deployment sets CNNLAB_SERVE_PATIENT_ID_KEY from its secret store instead."""

    secret: bytes

    @classmethod
    def for_service(cls, configured: str | None, store: Store) -> PatientKeys:
        return cls((configured or store.service_secret(PATIENT_SECRET)).encode())

    def __call__(self, patient_id: str | None) -> str | None:
        patient_id = (patient_id or "").strip()
        return keyed_patient_id(self.secret, patient_id) if patient_id else None
