"""The service on a real PostgreSQL server (Debian's `postgresql`, started by this test in a temporary
folder, listening on 127.0.0.1 only): the same store, the same append-only audit chain, the same API."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from cnnlab.evaluation.drift import MIN_RECENT
from cnnlab.serve.app import create_app
from cnnlab.serve.settings import ServeSettings
from cnnlab.serve.store import Base, Store, head_revision, schema_revision, utcnow
from tests.serve.conftest import Service, free_port, png_bytes, upload
from tests.serve.test_migrations import schema_differences, stores_started_at_once

INITDB = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def _as_postgres(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI runs as root, with the Debian package's `postgres` user.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if not INITDB:
        pytest.skip("PostgreSQL is not installed (Debian's postgresql package; `make test` installs it)")
    bin_dir = Path(INITDB[-1]).parent
    # Not under pytest's temporary root: that is private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="cnnlab-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    subprocess.run(
        _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "cnnlab", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen(
        _as_postgres([str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                      "-k", str(sockets), "-c", "fsync=off"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"postgresql+psycopg://cnnlab@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(
            [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
        ).returncode:
            assert server.poll() is None and time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:
    store = Store(postgres_url)
    with store.engine.begin() as conn:  # each test starts from empty tables
        conn.execute(text("ALTER TABLE audit DISABLE TRIGGER USER"))
        for table in reversed(Base.metadata.sorted_tables):  # children before parents
            conn.execute(table.delete())
        conn.execute(text("ALTER TABLE audit ENABLE TRIGGER USER"))
    yield store
    store.close()


def _audit(store: Store, n: int) -> None:
    for i in range(n):
        store.append_audit(request_id=f"r{i}", key_id=f"k{i}", role="viewer", method="GET", route="/v1/models",
                           model_version=None, input_sha256=None, outcome="ok", status=200)  # fmt: skip


def test_audit_chain_is_append_only_and_tamper_evident_on_postgres(pg_store: Store) -> None:
    _audit(pg_store, 5)
    assert pg_store.verify_audit() == (5, None)
    with pytest.raises(DBAPIError, match="append-only"), pg_store.engine.begin() as conn:
        conn.execute(text("UPDATE audit SET status = 500 WHERE id = (SELECT min(id) FROM audit)"))
    with pytest.raises(DBAPIError, match="append-only"), pg_store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit"))
    # An owner who disables the trigger can still edit; the chain then names the row.
    with pg_store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit DISABLE TRIGGER USER"))
        third = conn.execute(text("SELECT id FROM audit ORDER BY id OFFSET 2 LIMIT 1")).scalar_one()
        conn.execute(text("UPDATE audit SET status = 201 WHERE id = :id"), {"id": third})
        conn.execute(text("ALTER TABLE audit ENABLE TRIGGER USER"))
    _, problem = pg_store.verify_audit()
    assert problem is not None and problem.row_id == third and "edited" in problem.reason


def test_concurrent_appenders_keep_one_chain_on_postgres(postgres_url: str, pg_store: Store) -> None:
    stores = [Store(postgres_url) for _ in range(3)]  # three service processes on one database
    threads = [threading.Thread(target=_audit, args=(s, 15)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pg_store.verify_audit() == (45, None)
    for s in stores:
        s.close()


def test_the_api_runs_on_postgres(pg_store: Store, postgres_url: str, trained_bundle: Path, tmp_path: Path) -> None:
    settings = ServeSettings(runs=[trained_bundle], state_dir=tmp_path / "state", db_url=postgres_url)
    with TestClient(create_app(settings)) as client:
        service = Service(client)
        assert client.get("/readyz").status_code == 200
        predicted = service.predict(png_bytes(3))
        assert predicted.status_code == 200, predicted.text
        request_id = predicted.json()["request_id"]
        feedback = client.post(
            "/v1/feedback", json={"request_id": request_id, "label": "3", "agrees": False},
            headers=service.headers("clinician"),
        )  # fmt: skip
        assert feedback.status_code in (200, 201), feedback.text
        assert client.get("/v1/models", headers=service.headers("viewer")).status_code == 200
        assert client.get("/v1/me", headers=service.headers("viewer")).json()["role"] == "viewer"
        timeline = client.get("/v1/monitor", headers=service.headers("viewer")).json()["activity"]
        assert {label: sum(c) for label, c in timeline["predictions"].items()} == {predicted.json()["label"]: 1}
        predict_outcomes = [sum(timeline["requests"].get(o, [])) for o in ("predicted", "needs_review")]
        assert sum(predict_outcomes) == 1
    count, problem = pg_store.verify_audit()
    assert problem is None and count >= 6


def test_a_database_from_before_key_expiry_keeps_working_on_postgres(pg_store: Store, postgres_url: str) -> None:
    with pg_store.engine.begin() as conn:  # as an earlier release left it: before migrations, too
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("DROP INDEX ix_audit_key_at"))
        conn.execute(text("ALTER TABLE api_keys DROP COLUMN expires_at"))
    stores = [Store(postgres_url) for _ in range(2)]  # the second finds the column already added
    with pg_store.engine.connect() as conn:
        columns = conn.execute(text("SELECT column_name FROM information_schema.columns WHERE table_name = 'api_keys'"))
        assert "expires_at" in {row[0] for row in columns}
    for store in stores:
        store.close()


def test_the_migrated_schema_on_postgres_is_the_declared_one(pg_store: Store, postgres_url: str) -> None:
    assert schema_revision(pg_store.engine) == head_revision() and schema_differences(pg_store.engine) == []
    with pg_store.engine.begin() as conn:  # an earlier release's database, as several machines start on it
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("DROP INDEX ix_audit_at"))
        conn.execute(text("ALTER TABLE api_keys DROP COLUMN expires_at"))
    stores = stores_started_at_once(postgres_url, 4)  # they take turns on the advisory lock
    assert schema_revision(pg_store.engine) == head_revision() and schema_differences(pg_store.engine) == []
    for store in stores:
        store.close()


def test_the_clinical_loop_queries_run_on_postgres(
    pg_store: Store, postgres_url: str, trained_bundle: Path, second_version: Path, tmp_path: Path
) -> None:
    """Rollouts, shadow answers, embeddings, live accuracy per version and week, and the purge, in
    PostgreSQL's dialect (grouping by booleans, bytea, deletes across the tables a prediction owns)."""
    both = ServeSettings(runs=[trained_bundle, second_version], state_dir=tmp_path / "state", db_url=postgres_url)
    with TestClient(create_app(both)) as client:
        service = Service(client)
        admin = service.headers("admin")
        listed = client.get("/v1/models", headers=admin).json()
        candidate = next(m["version"] for m in listed if m["role"] != "active")
        shadow = client.post("/v1/models/tiny/rollout", json={"version": candidate, "mode": "shadow"}, headers=admin)
        assert shadow.status_code == 200, shadow.text
        for seed in range(MIN_RECENT):
            answer = client.post("/v1/predict", files=upload(png_bytes(seed)), data={"patient_id": f"P{seed}"},
                                 headers=service.headers("clinician"))  # fmt: skip
            assert answer.status_code == 200, answer.text
            client.post("/v1/feedback", json={"request_id": answer.json()["request_id"], "label": "3"},
                        headers=service.headers("clinician"))  # fmt: skip
        report = client.get("/v1/monitor", headers=admin).json()
        rows = {v["role"]: v for v in report["versions"]}
        assert rows["active"]["feedback"] == MIN_RECENT and rows["shadow"]["shadow_answers"] == MIN_RECENT
        assert rows["active"]["review_rate"] is not None and report["live"]["weeks"]
        assert report["drift"]["verdict"] in ("drifted", "not drifted")  # the embeddings came back from bytea
        assert "cnnlab_predictions_total{label=" in client.get("/metrics", headers=admin).text
    purged = pg_store.purge_before(utcnow() + timedelta(seconds=1))
    assert purged.predictions == MIN_RECENT and len(purged.image_files) == MIN_RECENT
    assert pg_store.labelled_cases("tiny") == [] and pg_store.verify_audit()[1] is None
