"""API key rows: only a key's sha256 is stored (security.py makes and checks keys)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from cnnlab.serve.store.engine import Database
from cnnlab.serve.store.tables import ApiKey, utcnow


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
