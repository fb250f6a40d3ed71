"""The clinical loop end to end, on loopback, through the commands a hospital runs: serve version A;
clinicians predict and correct; the feedback is exported and B is retrained with `--extra-data`; the
gate passes B and refuses a broken bundle (CLI and service); B goes live as a 50% canary; the monitor
shows both versions with their live agreement; B is promoted, then rolled back; the audit chain
verifies throughout."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from cnnlab.data.sources import load_source
from tests.conftest import tiny_config
from tests.data.folders import write_metadata
from tests.serve.conftest import serving
from tests.test_cli_gate import zeroed_copy

pytestmark = pytest.mark.slow


def cnnlab(*args: str | Path, expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "cnnlab.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == expect, f"cnnlab {' '.join(map(str, args))}: {done.returncode}\n{done.stderr[-3000:]}"
    return done


def digit_folder(root: Path, images: np.ndarray, labels: np.ndarray, patients: list[str]) -> Path:
    rows = []
    for i, (image, label, patient) in enumerate(zip(images, labels, patients, strict=True)):
        name = f"{label}/{i:03d}.png"
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).save(root / name)
        rows.append({"file": name, "label": str(label), "patient_id": patient})
    write_metadata(root, rows)
    return root


def png(image: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(image[0]).save(buf, "PNG")
    return buf.getvalue()


def audit_holds(state: Path) -> None:
    assert "hash chain verified" in cnnlab("audit", "verify", "--state-dir", state).stdout


def test_the_clinical_loop(trained_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    x, y = load_source(tiny_config().data, 28).splits["test"]
    x, y = x.numpy(), y.numpy()
    order = np.random.default_rng(0).permutation(len(y))
    gate_idx, live_idx = order[:200], order[200:260]
    gate = digit_folder(tmp_path / "gate", x[gate_idx], y[gate_idx], [f"G{i // 2}" for i in range(200)])
    state, a = tmp_path / "state", trained_bundle
    admin = cnnlab("keys", "create", "--role", "admin", "--state-dir", state).stdout.strip()
    clinician = cnnlab("keys", "create", "--role", "clinician", "--state-dir", state).stdout.strip()
    as_admin, as_clinician = {"X-API-Key": admin}, {"X-API-Key": clinician}

    # 1. A serves; clinicians predict on new patients and correct some answers.
    with serving(a, "--state-dir", state, "--gate-data", gate) as base:
        answers = []
        for n, k in enumerate(live_idx[:20]):
            r = httpx.post(f"{base}/v1/predict", files={"file": ("x.png", png(x[k]), "image/png")},
                           data={"patient_id": f"MRN-{n}"}, headers=as_clinician, timeout=30)  # fmt: skip
            assert r.status_code == 200, r.text
            assert r.json()["intended_use"].startswith("Decision support")
            answers.append((r.json(), str(y[k])))
        for answer, truth in answers[:12]:
            r = httpx.post(f"{base}/v1/feedback", json={"request_id": answer["request_id"], "label": truth},
                           headers=as_clinician, timeout=30)  # fmt: skip
            assert r.status_code == 200
        assert httpx.post(f"{base}/v1/feedback", json={"request_id": "no-such", "label": "1"}, headers=as_clinician,
                          timeout=30).status_code == 404  # fmt: skip
        feedback = tmp_path / "feedback"
        cnnlab("feedback", "export", "--out", feedback, "--state-dir", state)
    rows = list(csv.DictReader((feedback / "metadata.csv").open()))
    assert len(rows) == 12 and {r["source"] for r in rows} == {"feedback"}
    assert all(len(r["patient_id"]) == 64 and "MRN" not in r["patient_id"] for r in rows)
    audit_holds(state)

    # 2. B: A's weights fine-tuned on the same data plus the feedback (training split only).
    b = tmp_path / "b"
    cnnlab("train", "--data", "mnist-sample", "--set", "name=tiny", "--set", "data.limit_train=1500",
           "--set", f"model.weights={a / 'model.safetensors'}", "--epochs", "1", "--lr", "1e-4",
           "--extra-data", feedback, "--out", b)  # fmt: skip
    card = json.loads((b / "model.json").read_text())
    datasets = {d["role"]: d for d in card["data"]["datasets"]}
    assert datasets["extra (training only)"]["images"]["train"] == 12 and len(datasets["main"]["sha256"]) == 64

    # 3. The gate: B passes against A, a broken bundle is refused.
    broken = zeroed_copy(a, tmp_path / "broken-parent")
    assert "PASSED" in cnnlab("gate", b, "--against", a, "--data", gate).stdout
    assert "REFUSED" in cnnlab("gate", broken, "--against", a, "--data", gate, expect=1).stdout

    # 4. The service gains B and the broken bundle; A stays active until the gate says otherwise.
    with serving(a, b, broken, "--state-dir", state, "--gate-data", gate) as base:
        listed = httpx.get(f"{base}/v1/models", headers=as_admin, timeout=30).json()
        active = next(m for m in listed if m["role"] == "active")
        assert active["sha256"] == json.loads((a / "model.json").read_text())["weights_sha256"]
        vb = card["weights_sha256"][:12]
        vbroken = json.loads((broken / "model.json").read_text())["weights_sha256"][:12]
        assert {m["version"] for m in listed} == {active["version"], vb, vbroken}

        rollout = f"{base}/v1/models/tiny/rollout"
        refused = httpx.post(rollout, json={"version": vbroken, "mode": "canary", "fraction": 0.5}, headers=as_admin,
                             timeout=120)  # fmt: skip
        assert refused.status_code == 409 and "refused" in refused.json()["detail"]
        assert httpx.post(f"{base}/v1/models/tiny/activate", json={"version": vbroken}, headers=as_admin,
                          timeout=120).status_code == 409  # fmt: skip
        bad = httpx.post(rollout, json={"version": vb, "mode": "canary", "fraction": 1.5}, headers=as_admin, timeout=30)
        assert bad.status_code == 422

        started = httpx.post(rollout, json={"version": vb, "mode": "canary", "fraction": 0.5}, headers=as_admin,
                             timeout=120)  # fmt: skip
        assert started.status_code == 200, started.text
        assert started.json()["gate"]["passed"] is True
        served: dict[str, int] = {}
        for n, k in enumerate(live_idx[20:60]):
            r = httpx.post(f"{base}/v1/predict", files={"file": ("x.png", png(x[k]), "image/png")},
                           data={"patient_id": f"MRN-{100 + n}"}, headers=as_clinician, timeout=30)  # fmt: skip
            assert r.status_code == 200
            served[r.json()["model"]["version"]] = served.get(r.json()["model"]["version"], 0) + 1
            httpx.post(f"{base}/v1/feedback", json={"request_id": r.json()["request_id"], "label": str(y[k])},
                       headers=as_clinician, timeout=30)  # fmt: skip
        assert set(served) == {active["version"], vb} and min(served.values()) >= 8  # about half each
        report = httpx.get(f"{base}/v1/monitor", headers=as_admin, timeout=60).json()
        rows_by_version = {v["version"]: v for v in report["versions"]}
        assert rows_by_version[vb]["role"] == "canary" and rows_by_version[active["version"]]["role"] == "active"
        for v in (vb, active["version"]):
            assert rows_by_version[v]["feedback"] >= 8 and rows_by_version[v]["agreement"] is not None
        audit_holds(state)

        promoted = httpx.post(f"{base}/v1/models/tiny/promote", json={}, headers=as_admin, timeout=120)
        assert promoted.status_code == 200 and promoted.json()["version"] == vb
        back = httpx.post(f"{base}/v1/models/tiny/rollback", json={"reason": "e2e: back to A"}, headers=as_admin,
                          timeout=30)  # fmt: skip
        assert back.json() == {"action": "reactivated", "active": active["version"]}
        events = httpx.get(f"{base}/v1/models/tiny/events", headers=as_admin, timeout=30).json()
        assert [e["action"] for e in events][:3] == ["rollback", "promote", "canary"]
        assert "gate refused" in [e["action"] for e in events]
    audit_holds(state)
