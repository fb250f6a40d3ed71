"""Each API key's rate limit: 429 with Retry-After past it, in the API's error shape and audited; counted
in the shared database, so every worker process (and machine) on it sees the same count."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cnnlab.serve.app import create_app
from cnnlab.serve.settings import ServeSettings
from tests.serve.conftest import Service, png_bytes


def limited(settings: ServeSettings, per_minute: int) -> TestClient:
    app = create_app(settings.model_copy(update={"rate_limit_per_minute": per_minute}))
    return TestClient(app, raise_server_exceptions=False)


def test_a_key_past_its_limit_gets_429_with_retry_after(settings: ServeSettings) -> None:
    with limited(settings, 3) as client:
        service = Service(client)
        viewer = service.headers("viewer")
        assert [client.get("/v1/models", headers=viewer).status_code for _ in range(3)] == [200, 200, 200]
        refused = client.get("/v1/models", headers=viewer)
        assert refused.status_code == 429
        assert set(refused.json()) == {"detail", "request_id"}
        assert "over the limit of 3 a minute" in refused.json()["detail"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert client.get("/v1/me", headers=viewer).status_code == 429  # every route of that key
        # Another key has its own minute; probes need no key and are not limited.
        assert service.predict(png_bytes()).status_code == 200
        assert client.get("/healthz").status_code == 200
        audit = [(r.key_id, r.status, r.outcome) for r in service.app.state.store.audit_rows()]
    assert audit[3] == audit[4] and audit[3][1:] == (429, "rate_limited")
    assert audit[3][0] in service.keys["viewer"]  # the refused key, as for any other refusal


def test_the_limit_is_shared_by_every_process_on_the_database(settings: ServeSettings) -> None:
    """Two apps on one database stand for two worker processes of `cnnlab serve --workers 2`."""
    with limited(settings, 3) as first, limited(settings, 3) as second:
        keys = Service(first)
        viewer = keys.headers("viewer")
        assert first.get("/v1/models", headers=viewer).status_code == 200
        assert second.get("/v1/models", headers=viewer).status_code == 200
        assert first.get("/v1/models", headers=viewer).status_code == 200
        assert second.get("/v1/models", headers=viewer).status_code == 429


def test_the_default_limit_and_none(settings: ServeSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServeSettings().rate_limit_per_minute == 120
    monkeypatch.setenv("CNNLAB_SERVE_RATE_LIMIT_PER_MINUTE", "0")
    assert ServeSettings().rate_limit_per_minute == 0
    with limited(settings, 0) as client:
        service = Service(client)
        assert {client.get("/v1/me", headers=service.headers("viewer")).status_code for _ in range(8)} == {200}
