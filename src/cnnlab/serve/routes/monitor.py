"""GET /v1/monitor: recent latency, the prediction mix against validation, input drift, versions side
by side and their live accuracy from clinician feedback (every figure from the shared database)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter

from cnnlab.serve.deps import ChosenModel, MetricsDep, ModelsDep, MonitorDep, StoreDep, Viewer
from cnnlab.serve.monitor import activity

router = APIRouter(prefix="/v1", tags=["monitor"])


@router.get(
    "/monitor",
    summary="Requests, latency percentiles, predictions vs validation, input drift, counts per minute over the "
    "last hour, every version side by side and live accuracy per week, of a model (viewer)",
    responses={404: {"description": "No such model"}},
)
async def monitor(
    _who: Viewer, chosen: ChosenModel, models: ModelsDep, store: StoreDep, metrics: MetricsDep, recent: MonitorDep
) -> dict[str, Any]:
    # The permutation test is a few hundred small matrix sums, the rest grouped queries: off the event loop.
    report = await anyio.to_thread.run_sync(lambda: recent.report(chosen))
    report["activity"] = await anyio.to_thread.run_sync(lambda: activity(store, chosen.name))
    report.update(await anyio.to_thread.run_sync(lambda: recent.versions(models, chosen.name)))
    report["requests_by_status"] = await anyio.to_thread.run_sync(metrics.status_counts)
    if "statistic" in report["drift"]:
        metrics.drift.labels(chosen.name, chosen.version).set(report["drift"]["statistic"])
        metrics.drift_p.labels(chosen.name, chosen.version).set(report["drift"]["p_value"])
    return report
