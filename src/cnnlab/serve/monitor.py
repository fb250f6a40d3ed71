"""What the service has seen recently, per model version: latencies, predicted classes and input
embeddings, compared with the validation reference the bundle carries (`evaluation.drift`).

Kept in memory over a sliding window (per process); the database keeps the permanent record."""

from __future__ import annotations

import threading
from collections import Counter, deque
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from cnnlab.evaluation.drift import MIN_RECENT, load_reference, mmd_test
from cnnlab.serve.models import LoadedModel
from cnnlab.serve.store import MINUTE_FORMAT, Store, utcnow

WINDOW = 500
"""Recent requests kept per model version."""
ACTIVITY_MINUTES = 60
"""How far back the counts over time go, one bucket per minute."""


def activity(store: Store, model_name: str, minutes: int = ACTIVITY_MINUTES, now: datetime | None = None) -> dict:
    """Requests per minute by outcome (every route, every worker: from the audit log) and predictions
    per minute by class (of `model_name`, every version), over the last `minutes` UTC minutes, the
    current one included. Every series has one count per minute, zeros included, ready to chart."""
    last = (now or utcnow()).replace(second=0, microsecond=0)
    first = last - timedelta(minutes=minutes - 1)
    labels = [(first + timedelta(minutes=i)).strftime(MINUTE_FORMAT) for i in range(minutes)]
    slot = {label: i for i, label in enumerate(labels)}

    def series(rows: list[tuple[str, str, int]]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for minute, key, count in rows:
            if minute in slot:  # a clock step between the query and `now` can put a row outside
                out.setdefault(key, [0] * minutes)[slot[minute]] += count
        return dict(sorted(out.items()))

    return {
        "minutes": labels,
        "requests": series(store.requests_per_minute(first)),
        "predictions": series(store.predictions_per_minute(first, model_name)),
    }


class _Recent:
    def __init__(self) -> None:
        self.latency_ms: deque[float] = deque(maxlen=WINDOW)
        self.labels: deque[str] = deque(maxlen=WINDOW)
        self.embeddings: deque[np.ndarray] = deque(maxlen=WINDOW)


class Monitor:
    def __init__(self) -> None:
        self._recent: dict[tuple[str, str], _Recent] = {}
        self._references: dict[str, dict[str, np.ndarray] | None] = {}
        self._lock = threading.Lock()

    def record(self, model: LoadedModel, latency_ms: float, label: str, embedding: np.ndarray) -> None:
        with self._lock:
            recent = self._recent.setdefault((model.name, model.version), _Recent())
            recent.latency_ms.append(latency_ms)
            recent.labels.append(label)
            recent.embeddings.append(embedding)

    def _reference(self, model: LoadedModel) -> dict[str, np.ndarray] | None:
        if model.sha256 not in self._references:
            self._references[model.sha256] = load_reference(model.run_dir)
        return self._references[model.sha256]

    def report(self, model: LoadedModel, permutations: int = 200) -> dict[str, Any]:
        """Latency percentiles, the predicted-class distribution against validation, and the drift test."""
        with self._lock:
            recent = self._recent.get((model.name, model.version), _Recent())
            latency = np.array(recent.latency_ms, dtype=np.float64)
            labels = list(recent.labels)
            embeddings = np.stack(list(recent.embeddings)) if recent.embeddings else np.zeros((0, 0))
        classes = model.classifier.classes
        counts = Counter(labels)
        out: dict[str, Any] = {
            "model": {"name": model.name, "version": model.version},
            "window": {"requests": len(labels), "size": WINDOW},
            "latency_ms": {f"p{q}": (float(np.percentile(latency, q)) if len(latency) else None) for q in (50, 95, 99)},
            "predictions": {
                "recent": {c: counts.get(c, 0) / len(labels) if labels else 0.0 for c in classes},
                "validation": model.validation_distribution,
            },
        }
        reference = self._reference(model)
        if reference is None:
            out["drift"] = {"verdict": "unavailable", "reason": "this bundle has no reference sample (retrain it)"}
        elif len(labels) < MIN_RECENT:
            out["drift"] = {
                "verdict": "not enough data",
                "reason": f"{len(labels)} recent requests; the test needs at least {MIN_RECENT}",
                "recent": len(labels),
                "reference": len(reference["embeddings"]),
            }
        else:
            out["drift"] = mmd_test(embeddings, reference["embeddings"], permutations).to_dict()
        return out
