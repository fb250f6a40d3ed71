"""What the service has seen, per model version, read from the database so that every worker process
answers the same: latencies, predicted classes and input embeddings of the recent window against the
bundle's validation reference (input drift), versions side by side during a rollout, and the live
accuracy that clinician feedback gives (concept drift, which input drift alone misses)."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from cnnlab.evaluation.drift import MIN_RECENT, load_reference, mmd_test
from cnnlab.evaluation.metrics import wilson_interval
from cnnlab.serve.models import LoadedModel, ModelRegistry
from cnnlab.serve.store import MINUTE_FORMAT, LabelledCase, Store, utcnow

WINDOW = 500
"""Recent predictions per model version the window covers."""
ACTIVITY_MINUTES = 60
"""How far back the counts over time go, one bucket per minute."""
EMBEDDING_DTYPE = np.float32


def pack_embedding(embedding: np.ndarray) -> bytes:
    """A prediction's embedding as the bytes `PredictionRow.embedding` keeps."""
    return np.ascontiguousarray(embedding, dtype=EMBEDDING_DTYPE).tobytes()


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


def _percentiles(latency: np.ndarray, qs: tuple[int, ...]) -> dict[str, float | None]:
    return {f"p{q}": (float(np.percentile(latency, q)) if len(latency) else None) for q in qs}


def _share(successes: int, n: int) -> float | None:
    return successes / n if n else None


def _week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


class Monitor:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._references: dict[str, dict[str, np.ndarray] | None] = {}
        self._lock = threading.Lock()

    def _reference(self, model: LoadedModel) -> dict[str, np.ndarray] | None:
        with self._lock:
            if model.sha256 not in self._references:
                self._references[model.sha256] = load_reference(model.run_dir)
            return self._references[model.sha256]

    def report(self, model: LoadedModel, permutations: int = 200) -> dict[str, Any]:
        """Latency percentiles, the predicted-class distribution against validation, and the drift test
        over the last `WINDOW` predictions of `model`'s version."""
        recent = self.store.recent_predictions(model.name, model.version, WINDOW)
        latency = np.array([r.latency_ms for r in recent], dtype=np.float64)
        labels = [r.label for r in recent]
        classes = model.classifier.classes
        counts = Counter(labels)
        out: dict[str, Any] = {
            "model": {"name": model.name, "version": model.version},
            "window": {"requests": len(labels), "size": WINDOW},
            "latency_ms": _percentiles(latency, (50, 95, 99)),
            "predictions": {
                "recent": {c: counts.get(c, 0) / len(labels) if labels else 0.0 for c in classes},
                "validation": model.validation_distribution,
            },
        }
        reference = self._reference(model)
        packed = [r.embedding for r in recent if r.embedding]
        if reference is None:
            out["drift"] = {"verdict": "unavailable", "reason": "this bundle has no reference sample (retrain it)"}
        elif len(packed) < MIN_RECENT:
            out["drift"] = {
                "verdict": "not enough data",
                "reason": f"{len(packed)} recent requests; the test needs at least {MIN_RECENT}",
                "recent": len(packed),
                "reference": len(reference["embeddings"]),
            }
        else:
            embeddings = np.stack([np.frombuffer(b, dtype=EMBEDDING_DTYPE) for b in packed])
            out["drift"] = mmd_test(embeddings, reference["embeddings"], permutations).to_dict()
        return out

    def versions(self, models: ModelRegistry, name: str) -> dict[str, Any]:
        """Every version of `name` side by side (volume, prediction mix, latency, review rate, agreement
        with feedback, live accuracy), the live accuracy per ISO week, the validation figure the active
        version's live accuracy is held against, and an alert line for every version clearly below it."""
        answered = self.store.answered_by_version(name)
        shadows = self.store.shadow_answers(name)
        cases = self.store.labelled_cases(name)
        active = models.active(name)
        rows = []
        for model in models.versions(name).values():
            role, fraction = models.role(model)
            if model.version not in answered and model.version not in shadows and role == "inactive":
                continue  # never served nor shadowed: nothing to compare
            recent = self.store.recent_predictions(name, model.version, WINDOW, embeddings=False)
            latency = np.array([r.latency_ms for r in recent], dtype=np.float64)
            mix = Counter(r.label for r in recent)
            served, reviewed = answered.get(model.version, (0, 0))
            mine = [c for c in cases if c.version == model.version]
            correct = sum(c.predicted == c.truth for c in mine)
            shadowed, same = shadows.get(model.version, (0, 0))
            rows.append(
                {
                    "version": model.version,
                    "role": role,
                    "fraction": fraction,
                    "requests": served,
                    "predictions": {c: mix.get(c, 0) / len(recent) for c in model.classifier.classes} if recent else {},
                    "latency_ms": _percentiles(latency, (50, 95)),
                    "review_rate": _share(reviewed, served),
                    "feedback": len(mine),
                    "agreement": _share(correct, len(mine)),
                    "live_accuracy": _share(correct, len(mine)),
                    "live_ci": wilson_interval(correct, len(mine)).to_list() if mine else None,
                    "live_sensitivity": _live_sensitivity(model, mine),
                    "shadow_answers": shadowed or None,
                    "shadow_agreement": _share(same, shadowed),
                }
            )
        validation = active.validation_accuracy if active else None
        alerts = []
        if validation is not None:
            val_low = validation["ci"][0]
            for row in rows:
                ci = row["live_ci"]
                if ci and ci[1] is not None and val_low is not None and ci[1] < val_low:
                    alerts.append(
                        f"version {row['version']} ({row['role']}): live accuracy {row['live_accuracy']:.2f} "
                        f"(95% CI {ci[0]:.2f}-{ci[1]:.2f}, {row['feedback']} reviewed cases) is below the validation "
                        f"interval {validation['ci'][0]:.2f}-{validation['ci'][1]:.2f}: concept drift or a worse "
                        "model; review the recent cases before trusting its answers"
                    )
        return {"versions": rows, "live": _weekly(cases), "validation": validation, "alerts": alerts}


def _live_sensitivity(model: LoadedModel, cases: list[LabelledCase]) -> float | None:
    """Of the reviewed cases whose clinician label is a positive class, the share the operating point
    called positive (served answers only: a shadow's decision is not stored)."""
    point = model.operating_point
    if not point:
        return None
    positives = [c for c in cases if c.truth in point["positive"] and not c.shadow]
    return _share(sum(c.decision == "positive" for c in positives), len(positives))


def _weekly(cases: list[LabelledCase]) -> dict[str, Any]:
    by: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for case in cases:
        by[case.version][_week(case.at)].append(case.predicted == case.truth)
    weeks = sorted({w for per in by.values() for w in per})
    return {
        "weeks": weeks,
        "by_version": {
            version: [
                {"week": w, "feedback": len(per[w]), "accuracy": sum(per[w]) / len(per[w])} for w in weeks if w in per
            ]
            for version, per in sorted(by.items())
        },
    }
