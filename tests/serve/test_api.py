"""Every endpoint: success, not found, and not allowed (missing key, wrong key, too small a role)."""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab.serve.app import create_app
from cnnlab.serve.settings import ServeSettings
from cnnlab.serve.store import FeedbackRow, PredictionRow, ReviewItem
from tests.serve.conftest import OVERRIDE, Service, png_bytes, sha256, upload

# (method, path, least role); bodies that pass authorisation are not the point here.
ROUTES = [
    ("GET", "/v1/models", "viewer"),
    ("POST", "/v1/models/tiny/activate", "admin"),
    ("POST", "/v1/predict", "clinician"),
    ("POST", "/v1/feedback", "clinician"),
    ("GET", "/v1/review-queue", "clinician"),
    ("POST", "/v1/review-queue/999/resolve", "clinician"),
    ("GET", "/v1/me", "viewer"),
    ("GET", "/v1/predictions/nope/image", "clinician"),
    ("GET", "/v1/predictions/nope/explanation", "clinician"),
    ("GET", "/v1/feedback?request_id=nope", "clinician"),
    ("GET", "/metrics", "viewer"),
    ("GET", "/openapi.json", "viewer"),
    ("GET", "/docs", "viewer"),
]
ORDER = ["viewer", "clinician", "admin"]


def call(service: Service, method: str, path: str, role: str | None, key: str | None = None):
    headers = {"X-API-Key": key} if key is not None else service.headers(role)
    if path == "/v1/predict":
        return service.client.post(path, files=upload(png_bytes()), headers=headers)
    if path == "/v1/feedback":
        return service.client.post(path, json={"request_id": "nope", "label": "1"}, headers=headers)
    if path.endswith("/activate"):
        version = service.app.state.models.active("tiny").version
        return service.client.post(path, json={"version": version, "override_reason": OVERRIDE}, headers=headers)
    if method == "POST":
        return service.client.post(path, json={}, headers=headers)
    return service.client.get(path, headers=headers)


@pytest.mark.parametrize(("method", "path", "least"), ROUTES)
def test_role_matrix(service: Service, method: str, path: str, least: str) -> None:
    missing = call(service, method, path, None)
    assert missing.status_code == 401 and missing.json()["request_id"]
    wrong = call(service, method, path, None, key="cnl_00000000_not-a-real-key")
    assert wrong.status_code == 401
    for role in ORDER:
        status = call(service, method, path, role).status_code
        if ORDER.index(role) < ORDER.index(least):
            assert status == 403, (role, status)
        else:
            assert status not in (401, 403), (role, status)


def test_health_and_readiness_are_public(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    assert service.client.get("/healthz").json() == {"status": "ok"}
    ready = service.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"] == {"tiny": service.app.state.models.active("tiny").version}

    def refuse() -> None:
        raise OSError("attempt to write a readonly database")

    monkeypatch.setattr(service.app.state.store, "check_writable", refuse)
    down = service.client.get("/readyz")
    assert down.status_code == 503 and "readonly" not in down.text


def test_unknown_route_is_404_with_request_id(service: Service) -> None:
    response = service.client.get("/v1/nothing-here", headers=service.headers("admin"))
    assert response.status_code == 404
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_revoked_key_is_refused(service: Service) -> None:
    key_id = service.app.state.store.key_by_hash(sha256(service.keys["viewer"].encode())).key_id
    assert service.client.get("/v1/models", headers=service.headers("viewer")).status_code == 200
    assert service.app.state.store.revoke_key(key_id)
    assert service.client.get("/v1/models", headers=service.headers("viewer")).status_code == 401


def test_predict_png(service: Service, trained_bundle: Path) -> None:
    data = png_bytes(1)
    response = service.predict(data)
    assert response.status_code == 200
    body = response.json()
    card = json.loads((trained_bundle / "model.json").read_text())
    assert body["model"] == {"name": "tiny", "version": card["weights_sha256"][:12], "sha256": card["weights_sha256"]}
    assert body["request_id"] == response.headers["x-request-id"]
    assert set(body["probabilities"]) == set(card["classes"])
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["confidence"] == pytest.approx(max(body["probabilities"].values()))
    assert body["needs_review"] and body["review_reasons"] == ["low_confidence"]  # threshold 1.0
    assert body["explanation"] is None
    store = service.app.state.store
    row = store.prediction(body["request_id"])
    assert row.input_sha256 == sha256(data) and row.key_id.startswith("cnl_") and row.label == body["label"]
    kept = Image.open(service.app.state.settings.images_dir / row.image_file)
    assert kept.size == (28, 28) and not kept.info  # decoded pixels, no metadata
    assert [p.request_id for _, p in store.review_queue()] == [body["request_id"]]


def test_predict_confident_enough_skips_review(settings: ServeSettings) -> None:
    with TestClient(create_app(settings.model_copy(update={"review_threshold": 0.0}))) as client:
        service = Service(client)
        body = service.predict(png_bytes(2)).json()
        assert body["needs_review"] is False and body["review_reasons"] == []
        assert client.get("/v1/review-queue", headers=service.headers("clinician")).json() == []


def test_predict_with_explanation(service: Service) -> None:
    body = service.predict(png_bytes(3), query="?explain=gradcam").json()
    assert body["explanation"]["method"] == "gradcam"
    picture = Image.open(io.BytesIO(base64.b64decode(body["explanation"]["overlay_png_base64"])))
    assert picture.format == "PNG" and picture.size == (28, 28) and picture.mode == "RGB"
    bad = service.predict(png_bytes(3), query="?explain=magic")
    assert bad.status_code == 422 and "gradcam" in bad.json()["detail"]


def test_predict_unknown_model_is_404(service: Service) -> None:
    response = service.predict(png_bytes(), query="?model=nonesuch")
    assert response.status_code == 404 and "nonesuch" in response.json()["detail"]


def test_feedback(service: Service) -> None:
    store = service.app.state.store
    predicted = service.predict(png_bytes(4)).json()
    other = next(c for c in predicted["probabilities"] if c != predicted["label"])
    response = service.client.post(
        "/v1/feedback",
        json={"request_id": predicted["request_id"], "label": other, "note": "looks like a seven"},
        headers=service.headers("clinician"),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["label"] == other and body["agrees"] is False and body["reviewer"].startswith("cnl_")
    with store.sessions() as s:
        row = s.get(FeedbackRow, body["id"])
        assert row.note == "looks like a seven" and row.image_file == store.prediction(body["request_id"]).image_file
    missing = service.client.post(
        "/v1/feedback", json={"request_id": "0" * 32, "label": other}, headers=service.headers("clinician")
    )
    assert missing.status_code == 404
    wrong_label = service.client.post(
        "/v1/feedback", json={"request_id": predicted["request_id"], "label": "cat"}, headers=service.headers("admin")
    )
    assert wrong_label.status_code == 422 and "classes" in wrong_label.json()["detail"]


def test_review_queue_oldest_first_and_resolve(service: Service) -> None:
    ids = [service.predict(png_bytes(seed)).json()["request_id"] for seed in (10, 11, 12)]
    queue = service.client.get("/v1/review-queue", headers=service.headers("clinician")).json()
    assert [entry["request_id"] for entry in queue] == ids
    assert queue[0]["reasons"] == ["low_confidence"] and queue[0]["model_name"] == "tiny"
    first = queue[0]
    resolved = service.client.post(
        f"/v1/review-queue/{first['id']}/resolve", json={"label": first["label"]}, headers=service.headers("clinician")
    )
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    assert resolved.json()["resolved_by"].startswith("cnl_")
    queue = service.client.get("/v1/review-queue", headers=service.headers("clinician")).json()
    assert [entry["request_id"] for entry in queue] == ids[1:]
    again = service.client.post(f"/v1/review-queue/{first['id']}/resolve", json={}, headers=service.headers("admin"))
    assert again.status_code == 409
    missing = service.client.post("/v1/review-queue/424242/resolve", json={}, headers=service.headers("admin"))
    assert missing.status_code == 404
    with service.app.state.store.sessions() as s:  # a label given on resolving becomes feedback too
        assert s.query(FeedbackRow).filter_by(request_id=ids[0]).one().agrees is True
        assert s.query(ReviewItem).filter_by(status="pending").count() == 2


def test_models_activate_and_rollback(settings: ServeSettings, trained_bundle: Path, second_version: Path) -> None:
    both = settings.model_copy(update={"runs": [trained_bundle, second_version]})
    with TestClient(create_app(both)) as client:
        service = Service(client)
        listed = client.get("/v1/models", headers=service.headers("viewer")).json()
        assert [m["name"] for m in listed] == ["tiny", "tiny"]
        old, new = listed[0]["version"], listed[1]["version"]
        assert old != new and [m["active"] for m in listed] == [False, True]  # the newest starts active
        assert service.predict(png_bytes()).json()["model"]["version"] == new
        # No gate folder here: activation is refused unless an admin overrides with a reason.
        refused = client.post("/v1/models/tiny/activate", json={"version": old}, headers=service.headers("admin"))
        assert refused.status_code == 409 and "override_reason" in refused.json()["detail"]
        assert service.predict(png_bytes()).json()["model"]["version"] == new
        too_short = {"version": old, "override_reason": "why"}
        assert (
            client.post("/v1/models/tiny/activate", json=too_short, headers=service.headers("admin")).status_code == 422
        )
        rollback = client.post(
            "/v1/models/tiny/activate",
            json={"version": old, "override_reason": OVERRIDE},
            headers=service.headers("admin"),
        )
        assert rollback.status_code == 200 and rollback.json()["active"] is True
        assert OVERRIDE in rollback.json()["reason"]
        assert service.predict(png_bytes()).json()["model"]["version"] == old
        assert (
            client.post(
                "/v1/models/tiny/activate", json={"version": "ffffffffffff"}, headers=service.headers("admin")
            ).status_code
            == 404
        )
        assert (
            client.post(
                "/v1/models/other/activate", json={"version": old}, headers=service.headers("admin")
            ).status_code
            == 404
        )
    # the choice survives a restart
    with TestClient(create_app(both)) as client:
        assert client.app.state.models.active("tiny").version == old


def test_in_flight_request_finishes_on_its_version(
    settings: ServeSettings, trained_bundle: Path, second_version: Path
) -> None:
    both = settings.model_copy(update={"runs": [trained_bundle, second_version]})
    with TestClient(create_app(both)) as client:
        service = Service(client)
        models = client.app.state.models
        started_on = models.active("tiny")
        entered, release = threading.Event(), threading.Event()
        real = started_on.classifier.proba_and_embedding

        def slow(images: object) -> object:
            entered.set()
            release.wait(10)
            return real(images)

        started_on.classifier.proba_and_embedding = slow
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(r=service.predict(png_bytes())))
        worker.start()
        assert entered.wait(10)
        other = next(m for m in models.all() if m is not started_on)
        body = {"version": other.version, "override_reason": OVERRIDE}
        client.post("/v1/models/tiny/activate", json=body, headers=service.headers("admin"))
        release.set()
        worker.join(10)
        assert result["r"].json()["model"]["version"] == started_on.version
        assert service.predict(png_bytes()).json()["model"]["version"] == other.version


def test_metrics(service: Service) -> None:
    service.predict(png_bytes())
    text = service.client.get("/metrics", headers=service.headers("viewer")).text
    assert 'cnnlab_requests_total{route="/v1/predict",status="200"} 1.0' in text
    assert "cnnlab_request_seconds_bucket" in text and "cnnlab_predictions_total{" in text
    assert "cnnlab_review_queue_size 1.0" in text


def test_public_metrics_and_docs_when_configured(settings: ServeSettings) -> None:
    open_settings = settings.model_copy(update={"public_metrics": True, "public_docs": True})
    with TestClient(create_app(open_settings)) as client:
        assert client.get("/metrics").status_code == 200
        spec = client.get("/openapi.json").json()
        assert {"/v1/predict", "/v1/feedback", "/v1/review-queue", "/v1/models"} <= set(spec["paths"])
        assert client.get("/docs").status_code == 200
        assert client.get("/v1/models").status_code == 401  # the API itself stays closed


def test_prediction_rows_hold_no_file_name(service: Service) -> None:
    response = service.client.post(
        "/v1/predict", files=upload(png_bytes(), "Doe_John_1950-01-01.png"), headers=service.headers("clinician")
    )
    assert response.status_code == 200 and "Doe_John" not in response.text
    with service.app.state.store.sessions() as s:
        assert "Doe_John" not in repr([vars(r) for r in s.query(PredictionRow)])
