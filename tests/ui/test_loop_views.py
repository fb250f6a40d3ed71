"""The clinical loop's pages, in-process with Streamlit's AppTest and a stand-in client that answers
with canned JSON of the API's contract: roles, the gate's refusal and its override, canary and shadow
runs, promotion, rollback, the governance log; the monitor's alerts, versions and live accuracy; and
the predict page's patient id, intended use and answering arm. An older API's answers still draw."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pyarrow as pa
from streamlit.testing.v1 import AppTest

from cnnlab.ui.client import ApiError, Me
from tests.ui.test_views import REQUEST_ID, RecordingClient

ADMIN = Me("cnl_1", "boss", "admin", ("viewer", "clinician", "admin"), ("gradcam",))
ACTIVE, CANARY, SPARE = "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"
GATE_REFUSED = ApiError("the gate refused: live accuracy 0.61 is below the validation interval 0.84-0.90 (HTTP 409)",
                        409)  # fmt: skip
INTENDED_USE = "Decision support for a qualified clinician; not a diagnosis."


def _version(version: str, created: str, role: str | None, fraction: float | None = None) -> dict[str, Any]:
    item = {"name": "xray", "version": version, "sha256": version * 5 + "0" * 4, "created_at": created,
            "architecture": "simple_cnn", "calibrated": True, "operating_point": None,
            "active": role == "active"}  # fmt: skip
    if role is not None:  # None: an API from before rollouts, which says only active or not
        item["role"], item["fraction"] = role, fraction
    return item


MODELS = [
    _version(ACTIVE, "2026-01-02T10:00:00+00:00", "active"),
    _version(CANARY, "2026-01-03T10:00:00+00:00", "canary", 0.1),
    _version(SPARE, "2026-01-01T10:00:00+00:00", "inactive"),
]
EVENTS = [
    {"at": "2026-01-04T09:00:00+00:00", "action": "rollout", "version": CANARY, "previous": ACTIVE, "by": "cnl_1",
     "reason": "", "gate": None},
    {"at": "2026-01-02T10:05:00+00:00", "action": "override", "version": ACTIVE, "previous": SPARE, "by": "cnl_1",
     "reason": "validation set too small for this site", "gate": {"passed": False, "reasons": ["n below 200"]}},
]  # fmt: skip
ALERT = f"version {CANARY}: live accuracy 0.61 (95% CI 0.52-0.70) is below the validation interval 0.84-0.90"


class LoopClient(RecordingClient):
    """The admin's and viewer's routes, on top of the predict page's stand-in."""

    def __init__(self, models: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_rows = MODELS if models is None else models
        self.report: dict[str, Any] = monitor_report()

    def models(self) -> list[dict[str, Any]]:
        return self.model_rows

    def _describe(self, version: str, override_reason: str | None) -> dict[str, Any]:
        # As the service answers: the gate's result, and the governance log's reason in its own words.
        reason = (
            f"override of a refused gate (n below 200): {override_reason}" if override_reason else "the gate passed"
        )
        return {"name": "xray", "version": version, "active": True, "role": "active", "fraction": None,
                "gate": {"passed": override_reason is None, "reasons": []}, "reason": reason}  # fmt: skip

    def activate(self, name: str, version: str, override_reason: str | None = None) -> dict[str, Any]:
        self._call("activate", (name, version, override_reason))
        return self._describe(version, override_reason)

    def promote(self, name: str, override_reason: str | None = None) -> dict[str, Any]:
        self._call("promote", (name, override_reason))
        return self._describe(CANARY, override_reason)

    def rollout(
        self, name: str, version: str, mode: str, fraction: float, override_reason: str | None = None
    ) -> dict[str, Any]:
        self._call("rollout", (name, version, mode, fraction, override_reason))
        return {"name": name, "version": version, "mode": mode, "fraction": fraction}

    def rollback(self, name: str, reason: str) -> dict[str, Any]:
        self._call("rollback", (name, reason))
        return {"action": "rollout ended", "active": ACTIVE}

    def events(self, name: str) -> list[dict[str, Any]]:
        self._call("events", name)
        return EVENTS

    def monitor(self, model: str | None = None) -> dict[str, Any]:
        self._call("monitor", model)
        return self.report

    def predict(
        self, data: bytes, explain: str | None = None, model: str | None = None, patient_id: str | None = None
    ) -> dict[str, Any]:
        result = super().predict(data, explain, model)
        self.calls[-1] = ("predict", patient_id)
        return {**result, "intended_use": INTENDED_USE, "routed": "canary"}


def monitor_report(loop: bool = True) -> dict[str, Any]:
    """GET /v1/monitor as before the clinical loop, plus (with `loop`) its versions, live weeks and alerts."""
    report: dict[str, Any] = {
        "model": {"name": "xray", "version": ACTIVE},
        "window": {"requests": 40, "size": 1000},
        "latency_ms": {"p50": 12.0, "p95": 30.0, "p99": 41.0},
        "predictions": {"recent": {"normal": 0.6, "pneumonia": 0.4}, "validation": None},
        "drift": {"verdict": "unavailable", "reason": "too few recent inputs"},
        "activity": {"minutes": [], "requests": {}, "predictions": {}},
        "requests_by_status": {},
    }
    if loop:
        week = {"week": "2026-W01", "feedback": 30}
        report |= {
            "versions": [
                {"version": ACTIVE, "role": "active", "requests": 36, "predictions": {"normal": 0.6, "pneumonia": 0.4},
                 "latency_ms": {"p50": 12.0, "p95": 30.0}, "review_rate": 0.25, "feedback": 30, "agreement": 0.9,
                 "live_accuracy": 0.9, "live_ci": [0.74, 0.97], "shadow_agreement": None},
                {"version": CANARY, "role": "canary", "fraction": 0.1, "requests": 4, "predictions": {"pneumonia": 1.0},
                 "latency_ms": {"p50": None, "p95": None}, "review_rate": None, "feedback": 0, "agreement": None,
                 "live_accuracy": 0.61, "live_ci": [0.52, 0.70], "live_sensitivity": 0.5, "shadow_agreement": None},
                {"version": SPARE, "role": "shadow", "requests": 0, "predictions": {}, "latency_ms": {},
                 "feedback": 3, "live_accuracy": 1.0, "live_ci": [None, None], "shadow_answers": 40,
                 "shadow_agreement": 0.85},
            ],
            "live": {"weeks": ["2026-W01", "2026-W02"], "by_version": {
                ACTIVE: [week | {"accuracy": 0.9}, {"week": "2026-W02", "feedback": 0, "accuracy": None}],
                CANARY: [{"week": "2026-W02", "feedback": 12, "accuracy": 0.61}]}},
            "validation": {"accuracy": 0.87, "ci": [0.84, 0.90], "n": 500},
            "alerts": [ALERT],
        }  # fmt: skip
    return report


def _page(name: str) -> None:
    from cnnlab.ui.views.models import models_page
    from cnnlab.ui.views.monitor import monitor_page
    from cnnlab.ui.views.predict import predict_page

    {"models": models_page, "monitor": monitor_page, "predict": predict_page}[name]()


def _app(page: str, client: RecordingClient, who: Me = ADMIN) -> AppTest:
    at = AppTest.from_function(_page, args=(page,), default_timeout=60)
    at.session_state["client"] = client
    at.session_state["me"] = who
    return at.run()


def _sent(client: RecordingClient, name: str) -> list[Any]:
    return [d for n, d in client.calls if n == name]


# ---------------------------------------------------------------------------------------------- models


def test_versions_show_their_roles_and_the_governance_log() -> None:
    at = _app("models", LoopClient())
    assert not at.exception
    versions, log = at.dataframe[0].value, at.dataframe[1].value
    roles = dict(zip(versions["version"], versions["role"], strict=True))
    assert roles == {ACTIVE: "● active", CANARY: "◐ canary, 10% of requests", SPARE: ""}
    assert list(log["action"]) == ["rollout", "override"]
    assert log["gate"].iloc[1] == "refused: n below 200" and log["when (UTC)"].iloc[0] == "2026-01-04 09:00"
    assert any(CANARY in i.value and "canary, 10% of requests" in i.value for i in at.info)


def test_a_gate_refusal_offers_an_override_that_resends_with_the_reason() -> None:
    client = LoopClient(fail={"activate": GATE_REFUSED})
    at = _app("models", client)
    at.selectbox(key="pick-xray").set_value(MODELS[2]).run()
    at.checkbox(key=f"confirm-xray-{SPARE}").check().run()
    at.button(key="activate-xray").click().run()
    assert _sent(client, "activate") == [("xray", SPARE, None)]
    assert any("Activation of xray" in e.value and "below the validation interval" in e.value for e in at.error)
    assert not at.success

    client.fail.clear()
    at.text_input(key="override-reason-xray").input("too short")
    at.button(key="override-send-xray").click().run()
    assert len(_sent(client, "activate")) == 1  # refused here, not sent
    assert any("at least 10 characters" in e.value for e in at.error)

    reason = "site validation pending; approved by the clinical lead"
    at.text_input(key="override-reason-xray").input(reason)
    at.button(key="override-send-xray").click().run()
    assert _sent(client, "activate")[-1] == ("xray", SPARE, reason)
    assert any(f"xray {SPARE} is now the active version" in s.value and reason in s.value for s in at.success)
    assert "xray" not in at.session_state["gate_refusals"]
    assert not [t for t in at.text_input if t.key == "override-reason-xray"]  # the box is gone


def test_an_override_can_be_cancelled() -> None:
    at = _app("models", LoopClient(fail={"activate": GATE_REFUSED}))
    at.selectbox(key="pick-xray").set_value(MODELS[2]).run()
    at.checkbox(key=f"confirm-xray-{SPARE}").check().run()
    at.button(key="activate-xray").click().run()
    at.button(key="override-cancel-xray").click().run()
    assert not at.error and not [t for t in at.text_input if t.key == "override-reason-xray"]


def test_other_refusals_are_errors_without_an_override() -> None:
    client = LoopClient(fail={"activate": ApiError("your key's role may not do this (HTTP 403)", 403)})
    at = _app("models", client)
    at.checkbox(key=f"confirm-xray-{CANARY}").check().run()
    at.button(key="activate-xray").click().run()
    assert any("Not activated." in e.value for e in at.error)
    assert not [t for t in at.text_input if t.key == "override-reason-xray"]


def test_a_canary_starts_with_the_chosen_share_and_a_shadow_on_every_request() -> None:
    client = LoopClient()
    at = _app("models", client)
    assert at.slider(key="rollout-fraction-xray").value == 0.1
    at.selectbox(key="rollout-pick-xray").set_value(MODELS[2]).run()
    at.slider(key="rollout-fraction-xray").set_value(0.25)
    at.checkbox(key=f"rollout-confirm-xray-{SPARE}-canary").check().run()
    at.button(key="rollout-start-xray").click().run()
    assert _sent(client, "rollout") == [("xray", SPARE, "canary", 0.25, None)]
    assert any("canary run started on 25% of requests" in s.value for s in at.success)

    at.selectbox(key="rollout-pick-xray").set_value(MODELS[2]).run()
    at.radio(key="rollout-mode-xray").set_value("shadow").run()
    assert at.slider(key="rollout-fraction-xray").disabled
    at.checkbox(key=f"rollout-confirm-xray-{SPARE}-shadow").check().run()
    at.button(key="rollout-start-xray").click().run()
    assert _sent(client, "rollout")[-1] == ("xray", SPARE, "shadow", 1.0, None)


def test_a_refused_canary_can_be_overridden_but_a_shadow_has_no_gate_to_override() -> None:
    client = LoopClient(fail={"rollout": GATE_REFUSED})
    at = _app("models", client)
    at.checkbox(key=f"rollout-confirm-xray-{CANARY}-canary").check().run()
    at.button(key="rollout-start-xray").click().run()
    assert any("The canary run of xray" in e.value for e in at.error)
    client.fail.clear()
    at.text_input(key="override-reason-xray").input("ramping up after a clean week").run()
    at.button(key="override-send-xray").click().run()
    assert _sent(client, "rollout")[-1] == ("xray", CANARY, "canary", 0.1, "ramping up after a clean week")

    client.fail["rollout"] = ApiError(f"xray@{CANARY} is the active version; roll out another one (HTTP 409)", 409)
    at.radio(key="rollout-mode-xray").set_value("shadow").run()
    at.checkbox(key=f"rollout-confirm-xray-{CANARY}-shadow").check().run()
    at.button(key="rollout-start-xray").click().run()
    assert any("The run did not start." in e.value for e in at.error)
    assert not [t for t in at.text_input if t.key == "override-reason-xray"]


def test_promotion_needs_confirming_and_goes_through_the_gate() -> None:
    client = LoopClient(fail={"promote": GATE_REFUSED})
    at = _app("models", client)
    assert at.button(key="promote-xray").disabled
    at.checkbox(key=f"promote-confirm-xray-{CANARY}").check().run()
    at.button(key="promote-xray").click().run()
    assert any("Promotion of xray" in e.value for e in at.error)
    client.fail.clear()
    at.text_input(key="override-reason-xray").input("the canary has 400 agreeing assessments")
    at.button(key="override-send-xray").click().run()
    assert _sent(client, "promote") == [("xray", None), ("xray", "the canary has 400 agreeing assessments")]
    assert any(f"xray {CANARY} is now the active version (override of a refused gate" in s.value for s in at.success)


def test_rollback_asks_for_a_reason_and_a_confirmation() -> None:
    client = LoopClient()
    at = _app("models", client)
    assert at.button(key="rollback-xray").disabled
    at.checkbox(key="rollback-confirm-xray").check().run()
    at.button(key="rollback-xray").click().run()
    assert not _sent(client, "rollback") and any("needs a reason" in e.value for e in at.error)
    at.text_input(key="rollback-reason-xray").input("canary answers pneumonia for everything")
    at.button(key="rollback-xray").click().run()
    assert _sent(client, "rollback") == [("xray", "canary answers pneumonia for everything")]
    assert any(f"rollout ended; the active version is {ACTIVE}" in s.value for s in at.success)


def test_an_api_from_before_rollouts_still_draws_the_models_page() -> None:
    old = [_version(ACTIVE, "2026-01-02T10:00:00+00:00", None), _version(SPARE, "2026-01-01T10:00:00+00:00", None)]
    old[0]["active"] = True
    client = LoopClient(models=old, fail={"events": ApiError("Not Found (HTTP 404)", 404)})
    at = _app("models", client)
    assert not at.exception and not at.error
    assert list(at.dataframe[0].value["role"]) == ["● active", ""]
    assert not [b for b in at.button if b.key == "promote-xray"]  # nothing to promote
    assert any("keeps no governance log" in c.value for c in at.caption)


# --------------------------------------------------------------------------------------------- monitor


def test_alerts_come_first_and_versions_sit_side_by_side() -> None:
    at = _app("monitor", LoopClient())
    assert not at.exception
    assert [e.value for e in at.error] == [ALERT]
    title, alerts = list(at.main.children.values())[:2]  # drawn before the report came in, filled after
    assert title.type == "title" and [e.value for e in alerts.get("error")] == [ALERT]
    table = at.dataframe[0].value
    assert list(table.columns) == [ACTIVE, CANARY, SPARE, "validation"]
    assert list(table.loc["role"])[:3] == ["active", "canary, 10% of requests", "shadow"]
    assert list(table.loc["shadow agreement"])[:3] == ["", "", "85.0% of 40 answers"]
    assert table.loc["live accuracy (95% CI)", SPARE] == "100.0%"  # no interval: the point alone
    assert table.loc["live sensitivity", CANARY] == "50.0%" and table.loc["live sensitivity", ACTIVE] == "–"
    assert table.loc["live accuracy (95% CI)", CANARY] == "61.0% (52.0%–70.0%)"
    assert table.loc["live accuracy (95% CI)", "validation"] == "87.0% (84.0%–90.0%)"
    assert table.loc["prediction mix", ACTIVE] == "normal 60% · pneumonia 40%"
    assert table.loc["latency p95", CANARY] == "–" and table.loc["agreement", ACTIVE] == "90.0%"


def _layered_charts(at: AppTest) -> list[tuple[dict[str, Any], dict[str, pd.DataFrame]]]:
    """The layered charts (the live accuracy's; the prediction mix is a plain bar chart): each one's
    Vega-Lite spec and its data sets, which Streamlit sends beside the spec as Arrow streams."""
    charts = []
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        if "layer" in spec:
            data = {d.name: pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets}
            charts.append((spec, data))
    return charts


def test_live_accuracy_is_charted_per_week_against_the_validation_band() -> None:
    at = _app("monitor", LoopClient())
    charts = _layered_charts(at)
    assert len(charts) == 1
    spec, data = charts[0]
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]
    assert marks == ["rect", "rule", "line"]
    assert spec["layer"][0]["encoding"]["y2"]["field"] == "hi"
    weeks = spec["layer"][2]["encoding"]["x"]["sort"]
    assert weeks == ["2026-W01", "2026-W02"]
    assert data[spec["layer"][0]["data"]["name"]].to_dict("records") == [{"lo": 0.84, "hi": 0.90}]
    points = data[spec["layer"][2]["data"]["name"]]
    assert set(zip(points["version"], points["week"], strict=True)) == {(ACTIVE, "2026-W01"), (CANARY, "2026-W02")}


def test_an_old_monitor_report_still_draws() -> None:
    client = LoopClient()
    client.report = monitor_report(loop=False)
    at = _app("monitor", client)
    assert not at.exception and not at.error and not at.dataframe
    assert not _layered_charts(at)


def test_no_feedback_yet_is_said_rather_than_charted() -> None:
    client = LoopClient()
    client.report["live"] = {"weeks": [], "by_version": {}}
    at = _app("monitor", client)
    assert any("live accuracy needs clinicians' feedback" in i.value for i in at.info)


# --------------------------------------------------------------------------------------------- predict


def _upload(at: AppTest) -> AppTest:
    return at.file_uploader[0].set_value(("chest.png", b"\x89PNG bytes", "image/png")).run()


def test_the_patient_id_goes_with_the_upload_and_every_result_says_its_intended_use() -> None:
    client = LoopClient()
    at = _app("predict", client)
    at.text_input(key="patient_id").input("  MRN-0042 ").run()
    _upload(at)
    assert _sent(client, "predict") == ["MRN-0042"]
    assert any("answered by the canary version" in c.value and INTENDED_USE in c.value for c in at.caption)


def test_a_patient_id_changed_after_the_upload_is_sent_only_when_asked() -> None:
    client = LoopClient()
    at = _upload(_app("predict", client))
    at.text_input(key="patient_id").input("MRN-0042").run()
    assert _sent(client, "predict") == [None]
    assert any("sent without a patient id" in w.value for w in at.warning)
    at.button(key=f"resend-{at.file_uploader[0].value.file_id}").click().run()
    assert _sent(client, "predict") == [None, "MRN-0042"]
    assert not any("patient id" in w.value for w in at.warning)
    assert any(REQUEST_ID in c.value for c in at.caption)
