"""Keys never cross plain HTTP beyond this machine: the page over https with its own certificate, plain
http to a remote API or a page open to the network refused unless allowed, and an https API with a
private certificate verified against the CA file given."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from cnnlab.errors import CnnlabError
from cnnlab.ui import launch
from cnnlab.ui.client import ApiClient, ApiError
from cnnlab.ui.launch import API_CA_ENV, check_api_url, is_loopback, run_ui
from tests.serve.test_tls import self_signed
from tests.test_cli import run_cli
from tests.ui.conftest import START_TIMEOUT_S, free_port
from tests.ui.test_client import ME, _FakeApi


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    """The (command, environment) `run_ui` would become, recorded instead of replacing this process."""
    seen: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(launch.os, "execve", lambda _exe, command, env: seen.append((command, env)))
    return seen


def test_plain_http_to_another_machine_is_refused_unless_allowed() -> None:
    for local in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", "http://127.0.0.2:80"):
        assert check_api_url(local) == local
    assert check_api_url("https://10.1.2.3:8443") == "https://10.1.2.3:8443"
    for remote in ("http://10.1.2.3:8000", "http://triage.example.org", "http://0.0.0.0:8000"):
        with pytest.raises(CnnlabError, match="plain http to another machine") as info:
            check_api_url(remote)
        assert "https://" in str(info.value) and "--allow-plain-http" in str(info.value)
        assert check_api_url(remote, allow_plain_http=True) == remote
    assert is_loopback("127.0.0.1") and is_loopback("LOCALHOST") and not is_loopback("0.0.0.0")


def test_cnnlab_ui_refuses_a_plain_http_api_elsewhere_in_one_line(capsys, monkeypatch, execs) -> None:
    code, _, err = run_cli(["ui", "--api", "http://10.1.2.3:8000"], capsys, monkeypatch)
    assert code == 2 and "plain http to another machine" in err and len(err.strip().splitlines()) == 1
    assert execs == []


def test_a_page_open_to_the_network_needs_tls(tmp_path: Path, execs) -> None:
    api = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CnnlabError, match="--ssl-certfile and --ssl-keyfile"):
        run_ui(api, "0.0.0.0", 8501, warn=lambda _line: None)
    cert, key = self_signed(tmp_path)
    with pytest.raises(CnnlabError, match="go together"):
        run_ui(api, "127.0.0.1", 8501, ssl_certfile=cert)
    with pytest.raises(CnnlabError, match="no such file"):
        run_ui(api, "127.0.0.1", 8501, ssl_certfile=cert, ssl_keyfile=tmp_path / "missing.pem")
    assert execs == []
    lines: list[str] = []
    run_ui(api, "0.0.0.0", 8501, warn=lines.append, ssl_certfile=cert, ssl_keyfile=key)
    run_ui(api, "0.0.0.0", 8502, warn=lines.append, allow_plain_http=True)  # said explicitly: served as asked
    (command, _), (plain, _) = execs
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert options["--server.sslCertFile"] == str(cert) and options["--server.sslKeyFile"] == str(key)
    assert "--server.sslCertFile" not in plain
    assert "the page is on https://0.0.0.0:8501" in lines[1] and "http://0.0.0.0:8502" in lines[3]


def test_the_page_answers_over_https_only(tmp_path: Path) -> None:
    """`run_ui` with a certificate, for real: the page's health probe answers over TLS, verified
    against that certificate, and a plain http request to the same port gets no page."""
    cert, key = self_signed(tmp_path)
    port = free_port()
    script = (
        "import sys; from pathlib import Path; from cnnlab.ui.launch import run_ui; "
        "api, port, cert, key = sys.argv[1:]; "
        "run_ui(api, '127.0.0.1', int(port), ssl_certfile=Path(cert), ssl_keyfile=Path(key))"
    )
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        page = subprocess.Popen(
            [sys.executable, "-c", script, f"http://127.0.0.1:{free_port()}", str(port), str(cert), str(key)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert page.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                health = requests.get(f"https://127.0.0.1:{port}/_stcore/health", verify=str(cert), timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.25)
        assert health.status_code == 200
        assert "the page is on https://127.0.0.1" in log.read_text()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=5)
    finally:
        # Streamlit's TLS server waits out asyncio's 30 s SSL shutdown on SIGTERM: no need to watch that here.
        page.terminate()
        try:
            page.wait(timeout=5)
        except subprocess.TimeoutExpired:
            page.kill()
            page.wait(timeout=15)


@pytest.fixture
def https_fake_api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, certificate) of the fake API of test_client.py, over TLS with a self-signed certificate."""
    cert, key = self_signed(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def test_an_https_api_with_a_private_certificate(https_fake_api: tuple[str, Path], execs) -> None:
    url, cert = https_fake_api
    with pytest.raises(ApiError, match=r"certificate this page does not trust.*--api-ca-file"):
        ApiClient(url, "k").me()
    assert ApiClient(url, "k", ca_file=cert).me().key_id == ME["key_id"]
    lines: list[str] = []
    run_ui(url, "127.0.0.1", 8501, warn=lines.append, api_ca_file=cert)
    assert not any(line.startswith("warning") for line in lines)  # the health probe trusted it too
    ((_, env),) = execs
    assert env[API_CA_ENV] == str(cert.resolve())
