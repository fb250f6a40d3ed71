"""A key's recent requests, from the audit log: the rate limit's count, shared by every worker process
and machine on the database because every one of them writes its requests there."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from cnnlab.serve.store.engine import Database
from cnnlab.serve.store.tables import AuditRow

RATE_LIMITED = "rate_limited"
"""The audit outcome of a request refused by the rate limit. Refusals are not counted against the key,
so a client that waits out Retry-After gets in, however often it was refused before."""


class UsageQueries(Database):
    def key_usage(self, key_id: str, since: datetime, limit: int) -> tuple[int, datetime | None]:
        """(the key's counted requests since `since`, and, when that is `limit` or more, the time of the
        request whose leaving the window brings the count under `limit`)."""
        recent = (
            (AuditRow.key_id == key_id)
            & (AuditRow.at >= since.astimezone(UTC).isoformat(timespec="microseconds"))
            & (AuditRow.outcome != RATE_LIMITED)
        )
        with self.sessions() as s:
            count = int(s.scalar(select(func.count()).select_from(AuditRow).where(recent)) or 0)
            if count < limit:
                return count, None
            query = select(AuditRow.at).where(recent).order_by(AuditRow.at).offset(count - limit).limit(1)
            at = s.scalar(query)
        return count, datetime.fromisoformat(at) if at else None
