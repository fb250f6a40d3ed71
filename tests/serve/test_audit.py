"""The audit log: a row for every request, accepted or refused, in a hash chain that shows edits and deletions."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import DatabaseError

from cnnlab.serve.store import AuditRow, Store
from tests.serve.conftest import Service, png_bytes, sha256


def db_file(service: Service) -> str:
    return str(service.app.state.settings.state_dir / "serve.db")


def rows(service: Service) -> list[AuditRow]:
    return list(service.app.state.store.audit_rows())


def test_every_request_is_audited(service: Service) -> None:
    data = png_bytes(5)
    service.predict(data)  # accepted
    service.client.get("/v1/models")  # no key
    service.client.get("/v1/models", headers={"X-API-Key": "wrong"})  # bad key
    service.client.post("/v1/models/tiny/activate", json={"version": "x"}, headers=service.headers("viewer"))  # role
    service.client.get("/v1/nowhere", headers=service.headers("viewer"))  # no such route
    audit = rows(service)
    assert [(r.route, r.status, r.outcome) for r in audit] == [
        ("/v1/predict", 200, "needs_review"),
        ("/v1/models", 401, "unauthenticated"),
        ("/v1/models", 401, "unauthenticated"),
        ("/v1/models/{name}/activate", 403, "forbidden"),
        ("unmatched", 404, "not_found"),
    ]
    predicted = audit[0]
    assert predicted.input_sha256 == sha256(data) and predicted.role == "clinician"
    assert predicted.model_version == service.app.state.models.active("tiny").version
    assert audit[1].key_id is None and audit[3].role == "viewer" and audit[3].key_id.startswith("cnl_")
    assert len({r.request_id for r in audit}) == 5
    assert service.app.state.store.verify_audit() == (5, None)


def test_audit_rows_cannot_be_changed_through_the_database(service: Service) -> None:
    service.client.get("/healthz")
    conn = sqlite3.connect(db_file(service))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET status = 200")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit")
    conn.close()


def tamper(service: Service, statement: str) -> None:
    """What someone with the database file can do: drop the guard triggers, then change rows."""
    conn = sqlite3.connect(db_file(service))
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute(statement)
    conn.commit()
    conn.close()


def make_rows(service: Service, n: int) -> list[int]:
    for _ in range(n):
        service.client.get("/v1/models", headers=service.headers("viewer"))
    return [r.id for r in rows(service)]


def test_an_edited_row_is_found(service: Service) -> None:
    ids = make_rows(service, 4)
    tamper(service, f"UPDATE audit SET status = 500 WHERE id = {ids[2]}")
    _count, problem = service.app.state.store.verify_audit()
    assert problem is not None and problem.row_id == ids[2] and "edited" in problem.reason


def test_a_deleted_row_is_found(service: Service) -> None:
    ids = make_rows(service, 4)
    tamper(service, f"DELETE FROM audit WHERE id = {ids[1]}")
    _, problem = service.app.state.store.verify_audit()
    assert problem is not None and problem.row_id == ids[2] and "deleted" in problem.reason


def test_a_rewritten_hash_is_found(service: Service) -> None:
    ids = make_rows(service, 3)
    # Editing a row and recomputing its own hash still breaks the next row's link.
    from cnnlab.serve.store import AUDIT_FIELDS, chain_hash

    first = rows(service)[0]
    values = {k: getattr(first, k) for k in AUDIT_FIELDS} | {"status": 500}
    tamper(
        service,
        f"UPDATE audit SET status = 500, row_hash = '{chain_hash(first.prev_hash, values)}' WHERE id = {ids[0]}",
    )
    _, problem = service.app.state.store.verify_audit()
    assert problem is not None and problem.row_id == ids[1]


def test_concurrent_appends_keep_one_chain(tmp_path) -> None:
    import threading

    stores = [Store(f"sqlite:///{tmp_path / 'audit.db'}") for _ in range(3)]  # three "processes"

    def append(store: Store) -> None:
        for i in range(15):
            store.append_audit(request_id=str(i), method="GET", route="/x", outcome="ok", status=200)

    threads = [threading.Thread(target=append, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[0].verify_audit() == (45, None)
    with pytest.raises(DatabaseError):
        stores[0].engine.connect().exec_driver_sql("DELETE FROM audit")
    for s in stores:
        s.close()
