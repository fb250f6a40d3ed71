"""The predict page's promises that a browser cannot force deterministically, checked in-process with
Streamlit's AppTest and a recording stand-in for the API client: a rerun never posts the upload
again, a CAM method change asks for an explanation only, and feedback is sent once (a click that
arrives while a send is in flight sends nothing)."""

from __future__ import annotations

from typing import Any

from streamlit.testing.v1 import AppTest

from cnnlab.ui.client import ApiError, Me

REQUEST_ID = "0123456789abcdef0123456789abcdef"
CLASSES = ("covid19", "normal", "pneumonia")


class RecordingClient:
    """Answers like the API and remembers every call; `fail` makes the named call raise."""

    def __init__(self, fail: dict[str, ApiError] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail = fail or {}

    def _call(self, name: str, detail: Any = None) -> None:
        self.calls.append((name, detail))
        if name in self.fail:
            raise self.fail[name]

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)

    def _explanation(self, method: str) -> dict[str, Any]:
        # Not real PNGs: the page only forwards them to the browser, it never decodes an image.
        return {"method": method, "overlay_png_base64": "b3Zlcg==", "heatmap_png_base64": "aGVhdA=="}

    def predict(
        self, data: bytes, explain: str | None = None, model: str | None = None, patient_id: str | None = None
    ) -> dict[str, Any]:
        self._call("predict", explain)
        return {
            "request_id": REQUEST_ID,
            "model": {"name": "xray", "version": "0123456789ab", "sha256": "0123456789ab" + "0" * 52},
            "label": "normal",
            "confidence": 0.55,
            "probabilities": {"covid19": 0.05, "normal": 0.55, "pneumonia": 0.40},
            "calibrated": True,
            "decision": "negative",
            "needs_review": True,
            "review_reasons": ["low_confidence"],
            "explanation": self._explanation(explain) if explain else None,
        }

    def prediction_image(self, request_id: str) -> bytes:
        self._call("image", request_id)
        return b"kept png"

    def explanation(self, request_id: str, method: str) -> dict[str, Any]:
        self._call("explanation", method)
        return self._explanation(method)

    def send_feedback(self, request_id: str, label: str, agrees: bool, note: str = "") -> dict[str, Any]:
        self._call("feedback", (label, agrees, note))
        return {"id": 7, "request_id": request_id, "label": label, "agrees": agrees}

    def models(self) -> list[dict[str, Any]]:
        return []


def _predict_page() -> None:
    from cnnlab.ui.views.predict import predict_page

    predict_page()


def _app(client: RecordingClient, **state: Any) -> AppTest:
    at = AppTest.from_function(_predict_page, default_timeout=60)
    at.session_state["client"] = client
    at.session_state["me"] = Me("cnl_1", "dr", "clinician", ("viewer", "clinician", "admin"), ("gradcam", "eigencam"))
    for name, value in state.items():
        at.session_state[name] = value
    at.run()
    at.file_uploader[0].set_value(("chest.png", b"\x89PNG bytes", "image/png")).run()
    return at


def test_reruns_do_not_post_the_upload_again() -> None:
    client = RecordingClient()
    at = _app(client)
    assert not at.exception and client.calls == [("predict", "gradcam"), ("image", REQUEST_ID)]
    assert [m.value for m in at.metric][:1] == ["normal"]
    assert any("Needs review" in w.value for w in at.warning)
    at.slider(key="cam_opacity").set_value(0.8).run()  # every widget change reruns the whole page
    at.selectbox(key="cam_method").set_value("eigencam").run()
    at.selectbox(key="cam_method").set_value("gradcam").run()  # came with the prediction: not asked again
    assert client.count("predict") == 1 and client.count("image") == 1
    assert [d for n, d in client.calls if n == "explanation"] == ["eigencam"]
    assert "opacity:0.80" in at.html[-1].value


def test_feedback_is_sent_once() -> None:
    client = RecordingClient()
    at = _app(client)
    at.radio(key=f"verdict-{REQUEST_ID}").set_value("Disagree").run()
    at.selectbox(key=f"label-{REQUEST_ID}").set_value("pneumonia").run()
    at.button(key=f"submit-{REQUEST_ID}").click().run()
    at.run()
    assert [d for n, d in client.calls if n == "feedback"] == [("pneumonia", False, "")]
    assert any("Feedback saved, id 7: pneumonia" in s.value for s in at.success)
    assert not [b for b in at.button if b.key == f"submit-{REQUEST_ID}"]  # the form is gone


def test_a_click_while_a_send_is_in_flight_sends_nothing() -> None:
    """What a double click can do: rerun the page while the first click's request is still out."""
    client = RecordingClient()
    at = _app(client, feedback_sent={REQUEST_ID: "sending"})
    at.button(key=f"submit-{REQUEST_ID}").click().run()
    assert client.count("feedback") == 0 and not at.exception


def test_a_refused_feedback_says_why_and_can_be_sent_again() -> None:
    refused = ApiError("label must be one of the model's classes (HTTP 422)", 422)
    client = RecordingClient(fail={"feedback": refused})
    at = _app(client)
    at.button(key=f"submit-{REQUEST_ID}").click().run()
    assert any("Feedback not saved." in e.value and "(HTTP 422)" in e.value for e in at.error)
    assert REQUEST_ID not in at.session_state["feedback_sent"]
    client.fail.clear()
    at.button(key=f"submit-{REQUEST_ID}").click().run()
    assert client.count("feedback") == 2 and any("Feedback saved" in s.value for s in at.success)


def test_a_refused_upload_is_a_message_and_not_retried_until_asked() -> None:
    client = RecordingClient(
        fail={"predict": ApiError("the request body is over the 20,971,520-byte limit (HTTP 413)", 413)}
    )
    at = _app(client)
    assert any("The file is larger than the service accepts." in e.value and "HTTP 413" in e.value for e in at.error)
    at.run()
    assert client.count("predict") == 1 and not at.exception
    client.fail.clear()
    at.button[0].click().run()  # Try again
    assert client.count("predict") == 2 and [m.value for m in at.metric][:1] == ["normal"]
