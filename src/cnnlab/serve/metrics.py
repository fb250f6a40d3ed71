"""Prometheus metrics in a registry of the app's own (two apps in one process never share counts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cnnlab.serve.store import Store


class ServiceMetrics:
    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "cnnlab_request_seconds",
            "Request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.requests = Counter(
            "cnnlab_requests", "Requests by route and status", ["route", "status"], registry=self.registry
        )
        self.predictions = Counter(
            "cnnlab_predictions",
            "Predictions by model and class",
            ["model", "version", "label"],
            registry=self.registry,
        )
        self.review_queue = Gauge("cnnlab_review_queue_size", "Pending review items", registry=self.registry)
        # Read at scrape time, so every worker process reports the shared database's count.
        self.review_queue.set_function(lambda: float(store.pending_reviews()))
