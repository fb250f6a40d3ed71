"""Faults around the service: a database locked by another writer, a database that takes no
writes, a model's weights removed while serving. (A hanging model is in test_limits.py.)"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from cnnlab.bundle.layout import WEIGHTS
from cnnlab.serve.app import create_app
from cnnlab.serve.settings import ServeSettings
from tests.serve.conftest import Service, png_bytes

BUSY_S = 0.5
"""The service's busy timeout here: long enough to outwait a short lock, short enough to keep the test fast."""


@pytest.fixture
def faulty(settings: ServeSettings) -> Iterator[Service]:
    app = create_app(settings.model_copy(update={"db_busy_timeout_s": BUSY_S}))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Service(client)


@contextmanager
def write_lock(db: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding SQLite's write lock (an open write transaction) until the block ends."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=5)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO active_models (name, version, activated_at) VALUES ('lock-holder', 'x', '2026-01-01')")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def kept_images(service: Service) -> list[Path]:
    return sorted(service.app.state.settings.images_dir.iterdir())


def test_locked_database_answers_503_after_the_busy_timeout(faulty: Service, caplog: pytest.LogCaptureFixture) -> None:
    db = faulty.app.state.settings.state_dir / "serve.db"
    assert faulty.predict(png_bytes(1)).status_code == 200
    with write_lock(db):
        start = time.perf_counter()
        response = faulty.predict(png_bytes(2))
        elapsed = time.perf_counter() - start
        # Reads still work under WAL: the key is checked, the model answers, only the write waits and gives up.
        assert response.status_code == 503, response.text
        assert "database is busy" in response.json()["detail"] and response.json()["request_id"]
        assert response.headers["retry-after"] == "1"
        assert "Traceback" not in response.text and "sqlite" not in response.text.lower()
        # The prediction write waits one busy timeout, and so does the audit write after it: not 20 of them.
        assert BUSY_S <= elapsed < 6 * BUSY_S + 3, elapsed
        assert len(kept_images(faulty)) == 1, "the refused prediction left its image behind"
        reads = faulty.client.get("/v1/review-queue", headers=faulty.headers("clinician"))
        assert reads.status_code == 200  # reads do not wait for the writer
    assert f"request {response.json()['request_id']}: the audit row could not be written" in caplog.text
    # Once the lock is gone everything works again and the audit chain is intact (the lost row is in the log).
    assert faulty.predict(png_bytes(3)).status_code == 200
    assert faulty.app.state.store.verify_audit()[1] is None
    assert faulty.client.get("/readyz").status_code == 200


def test_a_short_lock_is_waited_for(faulty: Service) -> None:
    db = faulty.app.state.settings.state_dir / "serve.db"
    result: dict[str, object] = {}
    with write_lock(db):
        worker = threading.Thread(target=lambda: result.update(r=faulty.predict(png_bytes(4))))
        worker.start()
        time.sleep(BUSY_S / 4)  # released well within the busy timeout
    worker.join(10)
    assert result["r"].status_code == 200  # type: ignore[union-attr]
    rows = [r for r in faulty.app.state.store.audit_rows() if r.route == "/v1/predict"]
    assert [r.status for r in rows] == [200]


def test_readiness_false_while_locked_for_longer_than_the_busy_timeout(faulty: Service) -> None:
    with write_lock(faulty.app.state.settings.state_dir / "serve.db"):
        down = faulty.client.get("/readyz")
    assert down.status_code == 503 and down.json()["detail"] == "the database does not take writes"
    assert faulty.client.get("/readyz").status_code == 200


def make_read_only(service: Service) -> Callable[[], None]:
    """Make the database file read-only; returns the undo. Root ignores file modes, so there SQLite's
    own switch refuses writes instead (the same SQLITE_READONLY error a read-only file gives)."""
    store = service.app.state.store
    db = service.app.state.settings.state_dir / "serve.db"
    if os.geteuid() != 0:
        mode = db.stat().st_mode
        db.chmod(0o444)  # the -wal and -shm files stay: SQLite then opens the database read-only

        def undo() -> None:
            db.chmod(mode)
            store.engine.dispose()

    else:

        def query_only(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            dbapi_conn.execute("PRAGMA query_only=ON")

        event.listen(store.engine, "connect", query_only)

        def undo() -> None:
            event.remove(store.engine, "connect", query_only)
            store.engine.dispose()

    store.engine.dispose()  # pooled connections were opened writable
    return undo


def test_read_only_database(faulty: Service) -> None:
    assert faulty.predict(png_bytes(5)).status_code == 200
    made = faulty.predict(png_bytes(6)).json()["request_id"]
    undo = make_read_only(faulty)
    try:
        ready = faulty.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["detail"] == "the database does not take writes"
        assert faulty.client.get("/healthz").status_code == 200  # alive, not ready
        start = time.perf_counter()
        response = faulty.predict(png_bytes(7))
        assert response.status_code == 503, response.text
        assert response.json()["detail"] == "the database does not take writes; nothing was stored"
        assert time.perf_counter() - start < 3  # nothing to wait for: not retried until a timeout
        assert len(kept_images(faulty)) == 2  # the refused one left no image
        feedback = faulty.client.post(
            "/v1/feedback", json={"request_id": made, "label": "1"}, headers=faulty.headers("clinician")
        )
        assert feedback.status_code == 503 and feedback.json()["request_id"]
        assert faulty.client.get("/v1/models", headers=faulty.headers("viewer")).status_code == 200  # reads work
    finally:
        undo()
    assert faulty.client.get("/readyz").status_code == 200
    assert faulty.predict(png_bytes(8)).status_code == 200
    assert faulty.app.state.store.verify_audit()[1] is None


def test_model_file_removed_while_serving(trained_bundle: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_bundle, run, ignore=shutil.ignore_patterns("checkpoints", "eval", "explain", "export"))
    settings = ServeSettings(runs=[run], state_dir=tmp_path / "state")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        service = Service(client)
        assert service.predict(png_bytes(9)).status_code == 200
        assert "warnings" not in client.get("/readyz").json()
        (run / WEIGHTS).unlink()
        # The weights live in memory: predictions (with a CAM) go on, and readiness stays true but says what is wrong.
        again = service.predict(png_bytes(9), query="?explain=gradcam")
        assert again.status_code == 200 and again.json()["explanation"]
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert any("weights file is gone" in w for w in ready.json()["warnings"])
        models = client.get("/v1/models", headers=service.headers("viewer"))
        assert models.status_code == 200
    # A restart then refuses to serve that bundle, with a message rather than a traceback.
    from cnnlab.errors import CnnlabError

    with pytest.raises(CnnlabError):
        create_app(settings)
