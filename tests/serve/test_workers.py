"""`cnnlab serve --workers 2`: two processes on one database agree on which version is active, and
/metrics and /v1/monitor report every worker's requests whichever worker answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from cnnlab.serve.app import create_app, settings_environment
from cnnlab.serve.settings import ServeSettings
from tests.serve.conftest import OVERRIDE, Service, png_bytes, serving, upload


def _cnnlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnlab.cli", *args], capture_output=True, text=True, timeout=120)


def test_two_processes_on_one_database_agree_on_the_active_version(
    settings: ServeSettings, second_version: Path
) -> None:
    """Two apps on one database stand for two worker processes (or machines): an activation made
    through one is what the other serves on its next request."""
    both = settings.model_copy(update={"runs": [*settings.runs, second_version]})
    with TestClient(create_app(both)) as first, TestClient(create_app(both)) as second:
        a, b = Service(first), Service(second)
        models = second.get("/v1/models", headers=b.headers("viewer")).json()
        inactive = next(m for m in models if not m["active"])
        body = {"version": inactive["version"], "override_reason": OVERRIDE}
        answer = first.post(f"/v1/models/{inactive['name']}/activate", json=body, headers=a.headers("admin"))
        assert answer.status_code == 200
        seen = second.get("/v1/models", headers=b.headers("viewer")).json()
        assert [m["version"] for m in seen if m["active"]] == [inactive["version"]]


def test_worker_settings_round_trip_through_the_environment(settings: ServeSettings, monkeypatch) -> None:
    for name, value in settings_environment(settings).items():
        monkeypatch.setenv(name, value)
    assert ServeSettings() == settings


@pytest.mark.slow
def test_an_activation_reaches_every_worker(trained_bundle: Path, second_version: Path, tmp_path: Path) -> None:
    state = ["--state-dir", str(tmp_path / "state")]
    admin = _cnnlab("keys", "create", "--role", "admin", *state).stdout.strip()
    headers = {"X-API-Key": admin}
    with serving(trained_bundle, second_version, *state, "--workers", "2") as base:
        models = httpx.get(f"{base}/v1/models", headers=headers, timeout=10).json()
        inactive = next(m for m in models if not m["active"])
        activated = httpx.post(
            f"{base}/v1/models/{inactive['name']}/activate",
            json={"version": inactive["version"], "override_reason": OVERRIDE},
            headers=headers, timeout=10,
        )  # fmt: skip
        assert activated.status_code == 200, activated.text
        active = set()
        for _ in range(20):  # new connections: the kernel spreads them over both workers
            answer = httpx.get(f"{base}/v1/models", headers=headers, timeout=10)
            active |= {m["version"] for m in answer.json() if m["active"]}
        assert active == {inactive["version"]}

        # Counts are every worker's, whichever worker answers the scrape.
        for seed in range(6):
            answer = httpx.post(f"{base}/v1/predict", files=upload(png_bytes(seed)), headers=headers, timeout=30)
            assert answer.status_code == 200, answer.text
        totals, windows, latency = set(), set(), set()
        for _ in range(12):
            scrape = httpx.get(f"{base}/metrics", headers=headers, timeout=10).text
            totals.add(sum(float(line.rsplit(" ", 1)[1]) for line in scrape.splitlines()
                           if line.startswith("cnnlab_predictions_total{")))  # fmt: skip
            latency |= {line for line in scrape.splitlines() if line.startswith("cnnlab_request_seconds_count")}
            report = httpx.get(f"{base}/v1/monitor", headers=headers, timeout=30).json()
            windows.add(report["window"]["requests"])
        assert totals == {6.0} and windows == {6}
        assert latency, "the latency histogram (multiprocess mode) is exported"
