"""The page against the real thing: a small chest X-ray bundle (two versions), `cnnlab serve` and
`cnnlab ui` as subprocesses on free ports of 127.0.0.1, keys of every role made by `cnnlab keys create`
(and one expired), and helpers that drive the page in Debian's Chromium."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from tests.conftest import ARTIFACTS, SHARED_DATA, tiny_config
from tests.serve.conftest import make_second_version

XRAY = SHARED_DATA / "chest-xray"
START_TIMEOUT_S = 120
"""Both servers start in parallel on 2 busy cores: each imports torch (about 5 s) before it answers."""
UI_WAIT_MS = 30_000
"""Longest a page element may take to appear (a Streamlit rerun plus an API call on a busy machine)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def xray_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """simple_cnn on the shared chest X-rays at 64 px for 2 epochs (about 8 s), calibrated with an
    operating point for 'not normal': classes covid19, normal, pneumonia."""
    from cnnlab.tasks.calibrate import calibrate
    from cnnlab.tasks.train import train

    out = tmp_path_factory.mktemp("xray") / "run"
    overrides = {"name": "xray", "data.source": "chest-xray", "data.data_dir": str(XRAY), "data.input_size": 64,
                 "model.name": "simple_cnn", "data.limit_train": None}  # fmt: skip
    train(tiny_config(**overrides), out)
    calibrate(out, "auto", "not normal", None, str(XRAY))
    return out


def cnnlab_cli(*args: str) -> str:
    """Run a `cnnlab` command in this process (torch is already imported here) and return its stdout."""
    from cnnlab.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"cnnlab {' '.join(args)}: {result.output}"
    return result.stdout


@dataclass
class Stack:
    api: str
    ui: str
    keys: dict[str, str]
    """viewer, clinician, admin, expired"""
    state_dir: Path

    def call(self, method: str, path: str, role: str = "admin", **kwargs: Any) -> requests.Response:
        return requests.request(method, self.api + path, headers={"X-API-Key": self.keys[role]}, timeout=60, **kwargs)


def _wait_ready(url: str, process: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not answer {url} within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="session")
def stack(xray_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("ui-stack")
    version_2 = make_second_version(xray_bundle, root / "xray-v2")
    state = root / "state"
    keys = {
        role: cnnlab_cli("keys", "create", "--role", role, "--name", f"dr-{role}", "--state-dir", str(state)).strip()
        for role in ("viewer", "clinician", "admin")
    }
    keys["expired"] = cnnlab_cli(
        "keys", "create", "--role", "clinician", "--name", "dr-expired", "--expires-in", "1", "--state-dir", str(state)
    ).strip()
    with sqlite3.connect(state / "serve.db") as conn:  # as if the day had passed
        conn.execute("UPDATE api_keys SET expires_at = '2000-01-01 00:00:00.000000' WHERE name = 'dr-expired'")
    api_port, ui_port = free_port(), free_port()
    api, ui = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ui_port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    serve_log, ui_log = root / "serve.log", root / "ui.log"
    with serve_log.open("w") as serve_out, ui_log.open("w") as ui_out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "cnnlab.cli", "serve", str(xray_bundle), str(version_2), "--port", str(api_port),
             "--state-dir", str(state), "--review-threshold", "0.99"],
            stdout=serve_out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        page = subprocess.Popen(
            [sys.executable, "-m", "cnnlab.cli", "ui", "--api", api, "--port", str(ui_port)],
            stdout=ui_out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        _wait_ready(f"{api}/readyz", serve, serve_log, "cnnlab serve")
        _wait_ready(f"{ui}/_stcore/health", page, ui_log, "cnnlab ui")
        yield Stack(api, ui, keys, state)
    finally:
        _stop(page)
        _stop(serve)


def xray_image(label: str = "pneumonia") -> Path:
    return sorted((XRAY / "test" / label).glob("*.png"))[0]


# --------------------------------------------------------------------------- driving the page
def settle(page: Any) -> None:
    """Wait until Streamlit has drawn the page: its lazily loaded widgets and the running indicator gone."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stSkeleton")).to_have_count(0, timeout=UI_WAIT_MS)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=UI_WAIT_MS)


def sign_in(page: Any, stack: Stack, role: str) -> None:
    from playwright.sync_api import expect

    page.goto(stack.ui)
    page.get_by_label("API key", exact=True).fill(stack.keys[role])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"Role: {role}")).to_be_visible(timeout=UI_WAIT_MS)


def go_to(page: Any, title: str) -> None:
    from playwright.sync_api import expect

    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible(timeout=UI_WAIT_MS)


def screenshot(page: Any, name: str) -> Path:
    """The whole page, not only the window: Streamlit scrolls its main area inside the viewport, so
    the window is made as tall as that content for the picture, then put back."""
    settle(page)
    size = page.viewport_size
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], [data-testid=stSidebarContent]')]"
        ".map(e => e.scrollHeight), window.innerHeight)"
    )
    page.set_viewport_size({"width": size["width"], "height": int(height)})
    settle(page)
    path = ARTIFACTS / f"ui-{name}.png"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path


def shown_request_id(page: Any) -> str:
    text = page.get_by_text(re.compile(r"request [0-9a-f]{32}")).inner_text()
    return re.search(r"request ([0-9a-f]{32})", text).group(1)
