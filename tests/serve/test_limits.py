"""Limits: upload size while streaming (413), formats (415/422), concurrency (503), time (504), no leaks (500)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import torch
from fastapi.testclient import TestClient

from cnnlab.serve.app import create_app
from cnnlab.serve.settings import ServeSettings
from tests.serve.conftest import Service, png_bytes


def multipart(data: bytes, boundary: str = "cnnlab-test") -> tuple[bytes, dict[str, str]]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), {
        "Content-Type": f"multipart/form-data; boundary={boundary}"
    }


def small_upload_service(settings: ServeSettings, **update: object) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=update)), raise_server_exceptions=False)


def test_oversized_upload_with_content_length(settings: ServeSettings) -> None:
    with small_upload_service(settings, max_upload_bytes=10_000) as client:
        service = Service(client)
        assert service.predict(png_bytes(size=28)).status_code == 200  # under the limit
        response = service.predict(bytes(20_000))
        assert response.status_code == 413 and "10,000-byte limit" in response.json()["detail"]


def test_oversized_upload_streamed_without_content_length(settings: ServeSettings) -> None:
    with small_upload_service(settings, max_upload_bytes=10_000) as client:
        service = Service(client)
        body, headers = multipart(bytes(1_000_000))
        sent = 0

        def chunks() -> Iterator[bytes]:
            nonlocal sent
            for i in range(0, len(body), 4096):
                sent += 1
                yield body[i : i + 4096]

        response = client.post("/v1/predict", content=chunks(), headers=headers | service.headers("clinician"))
        assert response.status_code == 413
        assert "content-length" not in {k.lower() for k in response.request.headers}
        assert response.json()["request_id"]


def test_text_named_png_is_415(service: Service) -> None:
    response = service.predict(b"I am not an image, only named like one.\n")
    assert response.status_code == 415 and "PNG, JPEG or DICOM" in response.json()["detail"]


def test_bmp_is_not_on_the_service_allowlist(service: Service) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (28, 28)).save(buf, "BMP")
    assert service.predict(buf.getvalue()).status_code == 415


def test_truncated_png_is_422(service: Service) -> None:
    data = png_bytes(size=64)
    response = service.predict(data[: len(data) // 2])
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("upload: damaged image data") and "/" not in detail


def blocking_model(service: Service) -> tuple[threading.Event, threading.Event]:
    """Make the model wait for `release`; `entered` is set once a request is inside it."""
    entered, release = threading.Event(), threading.Event()
    clf = service.app.state.models.active("tiny").classifier
    real = clf.proba_and_embedding

    def blocked(images: object) -> object:
        entered.set()
        release.wait(30)
        return real(images)

    clf.proba_and_embedding = blocked
    return entered, release


def test_concurrency_limit_answers_503_at_once(settings: ServeSettings) -> None:
    with small_upload_service(settings, max_concurrency=1) as client:
        service = Service(client)
        entered, release = blocking_model(service)
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(r=service.predict(png_bytes())))
        worker.start()
        try:
            assert entered.wait(10)
            start = time.perf_counter()
            busy = client.get("/v1/models", headers=service.headers("viewer"))
            assert busy.status_code == 503 and time.perf_counter() - start < 1.0
            assert busy.json()["request_id"]
            assert client.get("/healthz").status_code == 200  # probes are outside the limit
        finally:
            release.set()
            worker.join(10)
        assert result["r"].status_code == 200
        assert client.get("/v1/models", headers=service.headers("viewer")).status_code == 200


def test_hanging_model_times_out_with_504(settings: ServeSettings) -> None:
    with small_upload_service(settings, request_timeout_s=0.5) as client:
        service = Service(client)
        _entered, release = blocking_model(service)
        try:
            start = time.perf_counter()
            response = service.predict(png_bytes())
            assert response.status_code == 504 and time.perf_counter() - start < 5
            assert response.json()["request_id"]
            assert client.get("/healthz").status_code == 200
            assert client.get("/v1/models", headers=service.headers("viewer")).status_code == 200
            audit = list(service.app.state.store.audit_rows())
            assert [(r.status, r.outcome) for r in audit if r.route == "/v1/predict"] == [(504, "timeout")]
        finally:
            release.set()


def test_unexpected_error_is_500_without_traceback_or_path(service: Service, caplog) -> None:
    def broken(images: object) -> object:
        raise RuntimeError("/srv/secret/model/path.py exploded")

    service.app.state.models.active("tiny").classifier.proba_and_embedding = broken
    response = service.predict(png_bytes())
    assert response.status_code == 500
    assert set(response.json()) == {"detail", "request_id"}
    assert "secret" not in response.text and "Traceback" not in response.text
    assert response.json()["request_id"] in caplog.text  # the server log has it, with the traceback


def slow_unless_inference(model: torch.nn.Module, step_s: float) -> list[torch.utils.hooks.RemovableHandle]:
    """Make every layer of `model` take `step_s` longer, except under inference mode (a plain
    prediction): an explanation that runs for seconds, in short steps, as a big model's would."""

    def wait(_module: torch.nn.Module, _inputs: object) -> None:
        if not torch.is_inference_mode_enabled():
            time.sleep(step_s)

    return [module.register_forward_pre_hook(wait) for module in model.modules()]


def test_a_timed_out_explanation_lets_go_of_the_model(settings: ServeSettings) -> None:
    """Score-CAM runs the network once per batch of activation maps; the tiny LeNet's 30 layer calls at
    0.1 s each take 3 s, three times the timeout. Its request answers 504 on time, and the predictions
    after it must not wait for the abandoned work (they used to answer 504 until it had finished)."""
    with small_upload_service(settings, request_timeout_s=1.0) as client:
        service = Service(client)
        model = service.app.state.models.active("tiny").classifier.model
        handles = slow_unless_inference(model, 0.1)
        explained = service.predict(png_bytes(1), query="?explain=scorecam")
        assert explained.status_code == 504, explained.text
        plain = service.predict(png_bytes(2))
        assert plain.status_code == 200, plain.text
        for handle in handles:
            handle.remove()
        # The cancelled explanation left the model as it was: a CAM works, and its weights still learn.
        again = service.predict(png_bytes(3), query="?explain=gradcam")
        assert again.status_code == 200 and again.json()["explanation"]["method"] == "gradcam"
        assert all(p.requires_grad for p in model.parameters())
        audit = [(r.status, r.outcome) for r in service.app.state.store.audit_rows() if r.route == "/v1/predict"]
        assert audit[0] == (504, "timeout") and [status for status, _ in audit[1:]] == [200, 200]


def test_a_timed_out_explanation_of_a_kept_image_lets_go_of_the_model(settings: ServeSettings) -> None:
    with small_upload_service(settings, request_timeout_s=1.0) as client:
        service = Service(client)
        request_id = service.predict(png_bytes(4)).json()["request_id"]
        slow_unless_inference(service.app.state.models.active("tiny").classifier.model, 0.1)
        url = f"/v1/predictions/{request_id}/explanation?method=scorecam"
        assert client.get(url, headers=service.headers("clinician")).status_code == 504
        assert service.predict(png_bytes(5)).status_code == 200
