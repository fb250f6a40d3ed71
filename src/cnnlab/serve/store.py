"""The service's tables and every query on them, behind one `Store`.

SQLite in the state directory by default (WAL, so readers never wait for the writer, and a
busy timeout, so concurrent writers queue instead of failing); any SQLAlchemy URL works the same.
No DICOM tag value and no client file name is ever written here: images are identified by the
sha256 of their bytes and kept as metadata-free PNGs under generated names.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

MINUTE_FORMAT = "%Y-%m-%dT%H:%M"
MINUTE_CHARS = 16
"""A UTC minute as text, the way the monitor's counts over time name it."""

GENESIS = "0" * 64
"""The `prev_hash` of the first audit row."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every one stored here is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    """None: the key never expires (the only kind before expiry existed)."""

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and as_utc(self.expires_at) <= (now or utcnow())


class PredictionRow(Base):
    __tablename__ = "predictions"

    request_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    key_id: Mapped[str | None] = mapped_column(String(32))
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(64))
    input_sha256: Mapped[str] = mapped_column(String(64))
    image_file: Mapped[str | None] = mapped_column(String(100))
    """A generated name under the state directory's images/ (decoded pixels only)."""
    label: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[float] = mapped_column(Float)
    probs_json: Mapped[str] = mapped_column(Text)
    decision: Mapped[str | None] = mapped_column(String(16))
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)


class FeedbackRow(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("predictions.request_id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    reviewer: Mapped[str | None] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(200))
    agrees: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text, default="")
    image_file: Mapped[str | None] = mapped_column(String(100))


class ReviewItem(Base):
    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("predictions.request_id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    reasons: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    resolved_by: Mapped[str | None] = mapped_column(String(32))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolution_label: Mapped[str | None] = mapped_column(String(200))
    resolution_note: Mapped[str] = mapped_column(Text, default="")


class ActiveModel(Base):
    """The version an admin activated per model name, so a restart keeps the choice."""

    __tablename__ = "active_models"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    activated_by: Mapped[str | None] = mapped_column(String(32))
    activated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditRow(Base):
    """One row per request, accepted or refused; `row_hash` chains it to the row before."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[str] = mapped_column(String(40), index=True)
    """ISO-8601 text, not a DateTime: the hash must see exactly what the database gives back."""
    request_id: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str | None] = mapped_column(String(32))
    role: Mapped[str | None] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(10))
    route: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(64))
    input_sha256: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(40))
    status: Mapped[int] = mapped_column(Integer)
    # unique: two writers that read the same head cannot both append after it; the loser retries.
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    row_hash: Mapped[str] = mapped_column(String(64))


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

_SQLITE_APPEND_ONLY = (
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
)


_POSTGRES_APPEND_ONLY = (
    "CREATE OR REPLACE FUNCTION cnnlab_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
    "DROP TRIGGER IF EXISTS audit_append_only ON audit",
    "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit "
    "FOR EACH ROW EXECUTE FUNCTION cnnlab_audit_append_only()",
)
_APPEND_ONLY = {"sqlite": _SQLITE_APPEND_ONLY, "postgresql": _POSTGRES_APPEND_ONLY}


def chain_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """sha256 of the previous hash and the row's canonical JSON."""
    canonical = json.dumps({k: fields[k] for k in AUDIT_FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditProblem:
    row_id: int
    reason: str


DEFAULT_BUSY_TIMEOUT_S = 30.0


def is_busy(exc: BaseException) -> bool:
    """SQLite's "database is locked/busy": another connection holds the write lock (worth waiting for,
    unlike a read-only or missing database)."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def make_engine(url: str, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": busy_timeout_s})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL keeps this durable across a crash of the process
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


ADDED_COLUMNS = (ApiKey.__table__.c.expires_at,)
"""Columns added after the first release: `create_all` makes missing tables, not missing columns,
so a database from before them gets each one added (nullable, so old rows keep their meaning)."""
ADDED_INDEXES = ("CREATE INDEX IF NOT EXISTS ix_audit_at ON audit (at)",)
"""Likewise for indexes (the monitor counts the last hour of the audit log by `at`)."""


def _add_missing_columns(engine: Engine) -> None:
    with engine.begin() as conn:
        for statement in ADDED_INDEXES:
            conn.execute(text(statement))
    for column in ADDED_COLUMNS:
        table = column.table.name
        if column.name in {c["name"] for c in inspect(engine).get_columns(table)}:
            continue
        kind = column.type.compile(dialect=engine.dialect)
        try:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}"))
        except (OperationalError, ProgrammingError):
            # Another process starting on the same database added it first: that is the goal.
            if column.name not in {c["name"] for c in inspect(engine).get_columns(table)}:
                raise


class Store:
    """Every read and write the service and its commands make."""

    def __init__(self, url: str, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.busy_timeout_s = busy_timeout_s
        self.engine = make_engine(url, busy_timeout_s)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._audit_lock = threading.Lock()
        Base.metadata.create_all(self.engine)
        _add_missing_columns(self.engine)
        with self.engine.begin() as conn:  # the database itself refuses to edit or delete audit rows
            for statement in _APPEND_ONLY.get(self.engine.dialect.name, ()):
                conn.execute(text(statement))

    def close(self) -> None:
        self.engine.dispose()

    def check_writable(self) -> None:
        """Raise unless the database takes a write (readiness); the write matches no row and is rolled back."""
        with self.engine.connect() as conn:
            trans = conn.begin()
            try:
                # Matches no row (and is rolled back); plain text, as PostgreSQL refuses NUL characters.
                probe = ActiveModel.__table__.update().where(ActiveModel.name == "cnnlab readiness probe")
                conn.execute(probe.values(version=""))
            finally:
                trans.rollback()

    # ------------------------------------------------------------------ keys
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

    # ------------------------------------------------------------------ predictions and review
    def add_prediction(self, row: PredictionRow, review_reasons: list[str]) -> None:
        with self.sessions.begin() as s:
            s.add(row)
            if review_reasons:
                s.flush()  # the review item's foreign key needs the prediction first
                s.add(ReviewItem(request_id=row.request_id, reasons=",".join(review_reasons)))

    def prediction(self, request_id: str) -> PredictionRow | None:
        with self.sessions() as s:
            return s.get(PredictionRow, request_id)

    def add_feedback(self, row: FeedbackRow) -> FeedbackRow:
        with self.sessions.begin() as s:
            s.add(row)
        return row

    def feedback_for(self, request_id: str) -> list[FeedbackRow]:
        """Every feedback row on one prediction, oldest first (review resolutions included)."""
        with self.sessions() as s:
            query = select(FeedbackRow).where(FeedbackRow.request_id == request_id).order_by(FeedbackRow.id)
            return list(s.scalars(query))

    def review_queue(self, limit: int = 50) -> list[tuple[ReviewItem, PredictionRow]]:
        with self.sessions() as s:
            query = (
                select(ReviewItem, PredictionRow)
                .join(PredictionRow, PredictionRow.request_id == ReviewItem.request_id)
                .where(ReviewItem.status == "pending")
                .order_by(ReviewItem.created_at, ReviewItem.id)
                .limit(limit)
            )
            return [(item, pred) for item, pred in s.execute(query).all()]

    def pending_reviews(self) -> int:
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).where(ReviewItem.status == "pending")) or 0)

    def review_item(self, item_id: int) -> tuple[ReviewItem, PredictionRow] | None:
        with self.sessions() as s:
            item = s.get(ReviewItem, item_id)
            if item is None:
                return None
            pred = s.get(PredictionRow, item.request_id)
            assert pred is not None  # a foreign key
            return item, pred

    def resolve_review(
        self, item_id: int, reviewer: str | None, label: str | None, note: str, agrees: bool | None
    ) -> ReviewItem | None:
        """Mark a pending item resolved (None when it is not pending); a label also becomes feedback."""
        with self.sessions.begin() as s:
            item = s.get(ReviewItem, item_id, with_for_update=True)
            if item is None or item.status != "pending":
                return None
            item.status, item.resolved_by, item.resolved_at = "resolved", reviewer, utcnow()
            item.resolution_label, item.resolution_note = label, note
            if label is not None:
                pred = s.get(PredictionRow, item.request_id)
                assert pred is not None
                s.add(
                    FeedbackRow(
                        request_id=item.request_id,
                        reviewer=reviewer,
                        label=label,
                        agrees=bool(agrees),
                        note=note,
                        image_file=pred.image_file,
                    )
                )
            return item

    def feedback_for_export(self) -> list[tuple[FeedbackRow, PredictionRow]]:
        """The latest feedback per request, oldest request first."""
        with self.sessions() as s:
            rows = s.execute(
                select(FeedbackRow, PredictionRow)
                .join(PredictionRow, PredictionRow.request_id == FeedbackRow.request_id)
                .order_by(FeedbackRow.id)
            ).all()
            latest: dict[str, tuple[FeedbackRow, PredictionRow]] = {}
            for fb, pred in rows:
                latest[fb.request_id] = (fb, pred)
            return list(latest.values())

    # ------------------------------------------------------------------ activity over time
    def requests_per_minute(self, since: datetime) -> list[tuple[str, str, int]]:
        """(UTC minute as 'YYYY-MM-DDTHH:MM', outcome, requests) from the audit log since `since`."""
        minute = func.substr(AuditRow.at, 1, MINUTE_CHARS)  # `at` is ISO text: its first 16 characters
        query = (
            select(minute, AuditRow.outcome, func.count())
            .where(AuditRow.at >= since.astimezone(UTC).isoformat(timespec="microseconds"))
            .group_by(minute, AuditRow.outcome)
        )
        with self.sessions() as s:
            return [(str(m), str(o), int(n)) for m, o, n in s.execute(query)]

    def predictions_per_minute(self, since: datetime, model_name: str) -> list[tuple[str, str, int]]:
        """(UTC minute as 'YYYY-MM-DDTHH:MM', label, predictions) of one model name since `since`."""
        column, dialect = PredictionRow.created_at, self.engine.dialect.name
        recent = (PredictionRow.created_at >= since) & (PredictionRow.model_name == model_name)
        # Grouped in SQL where the dialect can truncate to the minute: an hour of heavy traffic then
        # crosses the wire as 60 x classes rows, not row by row.
        if dialect == "sqlite":
            minute = func.strftime("%Y-%m-%dT%H:%M", column)
        elif dialect == "postgresql":
            minute = func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI')
        else:
            with self.sessions() as s:
                counts = Counter(
                    (as_utc(at).strftime(MINUTE_FORMAT), label)
                    for at, label in s.execute(select(column, PredictionRow.label).where(recent))
                )
            return [(m, label, n) for (m, label), n in counts.items()]
        query = select(minute, PredictionRow.label, func.count()).where(recent).group_by(minute, PredictionRow.label)
        with self.sessions() as s:
            return [(str(m), str(label), int(n)) for m, label, n in s.execute(query)]

    # ------------------------------------------------------------------ models
    def activation(self, name: str) -> str | None:
        with self.sessions() as s:
            row = s.get(ActiveModel, name)
            return row.version if row else None

    def set_activation(self, name: str, version: str, by: str | None) -> None:
        with self.sessions.begin() as s:
            row = s.get(ActiveModel, name)
            if row is None:
                s.add(ActiveModel(name=name, version=version, activated_by=by))
            else:
                row.version, row.activated_by, row.activated_at = version, by, utcnow()

    # ------------------------------------------------------------------ audit
    def append_audit(self, **fields: Any) -> AuditRow:
        """Append one row to the hash chain; `fields` are AUDIT_FIELDS less `at`."""
        values = {k: fields.get(k) for k in AUDIT_FIELDS}
        values["at"] = utcnow().isoformat(timespec="microseconds")
        # A lock held by another connection is waited for once (each attempt already waits the busy
        # timeout); only races are retried, so a stuck writer costs a request one timeout, not twenty.
        deadline = time.monotonic() + self.busy_timeout_s
        with self._audit_lock:  # one appender per process; other processes lose the unique race and retry
            for attempt in range(20):
                try:
                    with self.sessions.begin() as s:
                        head = s.scalar(select(AuditRow.row_hash).order_by(AuditRow.id.desc()).limit(1))
                        prev = head or GENESIS
                        row = AuditRow(**values, prev_hash=prev, row_hash=chain_hash(prev, values))
                        s.add(row)
                    return row
                except IntegrityError:
                    if attempt == 19:
                        raise
                except OperationalError as exc:
                    if attempt == 19 or not is_busy(exc) or time.monotonic() > deadline:
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
