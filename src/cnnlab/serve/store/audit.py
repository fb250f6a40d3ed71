"""The audit log: one row per request, each hash-chained to the one before, so that an edited or
deleted row shows up in `verify_audit` (and the database refuses both anyway, by the triggers that
migrations/versions/v1_baseline.py makes)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from cnnlab.serve.store.engine import DEFAULT_BUSY_TIMEOUT_S, Database, is_busy
from cnnlab.serve.store.tables import AuditRow, utcnow

GENESIS = "0" * 64
"""The `prev_hash` of the first audit row."""

AUDIT_FIELDS = (
    "at",
    "request_id",
    "key_id",
    "role",
    "method",
    "route",
    "model_version",
    "input_sha256",
    "outcome",
    "status",
)

APPEND_ATTEMPTS = 20
_POSTGRES_AUDIT_LOCK = 0x617564697421  # "audit!": the advisory lock every appending process takes in turn


def chain_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """sha256 of the previous hash and the row's canonical JSON."""
    canonical = json.dumps({k: fields[k] for k in AUDIT_FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditProblem:
    row_id: int
    reason: str


class AuditLog(Database):
    def __init__(self, url: str, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        super().__init__(url, busy_timeout_s)
        self._audit_lock = threading.Lock()

    def append_audit(self, **fields: Any) -> AuditRow:
        """Append one row to the hash chain; `fields` are AUDIT_FIELDS less `at`."""
        values = {k: fields.get(k) for k in AUDIT_FIELDS}
        values["at"] = utcnow().isoformat(timespec="microseconds")
        # A lock held by another connection is waited for once (each attempt already waits the busy
        # timeout); only races are retried, so a stuck writer costs a request one timeout, not twenty.
        deadline = time.monotonic() + self.busy_timeout_s
        last = APPEND_ATTEMPTS - 1
        # One appender per process; across processes SQLite's write lock or PostgreSQL's advisory lock
        # orders them, and any other database's unique prev_hash turns a race into a retry.
        with self._audit_lock:
            for attempt in range(APPEND_ATTEMPTS):
                try:
                    with self.sessions.begin() as s:
                        if s.get_bind().dialect.name == "postgresql":
                            # Processes take turns, held to commit: under contention, retrying the unique
                            # race alone starves a loser (CI saw one give up after 20 lost races).
                            s.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _POSTGRES_AUDIT_LOCK})
                        head = s.scalar(select(AuditRow.row_hash).order_by(AuditRow.id.desc()).limit(1))
                        prev = head or GENESIS
                        row = AuditRow(**values, prev_hash=prev, row_hash=chain_hash(prev, values))
                        s.add(row)
                    return row
                except IntegrityError:
                    if attempt == last:
                        raise
                except OperationalError as exc:
                    if attempt == last or not is_busy(exc) or time.monotonic() > deadline:
                        raise
        raise AssertionError("unreachable")

    def audit_rows(self) -> Iterator[AuditRow]:
        with self.sessions() as s:
            yield from s.scalars(select(AuditRow).order_by(AuditRow.id).execution_options(yield_per=1000))

    def verify_audit(self) -> tuple[int, AuditProblem | None]:
        """(rows checked, the first row whose hash or link is wrong, or None when the chain holds)."""
        prev, count = GENESIS, 0
        for row in self.audit_rows():
            count += 1
            values = {k: getattr(row, k) for k in AUDIT_FIELDS}
            if row.prev_hash != prev:
                return count, AuditProblem(row.id, "a row before it was deleted or its link was changed")
            if chain_hash(prev, values) != row.row_hash:
                return count, AuditProblem(row.id, "its content was edited")
            prev = row.row_hash
        return count, None
