"""Probes, metrics and the API description."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cnnlab.bundle.layout import WEIGHTS
from cnnlab.serve.deps import DocsReader, MetricsDep, MetricsReader, ModelsDep, StoreDep

router = APIRouter()
log = logging.getLogger("cnnlab.serve")


@router.get("/healthz", tags=["health"], summary="The process answers (public)")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], summary="A model is loaded and the database takes writes (public)")
def readyz(models: ModelsDep, store: StoreDep) -> dict[str, Any]:
    if not models.names():
        raise HTTPException(503, "no model is loaded")
    try:
        store.check_writable()
    except Exception as exc:
        log.warning("readiness: the database refused a write (%s)", exc.__class__.__name__)
        raise HTTPException(503, "the database does not take writes") from None
    ready: dict[str, Any] = {
        "status": "ready",
        "models": {n: models.active(n).version for n in models.names()},
        "device": models.device,
    }
    # Still ready (the weights are in memory), but a restart would fail: say so rather than hide it.
    gone = [f"{m.name}@{m.version}" for m in models.all() if not (m.run_dir / WEIGHTS).is_file()]
    if gone:
        ready["warnings"] = [f"{g}: the weights file is gone from disk; served from memory" for g in gone]
    return ready


@router.get("/metrics", tags=["health"], summary="Prometheus metrics (viewer, unless public_metrics)")
def metrics(_who: MetricsReader, service_metrics: MetricsDep) -> Response:
    return Response(generate_latest(service_metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, _who: DocsReader) -> dict[str, Any]:
    return request.app.openapi()


@router.get("/docs", include_in_schema=False)
def docs(request: Request, _who: DocsReader) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=request.app.title)
