"""POST /v1/predict: an uploaded image in, a calibrated triage answer out."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from typing import Annotated

import anyio
from fastapi import APIRouter, BackgroundTasks, File, Form, HTTPException, Query, Request, UploadFile

from cnnlab.errors import DataError
from cnnlab.fileio import atomic_write_bytes
from cnnlab.serve.deps import (
    Clinician,
    ModelName,
    ModelsDep,
    PatientKeysDep,
    SettingsDep,
    StoreDep,
    served_name,
)
from cnnlab.serve.inference import (
    METHODS_TEXT,
    UnsupportedFormat,
    explain_method,
    predict_kept,
    predict_upload,
    run_model_work,
)
from cnnlab.serve.models import LoadedModel
from cnnlab.serve.monitor import pack_embedding
from cnnlab.serve.schemas import ModelInfo, PredictResponse
from cnnlab.serve.settings import ServeSettings
from cnnlab.serve.store import PredictionRow, ShadowRow, Store
from cnnlab.serve.triage import INTENDED_USE, triage

router = APIRouter(prefix="/v1", tags=["predict"])
log = logging.getLogger("cnnlab.serve")


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
    patient_keys: PatientKeysDep,
    background: BackgroundTasks,
    file: Annotated[UploadFile, File(description="The image: PNG, JPEG or DICOM (pixel data only is used).")],
    patient_id: Annotated[
        str | None,
        Form(
            max_length=200,
            description="The patient's id as the hospital knows it; only a keyed hash of it is stored. It keeps one "
            "patient's images on one version during a canary, and patients apart when feedback becomes training data.",
        ),
    ] = None,
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
    name = served_name(models, model)
    patient_key = patient_keys(patient_id)
    request_id = str(state.request_id)
    routed = models.route(name, patient_key or request_id)  # held to the end: a change meanwhile does not touch it
    assert routed is not None  # served_name found the name
    chosen = routed.model
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
        patient_key=patient_key,
        arm=routed.arm,
        embedding=pack_embedding(work.embedding),
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
    # After the answer is sent, so the clinician never waits for a shadow; the request (its concurrency
    # slot and its latency figure) lasts until the shadow has answered too.
    if routed.shadow is not None:
        background.add_task(_shadow_predict, routed.shadow, work.kept_png, request_id, settings, store)
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
        intended_use=INTENDED_USE,
        routed=routed.arm,
    )


def _shadow_predict(
    shadow: LoadedModel, kept_png: bytes, request_id: str, settings: ServeSettings, store: Store
) -> None:
    """The shadow candidate's answer on the image just served, stored beside the served one, never shown."""
    started = time.perf_counter()
    try:
        proba = predict_kept(shadow, kept_png, settings.request_timeout_s)
        answer = triage(shadow, proba, settings)
        store.add_shadow(
            ShadowRow(
                request_id=request_id, model_name=shadow.name, model_version=shadow.version, label=answer.label,
                confidence=answer.confidence, probs_json=json.dumps(answer.probabilities, sort_keys=True),
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        )  # fmt: skip
    except Exception:  # the clinician has the answer already; a shadow that fails is logged, never raised
        log.exception("request %s: the shadow %s@%s failed", request_id, shadow.name, shadow.version)
