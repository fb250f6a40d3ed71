"""GET /v1/monitor and the drift test behind it: real digits look like validation, noise does not."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.config import DataConfig
from cnnlab.data.sources import load_source
from cnnlab.evaluation.drift import MIN_RECENT, load_reference, mmd_test
from tests.serve.conftest import Service, png_bytes


def test_mmd_separates_shifted_samples_and_not_equal_ones() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(200, 16))
    same = mmd_test(rng.normal(size=(60, 16)), reference, permutations=200)
    shifted = mmd_test(rng.normal(size=(60, 16)) + 0.8, reference, permutations=200)
    assert same.p_value > 0.05 and shifted.p_value < 0.01
    assert shifted.statistic > same.statistic > -1e-9
    assert same.to_dict()["verdict"] == "not drifted" and shifted.to_dict()["verdict"] == "drifted"


def test_training_stores_a_reference_sample(trained_bundle: Path) -> None:
    import json

    card = json.loads((trained_bundle / "model.json").read_text())
    reference = load_reference(trained_bundle)
    assert reference is not None and reference["embeddings"].shape == (card["reference"]["images"], 120)
    assert abs(sum(card["reference"]["predicted_distribution"].values()) - 1) < 1e-9


def _digit_pngs(n: int) -> list[bytes]:
    """Real test digits, drawn at random: the split is ordered by class, and its first images
    (all zeros) would rightly count as drift against a validation sample of every digit."""
    x, _ = load_source(DataConfig(source="mnist-sample"), 28).splits["test"]
    out = []
    for image in x[np.random.default_rng(0).permutation(len(x))[:n]]:
        buf = io.BytesIO()
        Image.fromarray(image[0].numpy()).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def test_monitor_reports_latency_predictions_and_drift(service: Service) -> None:
    assert service.client.get("/v1/monitor").status_code == 401
    report = service.client.get("/v1/monitor", headers=service.headers("viewer")).json()
    assert report["window"]["requests"] == 0 and report["drift"]["verdict"] == "not enough data"
    for data in _digit_pngs(MIN_RECENT + 5):
        assert service.predict(data).status_code == 200
    report = service.client.get("/v1/monitor", headers=service.headers("viewer")).json()
    assert report["window"]["requests"] == MIN_RECENT + 5
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["p99"]
    assert abs(sum(report["predictions"]["recent"].values()) - 1) < 1e-9
    assert set(report["predictions"]["validation"]) == set(report["predictions"]["recent"])
    assert report["drift"]["verdict"] == "not drifted", report["drift"]
    assert report["requests_by_status"]["200"] >= MIN_RECENT + 5
    assert service.client.get("/v1/monitor?model=nope", headers=service.headers("viewer")).status_code == 404


def test_noise_inputs_are_flagged_as_drift(service: Service) -> None:
    for seed in range(MIN_RECENT + 5):
        assert service.predict(png_bytes(seed)).status_code == 200  # uniform noise, not digits
    drift = service.client.get("/v1/monitor", headers=service.headers("viewer")).json()["drift"]
    assert drift["verdict"] == "drifted" and drift["p_value"] < 0.01
    metrics = service.client.get("/metrics", headers=service.headers("viewer")).text
    assert "cnnlab_drift_mmd{" in metrics
