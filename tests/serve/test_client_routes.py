"""The routes a client page needs: who a key is (/v1/me), key expiry, a prediction's kept image and
its explanation by any CAM method, the feedback on a prediction, and counts per minute in /v1/monitor."""

from __future__ import annotations

import base64
import io
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab.explain.cam import METHODS
from cnnlab.serve.app import create_app
from cnnlab.serve.monitor import ACTIVITY_MINUTES, activity
from cnnlab.serve.security import Role, create_key
from cnnlab.serve.settings import ServeSettings
from cnnlab.serve.store import Store, utcnow
from tests.serve.conftest import OVERRIDE, Service, png_bytes
from tests.serve.test_limits import small_upload_service
from tests.test_cli import run_cli


def _png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _predict(service: Service, seed: int = 3, query: str = "") -> dict:
    answer = service.predict(png_bytes(seed), query=query)
    assert answer.status_code == 200, answer.text
    return answer.json()


# ------------------------------------------------------------------ /v1/me and key expiry
def test_me_names_the_key_its_role_and_the_cam_methods(service: Service) -> None:
    for role in ("viewer", "clinician", "admin"):
        me = service.client.get("/v1/me", headers=service.headers(role))
        assert me.status_code == 200, me.text
        body = me.json()
        assert body["role"] == role and body["name"] == f"test-{role}" and body["key_id"].startswith("cnl_")
        assert body["key_id"] in service.keys[role] and body["expires_at"] is None
        assert body["roles"] == ["viewer", "clinician", "admin"]
        assert body["explain_methods"] == list(METHODS)
    audit = [r for r in service.app.state.store.audit_rows() if r.route == "/v1/me"]
    assert [(r.role, r.status) for r in audit] == [("viewer", 200), ("clinician", 200), ("admin", 200)]


def test_me_refuses_missing_wrong_and_revoked_keys(service: Service) -> None:
    assert service.client.get("/v1/me").status_code == 401
    wrong = service.client.get("/v1/me", headers={"X-API-Key": "cnl_00000000_not-a-real-key"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid or revoked API key"
    store = service.app.state.store
    key_id, key = create_key(store, Role.viewer, "leaver")
    assert store.revoke_key(key_id)
    assert service.client.get("/v1/me", headers={"X-API-Key": key}).status_code == 401


def test_an_expired_key_is_refused_and_a_valid_one_shows_its_expiry(service: Service) -> None:
    store = service.app.state.store
    _, expired = create_key(store, Role.admin, "old", expires_at=utcnow() - timedelta(seconds=1))
    for path in ("/v1/me", "/v1/models", "/v1/review-queue"):
        answer = service.client.get(path, headers={"X-API-Key": expired})
        assert answer.status_code == 401 and answer.json()["detail"].startswith("API key expired"), answer.text
    until = utcnow() + timedelta(days=2)
    _, valid = create_key(store, Role.viewer, "temp", expires_at=until)
    me = service.client.get("/v1/me", headers={"X-API-Key": valid}).json()
    assert me["expires_at"].startswith(until.strftime("%Y-%m-%dT%H:%M"))


def test_keys_create_expires_in(settings: ServeSettings, capsys, monkeypatch) -> None:
    state = ["--state-dir", str(settings.state_dir)]
    code, out, err = run_cli(["keys", "create", "--role", "viewer", "--expires-in", "30", *state], capsys, monkeypatch)
    assert code == 0 and "valid until" in err
    key = out.strip()
    with TestClient(create_app(settings)) as client:
        me = client.get("/v1/me", headers={"X-API-Key": key}).json()
    assert me["role"] == "viewer" and me["expires_at"] is not None
    code, out, _ = run_cli(["keys", "list", *state], capsys, monkeypatch)
    assert code == 0 and "active, expires" in out
    code, _, err = run_cli(["keys", "create", "--role", "viewer", "--expires-in", "0", *state], capsys, monkeypatch)
    assert code == 2 and "--expires-in must be a positive number of days" in err


def test_a_database_from_before_key_expiry_keeps_working(settings: ServeSettings) -> None:
    """A state directory made by an earlier release has no expires_at column, no audit indexes and no
    migration version table: the service adds them at startup, and the keys in it still work."""
    settings.state_dir.mkdir(parents=True)
    store = Store(settings.database_url())
    _, key = create_key(store, Role.clinician, "from-before")
    store.close()
    db = settings.state_dir / "serve.db"
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE alembic_version")
        conn.execute("DROP INDEX ix_audit_at")
        conn.execute("DROP INDEX ix_audit_key_at")
        conn.execute("ALTER TABLE api_keys DROP COLUMN expires_at")
        assert "expires_at" not in {row[1] for row in conn.execute("PRAGMA table_info(api_keys)")}
    with TestClient(create_app(settings)) as client:
        me = client.get("/v1/me", headers={"X-API-Key": key})
        assert me.status_code == 200 and me.json()["expires_at"] is None
    with sqlite3.connect(db) as conn:
        assert "expires_at" in {row[1] for row in conn.execute("PRAGMA table_info(api_keys)")}
        for index in ("ix_audit_at", "ix_audit_key_at"):
            assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (index,)).fetchone() == (1,)


# ------------------------------------------------------------------ the kept image
def test_prediction_image_is_the_decoded_upload(service: Service) -> None:
    sent = png_bytes(5)
    request_id = _predict(service, 5)["request_id"]
    answer = service.client.get(f"/v1/predictions/{request_id}/image", headers=service.headers("clinician"))
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert "no-store" in answer.headers["cache-control"]
    kept = np.asarray(Image.open(io.BytesIO(answer.content)))
    assert np.array_equal(kept, np.asarray(Image.open(io.BytesIO(sent))))
    audit = [r for r in service.app.state.store.audit_rows() if r.route.endswith("/image")]
    assert [(r.status, r.model_version) for r in audit] == [(200, service.app.state.models.active("tiny").version)]


def test_prediction_image_not_found(service: Service) -> None:
    headers = service.headers("clinician")
    missing = service.client.get("/v1/predictions/nope/image", headers=headers)
    assert missing.status_code == 404 and "no prediction with request id 'nope'" in missing.json()["detail"]
    request_id = _predict(service)["request_id"]
    kept = service.app.state.settings.images_dir / service.app.state.store.prediction(request_id).image_file
    kept.unlink()
    gone = service.client.get(f"/v1/predictions/{request_id}/image", headers=headers)
    assert gone.status_code == 404 and "no longer kept" in gone.json()["detail"]


# ------------------------------------------------------------------ explanations after the fact
def test_explanation_matches_the_one_made_with_the_prediction(service: Service) -> None:
    predicted = _predict(service, 4, "?explain=gradcam")
    url = f"/v1/predictions/{predicted['request_id']}/explanation"
    answer = service.client.get(url, headers=service.headers("clinician"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["method"] == "gradcam" and body["label"] == predicted["label"]
    assert body["model"] == predicted["model"]
    # Same model, same pixels, same class: the same picture as predict drew.
    assert body["overlay_png_base64"] == predicted["explanation"]["overlay_png_base64"]
    assert body["heatmap_png_base64"] == predicted["explanation"]["heatmap_png_base64"]
    heat, over = _png(body["heatmap_png_base64"]), _png(body["overlay_png_base64"])
    assert heat.size == over.size == (28, 28) and heat.mode == over.mode == "RGB"
    # The heat map alone has the colours without the image: blending it at the overlay's alpha gives the overlay.
    grey = np.asarray(Image.open(io.BytesIO(png_bytes(4))), dtype=np.float64)[..., None]
    blended = (grey * 0.55 + np.asarray(heat, dtype=np.float64) * 0.45).round()
    assert np.abs(blended - np.asarray(over, dtype=np.float64)).max() <= 2


def test_explanation_by_every_method(service: Service) -> None:
    request_id = _predict(service)["request_id"]
    pictures = set()
    for method in METHODS:
        answer = service.client.get(
            f"/v1/predictions/{request_id}/explanation", params={"method": method}, headers=service.headers("admin")
        )
        assert answer.status_code == 200 and answer.json()["method"] == method, (method, answer.text)
        pictures.add(answer.json()["heatmap_png_base64"])
    assert len(pictures) > 1  # the method really changes the map


def test_gradcampp_is_gradcam_plus_plus_without_url_encoding(service: Service) -> None:
    """A '+' in a query string is a space, so `?explain=gradcam++` never named Grad-CAM++: `gradcampp` does."""
    headers = service.headers("clinician")
    predicted = _predict(service, 6, "?explain=gradcampp")
    assert predicted["explanation"]["method"] == "gradcam++"
    url = f"/v1/predictions/{predicted['request_id']}/explanation"
    again = service.client.get(url, params={"method": "gradcampp"}, headers=headers)
    assert again.status_code == 200 and again.json()["method"] == "gradcam++"
    encoded = service.client.get(f"{url}?method=gradcam%2B%2B", headers=headers).json()
    assert (
        encoded["heatmap_png_base64"]
        == again.json()["heatmap_png_base64"]
        == predicted["explanation"]["heatmap_png_base64"]
    )
    unencoded = service.predict(png_bytes(6), query="?explain=gradcam++")
    detail = unencoded.json()["detail"]
    assert unencoded.status_code == 422 and "gradcam++ (or gradcampp)" in detail and "'+' in a URL is a space" in detail
    schema = service.client.get("/openapi.json", headers=service.headers("viewer")).json()
    for path in ("/v1/predict", "/v1/predictions/{request_id}/explanation"):
        operation = next(iter(schema["paths"][path].values()))
        described = " ".join(p.get("description", "") for p in operation["parameters"])
        assert "gradcam++ (or gradcampp)" in described, path


def test_explanation_refuses_an_unknown_method_and_prediction(service: Service) -> None:
    headers = service.headers("clinician")
    request_id = _predict(service)["request_id"]
    bad = service.client.get(f"/v1/predictions/{request_id}/explanation?method=magic", headers=headers)
    assert bad.status_code == 422 and "gradcam" in bad.json()["detail"]
    missing = service.client.get("/v1/predictions/nope/explanation", headers=headers)
    assert missing.status_code == 404


def test_explanation_of_a_version_no_longer_served_is_404(settings: ServeSettings, second_version: Path) -> None:
    with TestClient(create_app(settings)) as client:
        service = Service(client)
        request_id = _predict(service)["request_id"]
        keys = service.keys
    both = settings.model_copy(update={"runs": [*settings.runs, second_version]})
    with TestClient(create_app(both)) as client:  # v2 goes live, so a start with v2 alone is allowed
        v2 = next(m for m in client.app.state.models.all() if m.run_dir == second_version).version
        body = {"version": v2, "override_reason": OVERRIDE}
        assert (
            client.post("/v1/models/tiny/activate", json=body, headers={"X-API-Key": keys["admin"]}).status_code == 200
        )
    only_v2 = settings.model_copy(update={"runs": [second_version]})
    with TestClient(create_app(only_v2)) as client:
        answer = client.get(
            f"/v1/predictions/{request_id}/explanation", headers={"X-API-Key": keys["clinician"]}
        )  # fmt: skip
        assert answer.status_code == 404 and "no longer served" in answer.json()["detail"]
        image = client.get(f"/v1/predictions/{request_id}/image", headers={"X-API-Key": keys["clinician"]})
        assert image.status_code == 200  # the kept image does not depend on the model


def test_explanation_times_out_with_504(settings: ServeSettings) -> None:
    with small_upload_service(settings, request_timeout_s=0.5) as client:
        service = Service(client)
        request_id = _predict(service)["request_id"]
        model = service.app.state.models.active("tiny")
        release = threading.Event()
        real = model.classifier.explain

        def hung(*args: object, **kwargs: object) -> object:
            release.wait(30)
            return real(*args, **kwargs)

        model.classifier.explain = hung
        try:
            answer = client.get(f"/v1/predictions/{request_id}/explanation", headers=service.headers("clinician"))
            assert answer.status_code == 504 and "did not answer within 0.5 s" in answer.json()["detail"]
        finally:
            release.set()
        audit = [r for r in service.app.state.store.audit_rows() if r.route.endswith("/explanation")]
        assert [(r.status, r.outcome) for r in audit] == [(504, "timeout")]


# ------------------------------------------------------------------ feedback on one prediction
def test_feedback_of_a_prediction(service: Service) -> None:
    headers = service.headers("clinician")
    request_id = _predict(service)["request_id"]
    url = "/v1/feedback"
    assert service.client.get(url, params={"request_id": request_id}, headers=headers).json() == []
    for label in ("1", "7"):
        posted = service.client.post(url, json={"request_id": request_id, "label": label}, headers=headers)
        assert posted.status_code == 200, posted.text
    other = _predict(service, 9)["request_id"]
    service.client.post(url, json={"request_id": other, "label": "2"}, headers=headers)
    rows = service.client.get(url, params={"request_id": request_id}, headers=headers).json()
    assert [r["label"] for r in rows] == ["1", "7"] and {r["request_id"] for r in rows} == {request_id}
    assert rows[0]["id"] < rows[1]["id"] and rows[0]["reviewer"] in service.keys["clinician"]
    missing = service.client.get(url, params={"request_id": "nope"}, headers=headers)
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert service.client.get(url, headers=headers).status_code == 422  # request_id is required


# ------------------------------------------------------------------ counts over time
def test_monitor_counts_requests_and_predictions_per_minute(service: Service) -> None:
    labels = [_predict(service, seed)["label"] for seed in range(4)]
    service.client.get("/v1/models")  # refused: counted under its outcome
    report = service.client.get("/v1/monitor", headers=service.headers("viewer")).json()
    timeline = report["activity"]
    assert len(timeline["minutes"]) == ACTIVITY_MINUTES
    assert timeline["minutes"][-1] == utcnow().strftime("%Y-%m-%dT%H:%M")
    predictions = {label: sum(counts) for label, counts in timeline["predictions"].items()}
    assert predictions == {label: labels.count(label) for label in set(labels)}
    requests = {outcome: sum(counts) for outcome, counts in timeline["requests"].items()}
    assert requests["needs_review"] == 4 and requests["unauthenticated"] == 1
    assert all(len(counts) == ACTIVITY_MINUTES for counts in timeline["requests"].values())


def test_activity_window_leaves_older_minutes_out(service: Service) -> None:
    _predict(service)
    store, now = service.app.state.store, utcnow()
    assert sum(sum(c) for c in activity(store, "tiny", now=now)["predictions"].values()) == 1
    later = activity(store, "tiny", now=now + timedelta(minutes=ACTIVITY_MINUTES + 1))
    assert later["predictions"] == {} and later["requests"] == {}
    assert activity(store, "another-model", now=now)["predictions"] == {}
