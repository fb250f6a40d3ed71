"""GET /v1/monitor: recent latency, the prediction mix against validation, and input drift."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter

from cnnlab.serve.deps import ChosenModel, MetricsDep, MonitorDep, StoreDep, Viewer
from cnnlab.serve.monitor import activity

router = APIRouter(prefix="/v1", tags=["monitor"])


@router.get(
    "/monitor",
    summary="Requests, latency percentiles, predictions vs validation, input drift and counts per minute over "
    "the last hour of a model (viewer)",
    responses={404: {"description": "No such model"}},
)
async def monitor(
    _who: Viewer, chosen: ChosenModel, store: StoreDep, metrics: MetricsDep, recent: MonitorDep
) -> dict[str, Any]:
    # The permutation test is a few hundred small matrix sums, the counts two grouped queries: off the event loop.
    report = await anyio.to_thread.run_sync(lambda: recent.report(chosen))
    report["activity"] = await anyio.to_thread.run_sync(lambda: activity(store, chosen.name))
    report["requests_by_status"] = metrics.status_counts()
    if "statistic" in report["drift"]:
        metrics.drift.labels(chosen.name, chosen.version).set(report["drift"]["statistic"])
        metrics.drift_p.labels(chosen.name, chosen.version).set(report["drift"]["p_value"])
    return report
