"""GET /v1/monitor: recent latency, the prediction mix against validation, and input drift."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request

from cnnlab.serve.monitor import activity
from cnnlab.serve.routes.predict import pick_model
from cnnlab.serve.security import Viewer

router = APIRouter(prefix="/v1", tags=["monitor"])


@router.get(
    "/monitor",
    summary="Requests, latency percentiles, predictions vs validation, input drift and counts per minute over "
    "the last hour of a model (viewer)",
    responses={404: {"description": "No such model"}},
)
async def monitor(
    request: Request,
    _who: Viewer,
    model: Annotated[str | None, Query(description="Model name; needed when several are served.")] = None,
) -> dict[str, Any]:
    chosen = pick_model(request, model)
    request.state.model_version = chosen.version
    # The permutation test is a few hundred small matrix sums, the counts two grouped queries: off the event loop.
    report = await anyio.to_thread.run_sync(lambda: request.app.state.monitor.report(chosen))
    report["activity"] = await anyio.to_thread.run_sync(lambda: activity(request.app.state.store, chosen.name))
    metrics = request.app.state.metrics
    report["requests_by_status"] = metrics.status_counts()
    if "statistic" in report["drift"]:
        metrics.drift.labels(chosen.name, chosen.version).set(report["drift"]["statistic"])
        metrics.drift_p.labels(chosen.name, chosen.version).set(report["drift"]["p_value"])
    return report
