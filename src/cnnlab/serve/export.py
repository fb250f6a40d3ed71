"""Clinician feedback as a class-folder data set that `cnnlab train --extra-data DIR` merges into training."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.fileio import atomic_write_text
from cnnlab.serve.store import Store, as_utc

FEEDBACK_SOURCE = "feedback"
"""The `source` of every exported image: per-source metrics and `--by-source` folds keep it apart."""

METADATA_COLUMNS = (
    "file",
    "label",
    "patient_id",
    "source",
    "predicted_label",
    "agrees",
    "model_name",
    "model_version",
    "reviewer",
    "reviewed_at",
    "request_id",
)
"""Free-text notes are left out on purpose: a clinician may have typed patient details into one.
`patient_id` is the keyed hash the service stored (never the id the request gave), so the patients of
an export group together in training and cross-validation without being named."""


def _safe_folder(label: str) -> str:
    # Labels come from model cards, but a folder name must never climb out of the export.
    name = "".join(c if c.isalnum() or c in "-_. " else "_" for c in label).strip(" .")
    return name or "_"


def export_feedback(store: Store, images_dir: Path, out: Path) -> tuple[int, int]:
    """Write OUT/<label>/<image>.png and OUT/metadata.csv for the latest feedback per request;
    returns (images written, feedback rows whose image is missing). Refuses a non-empty `out`."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CnnlabError(f"{out} exists and is not empty; choose another --out")
    rows = store.feedback_for_export()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(METADATA_COLUMNS), lineterminator="\n")
    writer.writeheader()
    written = missing = 0
    for fb, pred in rows:
        source = images_dir / (fb.image_file or "")
        if not fb.image_file or not source.is_file():
            missing += 1
            continue
        folder = _safe_folder(fb.label)
        (out / folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / folder / fb.image_file)
        writer.writerow(
            {
                "file": f"{folder}/{fb.image_file}",
                "label": fb.label,
                "patient_id": pred.patient_key or "",
                "source": FEEDBACK_SOURCE,
                "predicted_label": pred.label,
                "agrees": int(fb.agrees),
                "model_name": pred.model_name,
                "model_version": pred.model_version,
                "reviewer": fb.reviewer or "",
                "reviewed_at": as_utc(fb.created_at).isoformat(timespec="seconds"),
                "request_id": fb.request_id,
            }
        )
        written += 1
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metadata.csv", buf.getvalue())
    return written, missing
