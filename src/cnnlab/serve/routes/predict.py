"""POST /v1/predict: an uploaded image in, a calibrated triage answer out."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio
import numpy as np
from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from PIL import Image
from pydantic import BaseModel

from cnnlab.data.decode import decode_bytes, decode_image, sniff_format
from cnnlab.errors import DataError
from cnnlab.explain.cam import METHODS, overlay
from cnnlab.evaluation.operating import operating_decision, positive_score
from cnnlab.fileio import atomic_write_bytes
from cnnlab.serve.models import LoadedModel
from cnnlab.serve.security import Clinician
from cnnlab.serve.store import PredictionRow

router = APIRouter(prefix="/v1", tags=["predict"])
T = TypeVar("T")

ACCEPTED_FORMATS = ("PNG", "JPEG", "DICOM")
"""Narrower than the decoder's list: what a triage service receives, nothing else."""
UPLOAD_NAME = "upload"
"""What decoder messages call the file: the client's file name may itself be patient data."""


class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str


class Explanation(BaseModel):
    method: str
    overlay_png_base64: str
    heatmap_png_base64: str
    """The coloured heat map alone, the image's size: a page blends it over the kept image at any opacity."""

    @classmethod
    def of(cls, method: str, image: np.ndarray, heat: np.ndarray) -> Explanation:
        """The overlay and the heat map alone, both in `overlay`'s colours (alpha 1: only the colours)."""
        return cls(
            method=method,
            overlay_png_base64=base64.b64encode(_png(overlay(image, heat))).decode(),
            heatmap_png_base64=base64.b64encode(_png(overlay(image, heat, alpha=1.0))).decode(),
        )


class PredictResponse(BaseModel):
    request_id: str
    model: ModelInfo
    label: str
    confidence: float
    probabilities: dict[str, float]
    calibrated: bool
    decision: str | None
    needs_review: bool
    review_reasons: list[str]
    explanation: Explanation | None = None


@dataclass
class _Work:
    proba: np.ndarray
    embedding: np.ndarray
    """Penultimate-layer features, for drift monitoring."""
    kept_png: bytes
    explanation: Explanation | None


def pick_model(request: Request, name: str | None) -> LoadedModel:
    models = request.app.state.models
    names = models.names()
    if name is None:
        if len(names) != 1:
            raise HTTPException(422, f"several models are served; choose one with ?model= ({', '.join(names)})")
        name = names[0]
    model = models.active(name)
    if model is None:
        raise HTTPException(404, f"no model named '{name}' is served")
    return model


def _png(pixels: np.ndarray) -> bytes:
    # A fresh image from the array alone: no text chunks, no metadata from the upload.
    buf = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buf, "PNG")
    return buf.getvalue()


def _run(model: LoadedModel, data: bytes, method: str | None) -> _Work:
    """Decode, predict and explain; runs in a worker thread under the request timeout."""
    clf = model.classifier
    if sniff_format(data[:132]) not in ACCEPTED_FORMATS:
        if _bare_dicom(data):
            raise _Unsupported(
                "the upload looks like DICOM without its 128-byte preamble and DICM marker; "
                "send it as a DICOM Part 10 file (as a PACS or viewer exports it)"
            )
        raise _Unsupported("the upload is not a PNG, JPEG or DICOM image")
    image, info = decode_bytes(data, UPLOAD_NAME)
    natural = decode_image(image, info.channels)
    pixels = decode_image(image, clf.preprocessing.channels)
    with model.lock:
        probas, embeddings = clf.proba_and_embedding(clf.preprocess([pixels]))
        proba = probas[0]
        heat = clf.explain(pixels, method=method, class_index=int(proba.argmax())) if method else None
    explanation = None if heat is None or method is None else Explanation.of(method, natural, heat)
    return _Work(proba, embeddings[0], _png(natural), explanation)


async def run_model_work(request: Request, work: Callable[[], T]) -> T:
    """`work` (a forward pass) in a worker thread within the request timeout: 504 when it runs over."""
    timeout = request.app.state.settings.request_timeout_s
    try:
        with anyio.fail_after(timeout):
            # abandon_on_cancel: a hung model keeps its thread, but the request answers 504 on time.
            return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    except TimeoutError:
        request.state.outcome = "timeout"
        raise HTTPException(504, f"the model did not answer within {timeout:g} s") from None


def check_method(method: str) -> None:
    if method not in METHODS:
        raise HTTPException(422, f"explain must be one of {', '.join(METHODS)}, not '{method}'")


class _Unsupported(Exception):
    pass


def _bare_dicom(data: bytes) -> bool:
    """A data set written without the Part 10 header starts with a group 0002 or 0008 tag; only the message uses it."""
    return len(data) >= 8 and data[:2] in (b"\x02\x00", b"\x08\x00")


def review_reasons(model: LoadedModel, proba: np.ndarray, threshold: float, margin: float) -> list[str]:
    reasons = []
    if float(proba.max()) < threshold:
        reasons.append("low_confidence")
    point: dict[str, Any] | None = model.classifier.card.get("threshold")
    if point:
        classes = model.classifier.classes
        score = float(positive_score(proba[None], classes, point["positive"])[0])
        if abs(score - float(point["value"])) < margin:
            reasons.append("near_operating_point")
    return reasons


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Classify one PNG, JPEG or DICOM image (clinician)",
    responses={
        413: {"description": "Upload over the size limit"},
        415: {"description": "Not an allowed image format"},
        422: {"description": "Damaged or too large an image"},
        503: {"description": "At the concurrency limit"},
        504: {"description": "The model did not answer in time"},
    },
)
async def predict(
    request: Request,
    who: Clinician,
    file: Annotated[UploadFile, File(description="The image: PNG, JPEG or DICOM (pixel data only is used).")],
    model: Annotated[str | None, Query(description="Model name; needed when several are served.")] = None,
    explain: Annotated[str | None, Query(description=f"A CAM method for an overlay: {', '.join(METHODS)}.")] = None,
) -> PredictResponse:
    settings = request.app.state.settings
    state = request.state
    started = time.perf_counter()
    chosen = pick_model(request, model)  # held to the end: an activation meanwhile does not change this request
    state.model_version = chosen.version
    if explain is not None:
        check_method(explain)
    # Several `file` parts would be answered on one of them, silently: refuse the ambiguity.
    count = len((await request.form()).getlist("file"))  # the form FastAPI parsed, cached on the request
    if count != 1:
        raise HTTPException(422, f"send one file in the 'file' field, not {count}")
    data = await file.read()
    state.input_sha256 = hashlib.sha256(data).hexdigest()
    if not data:
        state.outcome = "undecodable"
        raise HTTPException(422, "the upload is empty (0 bytes)")
    try:
        work = await run_model_work(request, lambda: _run(chosen, data, explain))
    except _Unsupported as exc:
        state.outcome = "unsupported_format"
        raise HTTPException(415, str(exc)) from None
    except DataError as exc:
        state.outcome = "undecodable"
        raise HTTPException(422, str(exc)) from None

    clf = chosen.classifier
    proba = work.proba
    index = int(proba.argmax())
    reasons = review_reasons(chosen, proba, settings.review_threshold, settings.operating_margin)
    image_file = f"{secrets.token_hex(16)}.png"
    request_id = str(state.request_id)
    probs = {c: float(p) for c, p in zip(clf.classes, proba, strict=True)}
    decision = operating_decision(clf.card.get("threshold"), clf.classes, proba)
    row = PredictionRow(
        request_id=request_id,
        key_id=who.key_id,
        model_name=chosen.name,
        model_version=chosen.version,
        input_sha256=state.input_sha256,
        image_file=image_file,
        label=clf.classes[index],
        confidence=float(proba[index]),
        probs_json=json.dumps(probs, sort_keys=True),
        decision=decision,
        needs_review=bool(reasons),
        latency_ms=(time.perf_counter() - started) * 1000,
    )

    def persist() -> None:
        kept = settings.images_dir / image_file
        atomic_write_bytes(kept, work.kept_png)
        try:
            request.app.state.store.add_prediction(row, reasons)
        except BaseException:
            kept.unlink(missing_ok=True)  # a kept image without its row would be an orphan nobody reviews
            raise

    await anyio.to_thread.run_sync(persist)
    state.outcome = "needs_review" if reasons else "predicted"
    request.app.state.metrics.predictions.labels(chosen.name, chosen.version, row.label).inc()
    request.app.state.monitor.record(chosen, row.latency_ms, row.label, work.embedding)
    return PredictResponse(
        request_id=request_id,
        model=ModelInfo(name=chosen.name, version=chosen.version, sha256=chosen.sha256),
        label=row.label,
        confidence=row.confidence,
        probabilities=probs,
        calibrated=bool(clf.card.get("temperature") or clf.card.get("calibration")),
        decision=decision,
        needs_review=bool(reasons),
        review_reasons=reasons,
        explanation=work.explanation,
    )
