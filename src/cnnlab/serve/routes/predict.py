"""POST /v1/predict: an uploaded image in, a calibrated triage answer out."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Annotated

import anyio
from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile

from cnnlab.errors import DataError
from cnnlab.fileio import atomic_write_bytes
from cnnlab.serve.deps import (
    Clinician,
    MetricsDep,
    ModelName,
    ModelsDep,
    MonitorDep,
    SettingsDep,
    StoreDep,
    choose_model,
)
from cnnlab.serve.inference import METHODS_TEXT, UnsupportedFormat, explain_method, predict_upload, run_model_work
from cnnlab.serve.schemas import ModelInfo, PredictResponse
from cnnlab.serve.store import PredictionRow
from cnnlab.serve.triage import triage

router = APIRouter(prefix="/v1", tags=["predict"])


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
    settings: SettingsDep,
    store: StoreDep,
    models: ModelsDep,
    metrics: MetricsDep,
    recent: MonitorDep,
    file: Annotated[UploadFile, File(description="The image: PNG, JPEG or DICOM (pixel data only is used).")],
    model: ModelName = None,
    explain: Annotated[
        str | None,
        Query(description=f"A CAM method for an overlay: {METHODS_TEXT}. In a URL, gradcam++ is gradcam%2B%2B."),
    ] = None,
) -> PredictResponse:
    state = request.state
    started = time.perf_counter()
    # Chosen here, not by the ChosenModel dependency: dependencies run before the upload is validated,
    # and a request without a file must keep answering 422 for the file whatever ?model= says.
    chosen = choose_model(models, model)  # held to the end: an activation meanwhile does not change this request
    state.model_version = chosen.version
    if explain is not None:
        explain = explain_method(explain)
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
        work = await run_model_work(
            request, settings.request_timeout_s, lambda cancel: predict_upload(chosen, data, explain, cancel)
        )
    except UnsupportedFormat as exc:
        state.outcome = "unsupported_format"
        raise HTTPException(415, str(exc)) from None
    except DataError as exc:
        state.outcome = "undecodable"
        raise HTTPException(422, str(exc)) from None

    answer = triage(chosen, work.proba, settings)
    image_file = f"{secrets.token_hex(16)}.png"
    request_id = str(state.request_id)
    row = PredictionRow(
        request_id=request_id,
        key_id=who.key_id,
        model_name=chosen.name,
        model_version=chosen.version,
        input_sha256=state.input_sha256,
        image_file=image_file,
        label=answer.label,
        confidence=answer.confidence,
        probs_json=json.dumps(answer.probabilities, sort_keys=True),
        decision=answer.decision,
        needs_review=answer.needs_review,
        latency_ms=(time.perf_counter() - started) * 1000,
    )

    def persist() -> None:
        kept = settings.images_dir / image_file
        atomic_write_bytes(kept, work.kept_png)
        try:
            store.add_prediction(row, answer.review_reasons)
        except BaseException:
            kept.unlink(missing_ok=True)  # a kept image without its row would be an orphan nobody reviews
            raise

    await anyio.to_thread.run_sync(persist)
    state.outcome = answer.outcome
    metrics.predictions.labels(chosen.name, chosen.version, row.label).inc()
    recent.record(chosen, row.latency_ms, row.label, work.embedding)
    return PredictResponse(
        request_id=request_id,
        model=ModelInfo(name=chosen.name, version=chosen.version, sha256=chosen.sha256),
        label=answer.label,
        confidence=answer.confidence,
        probabilities=answer.probabilities,
        calibrated=chosen.calibrated,
        decision=answer.decision,
        needs_review=answer.needs_review,
        review_reasons=answer.review_reasons,
        explanation=work.explanation,
    )
