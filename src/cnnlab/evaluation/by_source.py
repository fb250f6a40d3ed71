"""Metrics per source (the hospital or scanner an image came from, metadata.csv's `source`).

Pooled over sources, a model can score well by recognising the source rather than the disease
when each source holds mostly one class (covid19 only from one hospital). Within one source that
shortcut is gone: a class's ROC AUC computed on one source's images alone (positives: the class's
images there, negatives: the source's other images) is what the image content has to explain.
Undefined values (a class absent from a source; every AUC of a one-class source) are None.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnlab.evaluation.metrics import accuracy, clean, confusion_matrix, nan_average, one_vs_rest, roc_auc
from cnnlab.evaluation.operating import evaluate_operating_point
from cnnlab.evaluation.report import Section, Table, fmt

NO_SOURCE = "(no source)"
"""The key of images whose row names no source."""

WHY_WITHIN_SOURCE = (
    "Within-source ROC AUCs compare images of one source only, so they are the ones a source shortcut "
    "(recognising the hospital or scanner instead of the finding) cannot explain; a source holding a "
    "single class has none."
)


def per_source_metrics(
    y: np.ndarray,
    proba: np.ndarray,
    classes: list[str],
    sources: np.ndarray,
    groups: np.ndarray | None = None,
    threshold: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """JSON-ready metrics of each source: images, patients (with `groups`), images per class,
    accuracy, sensitivity of each class present, each class's one-vs-rest ROC AUC within the
    source and their macro average, and with `threshold` (the card's operating point)
    sensitivity and specificity at it. `within_source` holds the macro within-source AUC of
    every source with two or more classes."""
    y = np.asarray(y, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    names = np.array([str(s) or NO_SOURCE for s in np.asarray(sources).tolist()])
    k = len(classes)
    per_source: dict[str, Any] = {}
    within: dict[str, float] = {}
    for source in sorted(set(names.tolist())):
        mask = names == source
        ys, ps = y[mask], proba[mask]
        cm = confusion_matrix(ys, ps.argmax(axis=1), k)
        recall = one_vs_rest(cm)["recall"]
        counts = np.bincount(ys, minlength=k)
        present = [c for c in range(k) if counts[c]]
        auc = np.array([roc_auc(ys == c, ps[:, c])[0] for c in range(k)])
        row: dict[str, Any] = {
            "images": int(mask.sum()),
            "patients": len(set(np.asarray(groups)[mask].tolist())) if groups is not None else None,
            "counts": {classes[c]: int(counts[c]) for c in range(k)},
            "accuracy": accuracy(cm),
            "sensitivity": {classes[c]: recall[c] for c in present},
            "roc_auc": {classes[c]: auc[c] for c in range(k)},
            "within_source_auc": nan_average(auc) if len(present) > 1 else float("nan"),
        }
        if threshold:
            rates, _ = evaluate_operating_point(threshold, ps, ys, classes, resamples=0)
            row["operating_point"] = {key: rates[key] for key in ("sensitivity", "specificity")}
        per_source[source] = row
        if len(present) > 1:
            within[source] = row["within_source_auc"]
    return clean({"classes": list(classes), "sources": per_source, "within_source": within})


def by_source_section(by_source: dict[str, Any]) -> Section:
    """The report's "By source" section: one table per source, from `per_source_metrics`'s JSON."""
    classes = by_source["classes"]
    blocks: list[Any] = [WHY_WITHIN_SOURCE]
    for source, row in by_source["sources"].items():
        rows = [["images", f"{row['images']:,}"]]
        if row.get("patients") is not None:
            rows.append(["patients", f"{row['patients']:,}"])
        rows += [[f"{cls} images", f"{row['counts'][cls]:,}"] for cls in classes]
        rows.append(["accuracy", fmt(row["accuracy"])])
        rows += [[f"sensitivity of {cls}", fmt(value)] for cls, value in row["sensitivity"].items()]
        rows += [[f"ROC AUC of {cls} vs the rest, within {source}", fmt(row["roc_auc"][cls])] for cls in classes
                 if row["counts"][cls]]  # fmt: skip
        rows.append(["within-source macro ROC AUC", fmt(row["within_source_auc"])])
        if "operating_point" in row:
            rows += [[f"{key} at the operating point", fmt(value)] for key, value in row["operating_point"].items()]
        blocks.append(Table([f"source {source}", "value"], rows))
    return Section("By source", blocks)
