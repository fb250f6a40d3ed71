"""TLS: the service over HTTPS with a self-signed certificate, verified by the client; plain HTTP refused."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from cnnlab.serve.app import create_app
from cnnlab.serve.security import Role, create_key
from cnnlab.serve.settings import ServeSettings
from tests.serve.conftest import png_bytes, upload

HOST = "127.0.0.1"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, valid one day; the openssl CLI (`cryptography` is not installed)."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command is missing: `make test` installs Debian's openssl"
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={HOST}",
         "-addext", f"subjectAltName=IP:{HOST}"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def https_server(settings: ServeSettings, tmp_path: Path) -> Iterator[tuple[int, Path, str]]:
    """(port, certificate, a clinician key) of a uvicorn server on 127.0.0.1 with TLS, stopped at teardown."""
    cert, key = self_signed(tmp_path)
    app = create_app(settings)
    api_key = create_key(app.state.store, Role.clinician, "tls-test")[1]
    config = uvicorn.Config(
        app, host=HOST, port=0, ssl_certfile=str(cert), ssl_keyfile=str(key), log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]  # port 0: the system chose a free one
    try:
        yield port, cert, api_key
    finally:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "the server did not stop"


def test_https_with_the_given_certificate(https_server: tuple[int, Path, str]) -> None:
    port, cert, api_key = https_server
    with httpx.Client(
        base_url=f"https://{HOST}:{port}", verify=ssl.create_default_context(cafile=cert), timeout=10
    ) as client:
        response = client.get("/healthz")
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        assert response.http_version == "HTTP/1.1" and response.headers["x-request-id"]
        made = client.post("/v1/predict", files=upload(png_bytes()), headers={"X-API-Key": api_key})
        assert made.status_code == 200, made.text

    # A client that trusts only the usual authorities refuses the self-signed certificate.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://{HOST}:{port}/healthz", timeout=10)
    # Plain HTTP to the TLS port gets no answer: the server drops a connection that does not start a handshake.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{HOST}:{port}/healthz", timeout=10)
