"""A service over the tiny trained bundle, a fresh state directory per test, and keys of every role."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab import bundle
from cnnlab.serve.app import create_app
from cnnlab.serve.security import Role, create_key
from cnnlab.serve.settings import ServeSettings

OVERRIDE = "test: these tests configure no gate folder"
"""The override reason tests give where activation is not what they test (no gate folder is configured)."""


def png_bytes(seed: int = 0, size: int = 28) -> bytes:
    """A grey noise image: the tiny LeNet is unsure about it, so it lands in the review queue."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def upload(data: bytes, name: str = "image.png") -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name, data, "application/octet-stream")}


@pytest.fixture(scope="session")
def second_version(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_second_version(trained_bundle, tmp_path_factory.mktemp("bundle-v2") / "run")


def make_second_version(run: Path, out: Path) -> Path:
    """The same model name with slightly different weights, created later: a second version."""
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("checkpoints", "eval", "explain", "export"))
    card = bundle.read_card(out)
    state = bundle.load_state(out, card)
    state = {k: v + 1e-4 if v.is_floating_point() else v for k, v in state.items()}
    card = card.with_changes(
        weights_sha256=bundle.save_weights(state, out / bundle.WEIGHTS),
        created_at=(datetime.now(UTC) + timedelta(minutes=1)).isoformat(timespec="seconds"),
    )
    bundle.write_card(out, card)
    return out


@pytest.fixture
def settings(trained_bundle: Path, tmp_path: Path) -> ServeSettings:
    return ServeSettings(runs=[trained_bundle], state_dir=tmp_path / "state", review_threshold=1.0)


class Service:
    """A TestClient with a key per role."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.app = client.app
        store = self.app.state.store
        self.keys = {role.name: create_key(store, role, f"test-{role.name}")[1] for role in Role}

    def headers(self, role: str | None) -> dict[str, str]:
        return {"X-API-Key": self.keys[role]} if role else {}

    def predict(self, data: bytes, role: str | None = "clinician", query: str = "") -> object:
        return self.client.post(f"/v1/predict{query}", files=upload(data), headers=self.headers(role))


@pytest.fixture
def service(settings: ServeSettings) -> Iterator[Service]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Service(client)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(*args: str | Path) -> Iterator[str]:
    """`cnnlab serve ARGS` on a free loopback port, as a process; yields its base URL once /readyz
    answers, and stops it afterwards."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cnnlab.cli", "serve", *map(str, args), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "the service did not start"
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=60)
