"""Prometheus metrics in a registry of the app's own (two apps in one process never share counts).

Counts come from the shared database at scrape time (requests from the audit log, predictions from
their table), so that `serve --workers N` reports every worker's, whichever worker is scraped. The
latency histogram and the drift gauges live in process memory; under `--workers N` the parent sets
PROMETHEUS_MULTIPROC_DIR and prometheus_client's multiprocess mode sums them over the workers."""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from cnnlab.serve.store import Store

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class DatabaseCounts(Collector):
    """Requests by route and status, predictions by model, version and class, and the review queue."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("cnnlab_requests", "Requests by route and status", labels=["route", "status"])
        for route, status, n in self.store.requests_by_route_status():
            requests.add_metric([route, str(status)], n)
        yield requests
        predictions = CounterMetricFamily(
            "cnnlab_predictions", "Predictions kept, by model and class", labels=["model", "version", "label"]
        )
        for name, version, label, n in self.store.predictions_by_label():
            predictions.add_metric([name, version, label], n)
        yield predictions
        yield GaugeMetricFamily("cnnlab_review_queue_size", "Pending review items", value=self.store.pending_reviews())


class ServiceMetrics:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(DatabaseCounts(store))
        multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        if multiprocess:
            # Each worker writes its samples to files there; the collector sums every worker's.
            MultiProcessCollector(self.registry)
        own = None if multiprocess else self.registry  # in multiprocess mode the collector exports them
        self.latency = Histogram(
            "cnnlab_request_seconds",
            "Request latency by route",
            ["route"],
            registry=own,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.drift = Gauge(
            "cnnlab_drift_mmd",
            "Squared MMD between recent and validation embeddings, as of the last /v1/monitor",
            ["model", "version"],
            registry=own,
            multiprocess_mode="mostrecent",
        )
        self.drift_p = Gauge(
            "cnnlab_drift_p_value", "Permutation p-value of the last drift test", ["model", "version"],
            registry=own, multiprocess_mode="mostrecent",
        )  # fmt: skip

    def status_counts(self) -> dict[str, int]:
        """Requests so far by HTTP status, over every route and every worker."""
        counts: dict[str, int] = {}
        for _route, status, n in self.store.requests_by_route_status():
            counts[str(status)] = counts.get(str(status), 0) + n
        return dict(sorted(counts.items()))
