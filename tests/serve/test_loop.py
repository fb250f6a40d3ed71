"""The clinical loop inside one service: patients hashed, canary and shadow rollouts, promotion and
rollback with the governance log, live accuracy per version with its alert, retention, and the
refusals (a fraction outside [0, 1], feedback on an unknown prediction) that store nothing."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from cnnlab.errors import BundleError
from cnnlab.serve.app import create_app
from cnnlab.serve.export import export_feedback
from cnnlab.serve.models import in_canary
from cnnlab.serve.settings import ServeSettings
from cnnlab.serve.store import FeedbackRow, PredictionRow, ShadowRow, StaleDecision, utcnow
from cnnlab.serve.triage import INTENDED_USE
from tests.serve.conftest import OVERRIDE, Service, png_bytes, upload
from tests.test_cli import run_cli


@pytest.fixture
def two(settings: ServeSettings, trained_bundle: Path, second_version: Path) -> ServeSettings:
    """Version A (the older bundle) recorded active first; B loaded beside it later, as a candidate."""
    first = settings.model_copy(update={"runs": [trained_bundle]})
    with TestClient(create_app(first)):
        pass  # the first start records A as active
    return settings.model_copy(update={"runs": [trained_bundle, second_version]})


def _versions(service: Service) -> tuple[str, str]:
    listed = service.client.get("/v1/models", headers=service.headers("viewer")).json()
    active = next(m["version"] for m in listed if m["role"] == "active")
    other = next(m["version"] for m in listed if m["role"] != "active")
    return active, other


def _predict(service: Service, patient: str | None, seed: int = 0) -> dict:
    data = {"patient_id": patient} if patient is not None else None
    answer = service.client.post(
        "/v1/predict", files=upload(png_bytes(seed)), data=data, headers=service.headers("clinician")
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_bundle_added_later_waits_instead_of_going_live(two: ServeSettings) -> None:
    with TestClient(create_app(two)) as client:
        service = Service(client)
        active, candidate = _versions(service)
        assert (
            client.app.state.models.active("tiny").created_at
            < client.app.state.models.versions("tiny")[candidate].created_at
        )
        events = client.get("/v1/models/tiny/events", headers=service.headers("viewer")).json()
        assert [e["action"] for e in events] == ["initial"] and events[0]["version"] == active


def test_patient_ids_are_stored_only_as_keyed_hashes_and_exported_with_the_source(
    service: Service, tmp_path: Path
) -> None:
    first = _predict(service, "MRN-0042")
    again = _predict(service, "MRN-0042", seed=1)
    other = _predict(service, "MRN-0043")
    assert first["intended_use"] == INTENDED_USE and first["routed"] == "active"
    store = service.app.state.store
    keys = [store.prediction(p["request_id"]).patient_key for p in (first, again, other)]
    assert keys[0] == keys[1] != keys[2] and len(keys[0]) == 64 and "0042" not in keys[0]
    assert (
        _predict(service, None)["request_id"]
        and store.prediction(_predict(service, "  ")["request_id"]).patient_key is None
    )
    for pred in (first, other):
        answer = service.client.post("/v1/feedback", json={"request_id": pred["request_id"], "label": "3"},
                                     headers=service.headers("clinician"))  # fmt: skip
        assert answer.status_code == 200
    written, missing = export_feedback(store, service.app.state.settings.images_dir, tmp_path / "fb")
    rows = list(csv.DictReader((tmp_path / "fb" / "metadata.csv").open()))
    assert (written, missing) == (2, 0)
    assert {r["patient_id"] for r in rows} == {keys[0], keys[2]} and {r["source"] for r in rows} == {"feedback"}
    assert all((tmp_path / "fb" / r["file"]).is_file() and r["label"] == "3" for r in rows)


def test_the_canary_split_is_stable_per_patient_and_near_its_fraction() -> None:
    keys = [f"patient-{i}" for i in range(4000)]
    share = sum(in_canary(k, 0.3) for k in keys) / len(keys)
    assert 0.27 < share < 0.33
    assert [in_canary(k, 0.3) for k in keys[:50]] == [in_canary(k, 0.3) for k in keys[:50]]
    assert not any(in_canary(k, 0.0) for k in keys) and all(in_canary(k, 1.0) for k in keys)


def test_canary_needs_the_gate_or_an_override_then_serves_its_share(two: ServeSettings) -> None:
    with TestClient(create_app(two)) as client:
        service = Service(client)
        admin = service.headers("admin")
        active, candidate = _versions(service)
        url = "/v1/models/tiny/rollout"
        for fraction in (-0.1, 1.5):
            assert client.post(url, json={"version": candidate, "mode": "canary", "fraction": fraction,
                                          "override_reason": OVERRIDE}, headers=admin).status_code == 422  # fmt: skip
        assert (
            client.post(url, json={"version": candidate, "mode": "canary", "fraction": 0.5}, headers=admin).status_code
            == 409
        )
        assert (
            client.post(
                url,
                json={"version": active, "mode": "canary", "fraction": 0.5, "override_reason": OVERRIDE},
                headers=admin,
            ).status_code
            == 409
        )  # fmt: skip  (the active version)
        assert client.app.state.store.rollout("tiny") is None  # nothing stored by any refusal
        canary = {"version": candidate, "mode": "canary", "fraction": 0.5, "override_reason": OVERRIDE}
        started = client.post(url, json=canary, headers=admin)
        assert started.status_code == 200 and started.json()["fraction"] == 0.5
        roles = {m["version"]: (m["role"], m["fraction"]) for m in client.get("/v1/models", headers=admin).json()}
        assert roles == {active: ("active", None), candidate: ("canary", 0.5)}
        answers = {p: _predict(service, p)["model"]["version"] for p in (f"P{i}" for i in range(40))}
        assert set(answers.values()) == {active, candidate}
        assert all(_predict(service, p, seed=3)["model"]["version"] == v for p, v in list(answers.items())[:8])
        store = client.app.state.store
        with store.sessions() as s:
            arms = dict(s.execute(select(PredictionRow.model_version, PredictionRow.arm).distinct()).all())
        assert arms == {active: "active", candidate: "canary"}

        promoted = client.post("/v1/models/tiny/promote", json={"override_reason": OVERRIDE}, headers=admin)
        assert (
            promoted.status_code == 200
            and promoted.json()["version"] == candidate
            and promoted.json()["role"] == "active"
        )
        assert store.rollout("tiny") is None
        assert client.post("/v1/models/tiny/promote", json={}, headers=admin).status_code == 409  # nothing to promote
        back = client.post("/v1/models/tiny/rollback", json={"reason": "canary figures were worse"}, headers=admin)
        assert back.status_code == 200 and back.json() == {"action": "reactivated", "active": active}
        # A second rollback (a double click, a retry) has nothing to undo: the rejected version stays off.
        again = client.post("/v1/models/tiny/rollback", json={"reason": "clicked twice"}, headers=admin)
        assert again.status_code == 409 and client.app.state.models.active("tiny").version == active
        events = client.get("/v1/models/tiny/events", headers=admin).json()
        assert [e["action"] for e in events] == ["rollback", "promote", "canary", "gate refused", "initial"]
        assert events[0]["reason"] == "canary figures were worse" and OVERRIDE in events[1]["reason"]
        assert OVERRIDE in events[2]["reason"] and "no gate folder" in events[3]["reason"]  # both logged
        assert (
            client.post(
                "/v1/models/tiny/rollback", json={"reason": "no"}, headers=service.headers("clinician")
            ).status_code
            == 403
        )


def test_a_shadow_predicts_on_every_request_and_is_never_shown(two: ServeSettings) -> None:
    with TestClient(create_app(two)) as client:
        service = Service(client)
        admin = service.headers("admin")
        active, candidate = _versions(service)
        started = client.post("/v1/models/tiny/rollout", json={"version": candidate, "mode": "shadow"}, headers=admin)
        assert started.status_code == 200 and started.json()["fraction"] is None  # no gate: it reaches nobody
        served = [_predict(service, f"P{i}", seed=i) for i in range(6)]
        assert {p["model"]["version"] for p in served} == {active} and {p["routed"] for p in served} == {"active"}
        store = client.app.state.store
        with store.sessions() as s:
            shadow = list(s.scalars(select(ShadowRow)))
        assert sorted(r.request_id for r in shadow) == sorted(p["request_id"] for p in served)
        assert {r.model_version for r in shadow} == {candidate}
        report = client.get("/v1/monitor", headers=service.headers("viewer")).json()
        row = next(v for v in report["versions"] if v["version"] == candidate)
        assert row["role"] == "shadow" and row["requests"] == 0 and row["shadow_answers"] == 6
        assert 0.0 <= row["shadow_agreement"] <= 1.0
        ended = client.post("/v1/models/tiny/rollback", json={"reason": "enough shadow data"}, headers=admin)
        assert ended.json() == {"action": "rollout ended", "active": active}


def test_live_accuracy_per_version_and_week_with_an_alert_below_validation(service: Service) -> None:
    client, clinician = service.client, service.headers("clinician")
    preds = [_predict(service, f"P{i}", seed=i) for i in range(14)]
    report = client.get("/v1/monitor", headers=service.headers("viewer")).json()
    assert report["alerts"] == [] and report["validation"]["ci"][0] < report["validation"]["accuracy"]
    for p in preds:  # the clinician disagrees every time: a model that has stopped working
        wrong = next(c for c in p["probabilities"] if c != p["label"])
        assert (
            client.post(
                "/v1/feedback", json={"request_id": p["request_id"], "label": wrong}, headers=clinician
            ).status_code
            == 200
        )
    report = client.get("/v1/monitor", headers=service.headers("viewer")).json()
    (row,) = report["versions"]
    assert row["feedback"] == 14 and row["live_accuracy"] == 0.0 and row["agreement"] == 0.0
    assert row["live_ci"][1] < report["validation"]["ci"][0]
    assert len(report["alerts"]) == 1 and row["version"] in report["alerts"][0]
    (week,) = report["live"]["weeks"]
    assert report["live"]["by_version"][row["version"]] == [{"week": week, "feedback": 14, "accuracy": 0.0}]


def test_feedback_on_an_unknown_prediction_is_refused_and_stores_nothing(service: Service) -> None:
    answer = service.client.post(
        "/v1/feedback", json={"request_id": "nope", "label": "3"}, headers=service.headers("clinician")
    )
    assert answer.status_code == 404
    with service.app.state.store.sessions() as s:
        assert s.scalar(select(func.count()).select_from(FeedbackRow)) == 0


def test_purge_deletes_old_cases_and_images_and_keeps_the_audit_chain(service: Service, capsys, monkeypatch) -> None:
    old, new = _predict(service, "A"), _predict(service, "B")
    service.client.post(
        "/v1/feedback", json={"request_id": old["request_id"], "label": "3"}, headers=service.headers("clinician")
    )
    store, settings = service.app.state.store, service.app.state.settings
    with store.sessions.begin() as s:
        s.execute(update(PredictionRow).where(PredictionRow.request_id == old["request_id"])
                  .values(created_at=utcnow() - timedelta(days=400)))  # fmt: skip
    old_image = settings.images_dir / store.prediction(old["request_id"]).image_file
    assert old_image.is_file()
    state = ["--state-dir", str(settings.state_dir)]
    code, _out, err = run_cli(["purge", "--older-than", "0", "--yes", *state], capsys, monkeypatch)
    assert code == 2 and "more than 0 days" in err and store.prediction(old["request_id"]) is not None
    code, out, err = run_cli(["purge", "--older-than", "365", "--yes", *state], capsys, monkeypatch)
    assert code == 0, err
    assert "purged 1 predictions" in out
    assert store.prediction(old["request_id"]) is None and not old_image.exists()
    assert store.prediction(new["request_id"]) is not None and store.feedback_for(old["request_id"]) == []
    _count, problem = store.verify_audit()
    assert problem is None and any(r.route == "cnnlab purge" for r in store.audit_rows())


def test_a_decision_overtaken_meanwhile_changes_nothing(two: ServeSettings) -> None:
    """Activation checks, once its gate has run, that the version it was gated against is still active."""
    with TestClient(create_app(two)) as client:
        store = client.app.state.store
        active, candidate = _versions(Service(client))
        with pytest.raises(StaleDecision):
            store.change_active("tiny", candidate, None, "activate", expected_active="0" * 12, check=True)
        assert store.activation("tiny") == active and [e.action for e in store.events("tiny")] == ["initial"]


def test_a_service_refuses_to_start_without_the_active_version_s_bundle(
    two: ServeSettings, second_version: Path
) -> None:
    """Serving the newest bundle instead of the recorded active one would put an ungated version live."""
    with TestClient(create_app(two)) as client:
        Service(client)
    only_new = two.model_copy(update={"runs": [second_version]})
    with pytest.raises(BundleError, match="not among the bundles given"):
        create_app(only_new)
