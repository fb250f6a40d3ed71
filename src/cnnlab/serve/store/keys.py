"""API key rows (only a key's sha256 is stored; security.py makes and checks keys) and the secrets the
service makes for itself."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cnnlab.serve.store.engine import Database
from cnnlab.serve.store.tables import ApiKey, ServiceSecret, utcnow


class KeyQueries(Database):
    def add_key(self, key_id: str, key_sha256: str, role: str, name: str, expires_at: datetime | None = None) -> ApiKey:
        with self.sessions.begin() as s:
            row = ApiKey(key_id=key_id, key_sha256=key_sha256, role=role, name=name, expires_at=expires_at)
            s.add(row)
        return row

    def key_by_hash(self, key_sha256: str) -> ApiKey | None:
        with self.sessions() as s:
            return s.scalar(select(ApiKey).where(ApiKey.key_sha256 == key_sha256))

    def list_keys(self) -> list[ApiKey]:
        with self.sessions() as s:
            return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at)))

    def revoke_key(self, key_id: str) -> bool:
        """False when no such key exists or it was already revoked."""
        with self.sessions.begin() as s:
            row = s.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = utcnow()
            return True


class SecretQueries(Database):
    def service_secret(self, name: str) -> str:
        """The service's secret `name`, made on first use: every worker and restart gets the same one."""
        with self.sessions() as s:
            row = s.get(ServiceSecret, name)
            if row is not None:
                return row.value
        try:
            with self.sessions.begin() as s:
                s.add(ServiceSecret(name=name, value=secrets.token_hex(32)))
        except IntegrityError:  # another worker made it first: theirs is the one
            pass
        with self.sessions() as s:
            row = s.get(ServiceSecret, name)
            assert row is not None
            return row.value
