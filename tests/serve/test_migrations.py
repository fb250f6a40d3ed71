"""The service's schema by Alembic: a new database is built by the revisions, one from an earlier release
(no version table, columns and indexes missing) is adopted and upgraded with its rows intact, several
processes starting at once take turns, and a database from a newer cnnlab is refused with a message."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from cnnlab.errors import CnnlabError
from cnnlab.serve.security import Role, create_key, hash_key
from cnnlab.serve.store import BASELINE, Base, Store, alembic_config, head_revision, schema_revision


def schema_differences(engine: Engine) -> list[object]:
    """What Alembic's autogenerate would change to make the database match tables.py (nothing, we want)."""
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def first_release_database(url: str) -> None:
    """A database as the first release left it: the baseline's tables, no version table, one key."""
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), BASELINE)
        conn.execute(text("DROP TABLE alembic_version"))
        insert = (
            "INSERT INTO api_keys (key_id, key_sha256, name, role, created_at) VALUES (:id, :sha, 'old', 'viewer', :at)"
        )
        conn.execute(text(insert), {"id": "cnl_old", "sha": hash_key("cnl_old_secret"), "at": "2025-01-01 00:00:00"})
    engine.dispose()


def test_a_new_database_is_built_by_the_migrations(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'serve.db'}")
    try:
        assert schema_revision(store.engine) == head_revision() != BASELINE
        assert schema_differences(store.engine) == []
        store.append_audit(request_id="r", key_id=None, role=None, method="GET", route="/", model_version=None,
                           input_sha256=None, outcome="ok", status=200)  # fmt: skip
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text("UPDATE audit SET status = 500"))
    finally:
        store.close()
    assert [p.name for p in tmp_path.iterdir()] == ["serve.db"]  # no lock file or other leftover beside it


def test_a_database_from_the_first_release_is_upgraded_with_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    first_release_database(f"sqlite:///{db}")
    with sqlite3.connect(db) as conn:
        assert "expires_at" not in {row[1] for row in conn.execute("PRAGMA table_info(api_keys)")}
    store = Store(f"sqlite:///{db}")
    try:
        assert schema_revision(store.engine) == head_revision()
        assert schema_differences(store.engine) == []
        old = store.key_by_hash(hash_key("cnl_old_secret"))
        assert old is not None and old.expires_at is None and not old.expired()
        create_key(store, Role.clinician, "new")  # and the upgraded table takes new rows
    finally:
        store.close()


def test_a_database_that_already_had_the_later_columns_is_adopted(tmp_path: Path) -> None:
    """A release that added expires_at and the audit index by hand, before migrations: nothing is added twice."""
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)  # what those releases did at every start
    engine.dispose()
    store = Store(url)
    try:
        assert schema_revision(store.engine) == head_revision() and schema_differences(store.engine) == []
    finally:
        store.close()


def test_processes_starting_at_once_take_turns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    first_release_database(url)
    stores = stores_started_at_once(url, 4)
    assert schema_revision(stores[0].engine) == head_revision() and schema_differences(stores[0].engine) == []
    for store in stores:
        store.close()


def test_a_database_from_a_newer_cnnlab_is_refused_with_a_message(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    Store(url).close()
    with sqlite3.connect(tmp_path / "serve.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'f00d'")
    with pytest.raises(CnnlabError, match="newer cnnlab"):
        Store(url)


def test_every_revision_goes_down_and_up_again(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'serve.db'}")
    try:
        with store.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM sqlite_master WHERE name = 'api_keys'")).scalar() == 0
        with store.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        assert schema_differences(store.engine) == []
    finally:
        store.close()


def stores_started_at_once(url: str, count: int) -> list[Store]:
    """`count` stores opening one database at the same moment, as workers starting together do;
    every one must come up (the migration lock makes them take turns)."""
    errors: list[BaseException] = []
    stores: list[Store] = []

    def start() -> None:
        try:
            stores.append(Store(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(stores) == count
    return stores
