"""The page's HTTP client turns every failure into one readable line, and `cnnlab ui` checks its arguments."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.ui.client import UPLOAD_NAME, ApiClient, ApiError, Me
from cnnlab.ui.launch import API_ENV, APP, check_api_url, streamlit_command
from tests.test_cli import run_cli
from tests.ui.conftest import free_port

ME = {
    "key_id": "cnl_1234abcd",
    "name": "dr-who",
    "role": "clinician",
    "roles": ["viewer", "clinician", "admin"],
    "explain_methods": ["gradcam", "eigencam"],
    "expires_at": None,
}
FORBIDDEN = b'{"detail": "this needs the clinician role or above; the key has viewer"}'
# path -> (status, content type, body) the fake API answers with
ANSWERS: dict[str, tuple[int, str, bytes]] = {
    "/healthz": (200, "application/json", b'{"status": "ok"}'),
    "/v1/me": (200, "application/json", json.dumps(ME).encode()),
    "/v1/predict": (413, "application/json", b'{"detail": "the request body is over the 10-byte limit"}'),
    "/v1/review-queue": (
        422,
        "application/json",
        b'{"detail": [{"loc": ["query", "limit"], "msg": "Input should be less than or equal to 500"}]}',
    ),
    "/v1/models": (500, "text/html", b"<html>Internal Server Error</html>"),
    "/v1/monitor": (200, "text/plain", b"not json"),
    "/v1/feedback": (403, "application/json", FORBIDDEN),
    "/v1/models/x%2Fray/activate": (409, "application/json", b'{"detail": "the gate refused: too few cases"}'),
    "/v1/models/x%2Fray/rollout": (200, "application/json", b'{"mode": "canary"}'),
    "/v1/models/x%2Fray/promote": (200, "application/json", b'{"version": "abc"}'),
    "/v1/models/x%2Fray/rollback": (200, "application/json", b'{"action": "reactivated", "active": "abc"}'),
    "/v1/models/x%2Fray/events": (200, "application/json", b'[{"action": "initial"}]'),
}


class _FakeApi(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, dict(self.headers), body))
        status, kind, data = ANSWERS.get(self.path.split("?")[0], (404, "application/json", b'{"detail": "nope"}'))
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def fake_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeApi.seen.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _error(call) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    return info.value


def test_me_and_the_key_header(fake_api: str) -> None:
    who = ApiClient(fake_api + "/", "cnl_1234abcd_secret").me()
    assert who == Me("cnl_1234abcd", "dr-who", "clinician", ("viewer", "clinician", "admin"), ("gradcam", "eigencam"))
    assert who.may("viewer") and who.may("clinician") and not who.may("admin")
    method, path, headers, _ = _FakeApi.seen[-1]
    assert (method, path, headers["X-API-Key"]) == ("GET", "/v1/me", "cnl_1234abcd_secret")


def test_api_detail_and_status_make_the_message(fake_api: str) -> None:
    client = ApiClient(fake_api, "k")
    too_large = _error(lambda: client.predict(b"\x89PNG...", explain="gradcam"))
    assert str(too_large) == "the request body is over the 10-byte limit (HTTP 413)" and too_large.status == 413
    forbidden = _error(lambda: client.feedback("abc"))
    assert str(forbidden) == "this needs the clinician role or above; the key has viewer (HTTP 403)"
    invalid = _error(lambda: client.review_queue(limit=9999))
    assert str(invalid) == "limit: Input should be less than or equal to 500 (HTTP 422)"
    not_json = _error(client.models)
    assert str(not_json) == "Internal Server Error (HTTP 500)" and "<html>" not in str(not_json)
    assert str(_error(lambda: client.explanation("x", "gradcam"))) == "nope (HTTP 404)"
    garbled = _error(client.monitor)
    assert garbled.status is None and "something other than JSON" in str(garbled)


def test_uploads_go_out_as_bytes_under_a_neutral_name(fake_api: str) -> None:
    _error(lambda: ApiClient(fake_api, "k").predict(b"PIXELS", explain="gradcam"))
    method, path, _, body = _FakeApi.seen[-1]
    assert (method, path) == ("POST", "/v1/predict?explain=gradcam")
    assert f'filename="{UPLOAD_NAME}"'.encode() in body and b"PIXELS" in body


def test_the_patient_id_travels_in_the_form_body_and_never_in_the_url(fake_api: str) -> None:
    client = ApiClient(fake_api, "k")
    _error(lambda: client.predict(b"PIXELS", patient_id="MRN-0042"))
    _, path, _, body = _FakeApi.seen[-1]
    assert path == "/v1/predict" and b'name="patient_id"' in body and b"MRN-0042" in body
    _error(lambda: client.predict(b"PIXELS"))
    assert b"patient_id" not in _FakeApi.seen[-1][3]


def test_the_loop_routes_send_their_methods_paths_and_bodies(fake_api: str) -> None:
    client = ApiClient(fake_api, "k")
    refused = _error(lambda: client.activate("x/ray", "abc"))
    assert refused.status == 409 and str(refused) == "the gate refused: too few cases (HTTP 409)"
    _error(lambda: client.activate("x/ray", "abc", override_reason="approved by the lead"))
    assert client.rollout("x/ray", "def", "canary", 0.1) == {"mode": "canary"}
    assert client.promote("x/ray") == {"version": "abc"}
    assert client.rollback("x/ray", "bad canary")["action"] == "reactivated"
    assert client.events("x/ray") == [{"action": "initial"}]
    sent = [(m, p, json.loads(b) if b else None) for m, p, _, b in _FakeApi.seen]
    assert sent == [
        ("POST", "/v1/models/x%2Fray/activate", {"version": "abc", "override_reason": None}),
        ("POST", "/v1/models/x%2Fray/activate", {"version": "abc", "override_reason": "approved by the lead"}),
        (
            "POST",
            "/v1/models/x%2Fray/rollout",
            {"version": "def", "mode": "canary", "fraction": 0.1, "override_reason": None},
        ),
        ("POST", "/v1/models/x%2Fray/promote", {"override_reason": None}),
        ("POST", "/v1/models/x%2Fray/rollback", {"reason": "bad canary"}),
        ("GET", "/v1/models/x%2Fray/events", None),
    ]


def test_unreachable_and_slow_apis() -> None:
    port = free_port()  # nothing listens there
    refused = _error(ApiClient(f"http://127.0.0.1:{port}", "k").me)
    assert str(refused) == f"cannot reach the API at http://127.0.0.1:{port}" and refused.status is None

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            threading.Event().wait(2)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        slow = _error(ApiClient(base, "k", timeout_s=0.3).me)
        assert str(slow) == f"the API at {base} did not answer within 0.3 s"
    finally:
        server.shutdown()
        server.server_close()


def test_api_url_is_checked() -> None:
    assert check_api_url(" http://127.0.0.1:8000/ ") == "http://127.0.0.1:8000"
    assert check_api_url("https://triage.example.org/api") == "https://triage.example.org/api"
    for bad in ("127.0.0.1:8000", "ftp://host", "http://", "http://host:99999", "http://u:p@host", "http://h/?q=1"):
        with pytest.raises(CnnlabError, match="--api"):
            check_api_url(bad)


def test_streamlit_command_serves_the_page_headless_on_the_address_given() -> None:
    command = streamlit_command("http://127.0.0.1:8000", "127.0.0.1", 8601)
    assert command[1:5] == ["-m", "streamlit", "run", str(APP)] and APP.is_file()
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert options["--server.address"] == "127.0.0.1" and options["--server.port"] == "8601"
    assert options["--server.headless"] == "true" and options["--browser.gatherUsageStats"] == "false"
    assert options["--client.showErrorDetails"] == "none"


def test_cnnlab_ui_help_and_bad_arguments(capsys, monkeypatch) -> None:
    code, out, _ = run_cli(["ui", "--help"], capsys, monkeypatch)
    assert code == 0 and "cnnlab ui --api http://127.0.0.1:8000" in out
    code, _, err = run_cli(["ui", "--api", "localhost:8000"], capsys, monkeypatch)
    assert code == 2 and "--api must be an http(s) URL" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["ui", "--api", "http://127.0.0.1:8000", "--port", "0"], capsys, monkeypatch)
    assert code == 2 and "--port must be between 1 and 65535" in err
    assert API_ENV == "CNNLAB_UI_API"
