"""The service picks its device once at start and says which in /readyz."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from cnnlab.errors import ConfigError
from cnnlab.serve.app import create_app
from cnnlab.serve.settings import ServeSettings


def test_readyz_reports_the_device(settings: ServeSettings) -> None:
    with TestClient(create_app(settings.model_copy(update={"device": "cpu"}))) as client:
        ready = client.get("/readyz").json()
    assert ready["device"] == "cpu"
    with TestClient(create_app(settings)) as client:  # the default: auto
        ready = client.get("/readyz").json()
    assert ready["device"].startswith("cuda:0 (") if torch.cuda.is_available() else ready["device"] == "cpu"


def test_a_missing_gpu_stops_the_service_before_it_serves(settings: ServeSettings) -> None:
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ConfigError) as info:
        create_app(settings.model_copy(update={"device": missing}))
    assert "\n" not in str(info.value) and "this machine has: cpu" in str(info.value)


def test_the_device_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_SERVE_DEVICE", "cpu")
    assert ServeSettings().device == "cpu"
