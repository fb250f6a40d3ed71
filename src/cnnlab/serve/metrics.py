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
        self.drift = Gauge(
            "cnnlab_drift_mmd",
            "Squared MMD between recent and validation embeddings, as of the last /v1/monitor",
            ["model", "version"],
            registry=self.registry,
        )
        self.drift_p = Gauge(
            "cnnlab_drift_p_value", "Permutation p-value of the last drift test", ["model", "version"],
            registry=self.registry,
        )  # fmt: skip

    def status_counts(self) -> dict[str, int]:
        """Requests so far by HTTP status, over every route."""
        counts: dict[str, int] = {}
        for metric in self.requests.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    status = sample.labels["status"]
                    counts[status] = counts.get(status, 0) + int(sample.value)
        return dict(sorted(counts.items()))
