"""`create_app(settings)`: the triage service, built on call (nothing happens at import)."""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnlab import __version__
from cnnlab.engine.device import resolve_device
from cnnlab.serve.metrics import ServiceMetrics
from cnnlab.serve.middleware import ServiceMiddleware
from cnnlab.serve.models import ModelRegistry
from cnnlab.serve.monitor import Monitor
from cnnlab.serve.release import Release
from cnnlab.serve.routes import account, feedback, health, models, monitor, predict, predictions
from cnnlab.serve.security import PatientKeys
from cnnlab.serve.settings import ServeSettings
from cnnlab.serve.store import Store, is_busy

log = logging.getLogger("cnnlab.serve")


def create_app(settings: ServeSettings) -> FastAPI:
    """A service over `settings.runs`; raises a `CnnlabError` for a bad bundle before serving anything."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    settings.images_dir.mkdir(exist_ok=True)
    store = Store(settings.database_url(), settings.db_busy_timeout_s)
    try:
        registry = ModelRegistry.from_runs(list(settings.runs), store, resolve_device(settings.device))
    except BaseException:
        store.close()
        raise

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        store.close()

    app = FastAPI(
        title="cnnlab triage service",
        version=__version__,
        description="Predictions with calibrated probabilities, Grad-CAM overlays, clinician feedback and a "
        "review queue over cnnlab bundles. Every route but /healthz and /readyz needs an X-API-Key.",
        docs_url=None,  # served by routes/health.py behind a key unless public_docs
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    metrics = ServiceMetrics(store)
    # Read by the routes only through serve/deps.py's dependencies.
    app.state.settings = settings
    app.state.store = store
    app.state.models = registry
    app.state.metrics = metrics
    app.state.monitor = Monitor(store)
    app.state.release = Release(settings, store)
    app.state.patient_keys = PatientKeys.for_service(settings.patient_id_key, store)
    if settings.patient_id_key is None:
        log.warning(
            "patient ids are hashed with a key kept in the service's own database: a copy of the database "
            "holds both; set CNNLAB_SERVE_PATIENT_ID_KEY from a secret store in a deployment"
        )

    for module in (health, account, predict, predictions, feedback, models, monitor):
        app.include_router(module.router)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(request, exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Only where and what: pydantic's `input` would echo the request (an upload's bytes) back.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return error_response(request, 422, errors)

    @app.exception_handler(OperationalError)
    async def _database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        # A locked or read-only database is the service's state, not a bug: say so, and that nothing was stored.
        log.warning("request %s: the database refused (%s)", request_id_of(request), exc.orig or exc)
        request.state.outcome = "database_unavailable"
        if is_busy(exc):
            detail = "the database is busy (another writer holds its lock); nothing was stored, retry shortly"
            return error_response(request, 503, detail, {"Retry-After": "1"})
        return error_response(request, 503, "the database does not take writes; nothing was stored")

    app.add_middleware(ServiceMiddleware, settings=settings, store=store, metrics=metrics)
    return app


def create_app_from_environment() -> FastAPI:
    """The app of one worker process of `cnnlab serve --workers N` (uvicorn's factory): its settings
    come from the CNNLAB_SERVE_* environment the parent set, its state from the shared database."""
    return create_app(ServeSettings())


def settings_environment(settings: ServeSettings) -> dict[str, str]:
    """`settings` as CNNLAB_SERVE_* variables, so that worker processes build the same app."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is not None:
            env[f"CNNLAB_SERVE_{name.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
    return env


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def error_response(request: Request, status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "request_id": request_id_of(request)}, status, headers=headers)
