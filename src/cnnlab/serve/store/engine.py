"""Connecting to the database and bringing its schema up to date at start-up.

SQLite in the state directory by default (WAL, so readers never wait for the writer, and a busy
timeout, so concurrent writers queue instead of failing); any SQLAlchemy URL works the same."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import sessionmaker

from cnnlab.serve.store.tables import ActiveModel, ApiKey, Base

DEFAULT_BUSY_TIMEOUT_S = 30.0

ADDED_COLUMNS = (ApiKey.__table__.c.expires_at,)
"""Columns added after the first release: `create_all` makes missing tables, not missing columns,
so a database from before them gets each one added (nullable, so old rows keep their meaning)."""
ADDED_INDEXES = ("CREATE INDEX IF NOT EXISTS ix_audit_at ON audit (at)",)
"""Likewise for indexes (the monitor counts the last hour of the audit log by `at`)."""

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


def migrate(engine: Engine) -> None:
    """Create what is missing (tables, later columns and indexes) and make the audit log append-only;
    safe to run on every start, by several processes at once."""
    Base.metadata.create_all(engine)
    _add_missing_columns(engine)
    with engine.begin() as conn:  # the database itself refuses to edit or delete audit rows
        for statement in _APPEND_ONLY.get(engine.dialect.name, ()):
            conn.execute(text(statement))


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


class Database:
    """A migrated database and its sessions: what every group of queries in this package works on."""

    def __init__(self, url: str, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.busy_timeout_s = busy_timeout_s
        self.engine = make_engine(url, busy_timeout_s)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        migrate(self.engine)

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
