"""Connecting to the database and bringing its schema up to date at start-up.

SQLite in the state directory by default (WAL, so readers never wait for the writer, and a busy
timeout, so concurrent writers queue instead of failing); any SQLAlchemy URL works the same. The
schema's history is Alembic's (migrations/versions/), applied by `migrate` on every start."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from cnnlab.errors import CnnlabError
from cnnlab.serve.store.tables import ActiveModel, ApiKey

try:
    import fcntl
except ImportError:  # Windows: SQLite's own locking is all there is
    fcntl = None  # type: ignore[assignment]

DEFAULT_BUSY_TIMEOUT_S = 30.0

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"
"""The first release's schema: what a database made before migrations existed is taken to hold."""
VERSION_TABLE = "alembic_version"
_POSTGRES_LOCK = 0x636E6E6C6162  # "cnnlab": one advisory lock id for every migrating process


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


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration, built here (no alembic.ini): the revisions inside this package, run on `connection`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision. A database made before migrations existed (tables but
    no version table) is first stamped at the baseline; the later revisions add what it lacks. Safe on
    every start, by several processes at once: they take turns (a file lock beside a SQLite database,
    an advisory lock on PostgreSQL), and the later ones find nothing to do."""
    with _sqlite_file_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # held to the end of this transaction
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _POSTGRES_LOCK})
        config = alembic_config(conn)
        tables = set(inspect(conn).get_table_names())
        if VERSION_TABLE not in tables and ApiKey.__tablename__ in tables:
            command.stamp(config, BASELINE)
        try:
            command.upgrade(config, "head")
        except CommandError as exc:
            # Typically a revision this cnnlab does not know: a newer release migrated the database.
            raise CnnlabError(
                f"the service database's schema is not one this cnnlab knows ({exc}); "
                "was it upgraded by a newer cnnlab? Run that version, or restore a backup"
            ) from None


def head_revision() -> str:
    """The newest revision this cnnlab knows: where `migrate` takes every database."""
    return str(ScriptDirectory(str(MIGRATIONS)).get_current_head())


def schema_revision(engine: Engine) -> str | None:
    """The revision the database is at (None before any migration)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive lock on the SQLite database's folder while migrating: SQLite has no advisory locks,
    and its own write lock would be let go between Alembic's statements. The folder, not a lock file:
    nothing new appears in the state directory, and a read-only one (an auditor's copy) still opens."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if fcntl is None or not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    try:
        folder = os.open(Path(database).resolve().parent, os.O_RDONLY)
    except OSError:  # no such folder: connecting fails next, with SQLite's own message
        yield
        return
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # closing lets go of the lock


class Database:
    """A migrated database and its sessions: what every group of queries in this package works on."""

    def __init__(self, url: str, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.busy_timeout_s = busy_timeout_s
        self.engine = make_engine(url, busy_timeout_s)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            migrate(self.engine)
        except BaseException:
            self.engine.dispose()
            raise

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
