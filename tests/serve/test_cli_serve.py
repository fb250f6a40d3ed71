"""`cnnlab serve`, `keys`, `audit verify` and `feedback export` from the command line."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

from fastapi.testclient import TestClient

from cnnlab.serve.app import create_app
from tests.serve.conftest import Service, png_bytes
from tests.test_cli import run_cli


def test_keys_create_list_revoke(settings, capsys, monkeypatch) -> None:
    state = ["--state-dir", str(settings.state_dir)]
    code, out, err = run_cli(["keys", "create", "--role", "clinician", "--name", "dr-who", *state], capsys, monkeypatch)
    assert code == 0 and "shown once" in err
    key = out.strip()
    key_id = key[:12]  # "cnl_" and 8 hex digits
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/review-queue", headers={"X-API-Key": key}).status_code == 200
    raw = (settings.state_dir / "serve.db").read_bytes()
    assert key.encode() not in raw  # only the hash is stored
    code, out, _ = run_cli(["keys", "list", *state], capsys, monkeypatch)
    assert code == 0 and key_id in out and "clinician" in out and "dr-who" in out and key not in out
    code, out, _ = run_cli(["keys", "revoke", key_id, *state], capsys, monkeypatch)
    assert code == 0 and f"revoked {key_id}" in out
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/review-queue", headers={"X-API-Key": key}).status_code == 401
    code, _, err = run_cli(["keys", "revoke", key_id, *state], capsys, monkeypatch)
    assert code == 2 and "no active key" in err
    code, _, err = run_cli(["keys", "create", "--role", "superuser", *state], capsys, monkeypatch)
    assert code == 2 and "viewer, clinician, admin" in err


def test_commands_refuse_a_state_dir_without_database(tmp_path, capsys, monkeypatch) -> None:
    code, _, err = run_cli(["audit", "verify", "--state-dir", str(tmp_path / "none")], capsys, monkeypatch)
    assert code == 2 and "no service database" in err


def test_audit_verify(service: Service, capsys, monkeypatch) -> None:
    state = ["--state-dir", str(service.app.state.settings.state_dir)]
    for _ in range(3):
        service.client.get("/v1/models", headers=service.headers("viewer"))
    code, out, _ = run_cli(["audit", "verify", *state], capsys, monkeypatch)
    assert code == 0 and "intact: 3 rows" in out
    conn = sqlite3.connect(service.app.state.settings.state_dir / "serve.db")
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("DELETE FROM audit WHERE id = (SELECT min(id) FROM audit)")
    conn.commit()
    conn.close()
    code, _, err = run_cli(["audit", "verify", *state], capsys, monkeypatch)
    assert code == 1 and "tampered" in err and "deleted" in err


def test_feedback_export_is_a_class_folder_dataset(service: Service, tmp_path, capsys, monkeypatch) -> None:
    labels = ["3", "7", "7"]
    for seed, label in enumerate(labels):
        request_id = service.predict(png_bytes(seed)).json()["request_id"]
        sent = service.client.post(
            "/v1/feedback", json={"request_id": request_id, "label": label, "note": "Mr Smith, bed 4"},
            headers=service.headers("clinician"),
        )  # fmt: skip
        assert sent.status_code == 200
    out = tmp_path / "feedback-data"
    state = ["--state-dir", str(service.app.state.settings.state_dir)]
    code, stdout, _ = run_cli(["feedback", "export", "--out", str(out), *state], capsys, monkeypatch)
    assert code == 0 and "exported 3" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["3", "7", "metadata.csv"]
    assert len(list((out / "7").glob("*.png"))) == 2
    with open(out / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["label"] for r in rows) == labels and all((out / r["file"]).is_file() for r in rows)
    assert "Smith" not in (out / "metadata.csv").read_text()  # free-text notes stay in the database

    from cnnlab.data.folder import scan_folder

    manifest = scan_folder(out)
    assert sorted(e.label for e in manifest.entries if e.status == "ok") == labels
    code, _, err = run_cli(["feedback", "export", "--out", str(out), *state], capsys, monkeypatch)
    assert code == 2 and "not empty" in err


def test_serve_binds_loopback_and_passes_tls(trained_bundle: Path, tmp_path, capsys, monkeypatch) -> None:
    import uvicorn

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    state = ["--state-dir", str(tmp_path / "state")]
    code, _, err = run_cli(["serve", str(trained_bundle), *state], capsys, monkeypatch)
    assert code == 0 and seen["host"] == "127.0.0.1" and seen["port"] == 8000 and seen["ssl_certfile"] is None
    assert "tiny@" in err and "http://127.0.0.1:8000" in err
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    args = [
        "serve",
        str(trained_bundle),
        *state,
        "--port",
        "8443",
        "--ssl-certfile",
        str(cert),
        "--ssl-keyfile",
        str(key),
    ]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 0 and seen["ssl_certfile"] == str(cert) and seen["ssl_keyfile"] == str(key) and "https://" in err
    code, _, err = run_cli(["serve", str(trained_bundle), *state, "--ssl-certfile", str(cert)], capsys, monkeypatch)
    assert code == 2 and "go together" in err
    code, _, err = run_cli(["serve", str(tmp_path / "missing"), *state], capsys, monkeypatch)
    assert code == 2 and "no run directory" in err
    code, _, err = run_cli(["serve", str(trained_bundle), *state, "--review-threshold", "3"], capsys, monkeypatch)
    assert code == 2 and "review-threshold" in err


def test_serve_refuses_a_busy_port_before_saying_it_serves(trained_bundle: Path, tmp_path, capsys, monkeypatch) -> None:
    import socket

    import uvicorn

    def must_not_start(app, **kw) -> None:
        raise AssertionError("uvicorn must not start on a busy port")

    monkeypatch.setattr(uvicorn, "run", must_not_start)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        args = ["serve", str(trained_bundle), "--port", str(port), "--state-dir", str(tmp_path / "state")]
        code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and "serving" not in err


def test_serve_names_the_role_a_key_needs_and_takes_a_rate_limit(
    trained_bundle: Path, tmp_path, capsys, monkeypatch
) -> None:
    import uvicorn

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app))
    args = ["serve", str(trained_bundle), "--rate-limit", "7", "--state-dir", str(tmp_path / "state")]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 0 and "cnnlab keys create --role clinician" in " ".join(err.split())
    assert seen["app"].state.settings.rate_limit_per_minute == 7
