"""The routes' typed dependencies: what a request may use (the settings, the store, the models, the
metrics, the monitor and the release decisions of its app) and who is asking (an API key of a least role).

Routes take these `Annotated` aliases as parameters and never read `request.app.state` themselves,
so each route says in its signature what it touches, and `create_app` is the one place that state
is put together."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader

from cnnlab.serve.metrics import ServiceMetrics
from cnnlab.serve.models import LoadedModel, ModelRegistry
from cnnlab.serve.monitor import Monitor
from cnnlab.serve.release import Release
from cnnlab.serve.security import KEY_HEADER, PatientKeys, Principal, Role, hash_key
from cnnlab.serve.settings import ServeSettings
from cnnlab.serve.store import RATE_LIMITED, PredictionRow, Store, as_utc, utcnow

RATE_WINDOW = timedelta(minutes=1)


# async only so FastAPI calls them on the event loop: an attribute read is not worth a thread-pool hop.
async def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_models(request: Request) -> ModelRegistry:
    return request.app.state.models


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


async def get_monitor(request: Request) -> Monitor:
    return request.app.state.monitor


async def get_release(request: Request) -> Release:
    return request.app.state.release


async def get_patient_keys(request: Request) -> PatientKeys:
    return request.app.state.patient_keys


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
ModelsDep = Annotated[ModelRegistry, Depends(get_models)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
MonitorDep = Annotated[Monitor, Depends(get_monitor)]
ReleaseDep = Annotated[Release, Depends(get_release)]
PatientKeysDep = Annotated[PatientKeys, Depends(get_patient_keys)]


# --------------------------------------------------------------------------- who is asking
_key_header = APIKeyHeader(name=KEY_HEADER, auto_error=False, description="An API key from `cnnlab keys create`.")


def authenticate(request: Request, store: Store, key: str | None) -> Principal:
    """The key's holder, or 401; noted on the request for the audit row."""
    if not key:
        raise HTTPException(401, "missing API key (send it in the X-API-Key header)")
    row = store.key_by_hash(hash_key(key))
    if row is None or row.revoked_at is not None:
        raise HTTPException(401, "invalid or revoked API key")
    expires = as_utc(row.expires_at) if row.expires_at else None
    if expires is not None and row.expired():
        raise HTTPException(401, f"API key expired (at {expires:%Y-%m-%d %H:%M} UTC); ask for a new one")
    principal = Principal(row.key_id, Role[row.role], row.name, expires)
    # The audit middleware reads who asked, whether or not the role then suffices.
    request.state.key_id, request.state.role = principal.key_id, principal.role.name
    return principal


def check_rate(request: Request, settings: ServeSettings, store: Store, principal: Principal) -> None:
    """429 with Retry-After when the key has made `rate_limit_per_minute` requests in the last minute.

    The count comes from the audit log, so it covers every worker process and machine on the database;
    requests still in flight are not in it yet, so a burst may pass the limit by up to the concurrency."""
    limit = settings.rate_limit_per_minute
    if not limit:
        return
    now = utcnow()
    count, ages_out = store.key_usage(principal.key_id, now - RATE_WINDOW, limit)
    if ages_out is None:
        return
    # The request whose leaving the window brings the count under the limit: the key may retry then.
    wait = max(1, math.ceil((ages_out + RATE_WINDOW - now).total_seconds()))
    request.state.outcome = RATE_LIMITED
    raise HTTPException(
        429,
        f"this key made {count} requests in the last minute, over the limit of {limit} a minute; retry in {wait} s",
        headers={"Retry-After": str(wait)},
    )


def require(least: Role, public_flag: str | None = None) -> Callable[..., Principal | None]:
    """A dependency admitting keys of role `least` or above; when the settings flag named
    `public_flag` is on, anyone is admitted (as no principal)."""

    def dependency(
        request: Request,
        settings: SettingsDep,
        store: StoreDep,
        key: Annotated[str | None, Security(_key_header)] = None,
    ) -> Principal | None:
        if public_flag and getattr(settings, public_flag):
            return None
        principal = authenticate(request, store, key)
        check_rate(request, settings, store, principal)
        if principal.role < least:
            raise HTTPException(403, f"this needs the {least.name} role or above; the key has {principal.role.name}")
        return principal

    return dependency


Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Clinician = Annotated[Principal, Depends(require(Role.clinician))]
Admin = Annotated[Principal, Depends(require(Role.admin))]
MetricsReader = Annotated[Principal | None, Depends(require(Role.viewer, "public_metrics"))]
DocsReader = Annotated[Principal | None, Depends(require(Role.viewer, "public_docs"))]


# --------------------------------------------------------------------------- what it is about
ModelName = Annotated[str | None, Query(description="Model name; needed when several are served.")]


def served_name(models: ModelRegistry, name: str | None) -> str:
    """`name` (the only model's when None): 422 when the choice is ambiguous, 404 when no such model is served."""
    names = models.names()
    if name is None:
        if len(names) != 1:
            raise HTTPException(422, f"several models are served; choose one with ?model= ({', '.join(names)})")
        return names[0]
    if name not in names:
        raise HTTPException(404, f"no model named '{name}' is served")
    return name


def choose_model(models: ModelRegistry, name: str | None) -> LoadedModel:
    """The active version of model `name` (the only model when None), or `served_name`'s 422 or 404."""
    model = models.active(served_name(models, name))
    assert model is not None  # every served name has an active version
    return model


def chosen_model(request: Request, models: ModelsDep, model: ModelName = None) -> LoadedModel:
    chosen = choose_model(models, model)
    request.state.model_version = chosen.version
    return chosen


ChosenModel = Annotated[LoadedModel, Depends(chosen_model)]
"""The active version of the model the `?model=` query names, noted for the audit row."""


def stored_prediction(request: Request, store: Store, request_id: str) -> PredictionRow:
    """The prediction with that request id (404 when none), noted for the audit row."""
    pred = store.prediction(request_id)
    if pred is None:
        raise HTTPException(404, f"no prediction with request id '{request_id}'")
    request.state.model_version = pred.model_version
    request.state.input_sha256 = pred.input_sha256
    return pred
