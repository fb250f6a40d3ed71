"""Clinician feedback and the review queue of low-confidence cases."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from cnnlab.serve.deps import Clinician, ModelsDep, StoreDep, stored_prediction
from cnnlab.serve.models import ModelRegistry
from cnnlab.serve.schemas import FeedbackIn, FeedbackOut, ResolveIn, ResolveOut, ReviewEntry
from cnnlab.serve.store import FeedbackRow, PredictionRow, ReviewItem, as_utc

router = APIRouter(prefix="/v1", tags=["feedback"])


def _classes_of(models: ModelRegistry, pred: PredictionRow) -> list[str]:
    model = models.versions(pred.model_name).get(pred.model_version)
    return model.classifier.classes if model else list(json.loads(pred.probs_json))


def _check_label(models: ModelRegistry, pred: PredictionRow, label: str) -> None:
    classes = _classes_of(models, pred)
    if label not in classes:
        raise HTTPException(422, f"label must be one of the model's classes ({', '.join(classes)}), not '{label}'")


@router.post("/feedback", response_model=FeedbackOut, summary="A clinician's label for a prediction (clinician)")
def feedback(request: Request, who: Clinician, store: StoreDep, models: ModelsDep, body: FeedbackIn) -> FeedbackOut:
    pred = stored_prediction(request, store, body.request_id)
    _check_label(models, pred, body.label)
    row = store.add_feedback(
        FeedbackRow(
            request_id=pred.request_id,
            reviewer=who.key_id,
            label=body.label,
            agrees=body.label == pred.label if body.agrees is None else body.agrees,
            note=body.note,
            image_file=pred.image_file,
        )
    )
    return _feedback_out(row)


def _feedback_out(row: FeedbackRow) -> FeedbackOut:
    return FeedbackOut(
        id=row.id, request_id=row.request_id, label=row.label, agrees=row.agrees, reviewer=row.reviewer,
        created_at=as_utc(row.created_at),
    )  # fmt: skip


@router.get(
    "/feedback",
    response_model=list[FeedbackOut],
    summary="The feedback given on one prediction, oldest first (clinician)",
    responses={404: {"description": "No such prediction"}},
)
def feedback_of(
    request: Request,
    _who: Clinician,
    store: StoreDep,
    request_id: Annotated[str, Query(max_length=64, description="The request id a prediction returned.")],
) -> list[FeedbackOut]:
    pred = stored_prediction(request, store, request_id)
    return [_feedback_out(row) for row in store.feedback_for(pred.request_id)]


def _entry(item: ReviewItem, pred: PredictionRow) -> ReviewEntry:
    return ReviewEntry(
        id=item.id,
        request_id=item.request_id,
        created_at=as_utc(item.created_at),
        reasons=[r for r in item.reasons.split(",") if r],
        model_name=pred.model_name,
        model_version=pred.model_version,
        label=pred.label,
        confidence=pred.confidence,
        probabilities=json.loads(pred.probs_json),
    )


@router.get("/review-queue", response_model=list[ReviewEntry], summary="Pending cases, oldest first (clinician)")
def review_queue(
    _who: Clinician, store: StoreDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[ReviewEntry]:
    return [_entry(item, pred) for item, pred in store.review_queue(limit)]


@router.post(
    "/review-queue/{item_id}/resolve",
    response_model=ResolveOut,
    summary="Close a pending case, optionally with the clinician's label (clinician)",
    responses={404: {"description": "No such item"}, 409: {"description": "Already resolved"}},
)
def resolve(
    request: Request, who: Clinician, store: StoreDep, models: ModelsDep, item_id: int, body: ResolveIn
) -> ResolveOut:
    found = store.review_item(item_id)
    if found is None:
        raise HTTPException(404, f"no review item {item_id}")
    _item, pred = found
    request.state.model_version = pred.model_version
    if body.label is not None:
        _check_label(models, pred, body.label)
    agrees = None if body.label is None else body.label == pred.label
    item = store.resolve_review(item_id, who.key_id, body.label, body.note, agrees)
    if item is None:
        raise HTTPException(409, f"review item {item_id} is already resolved")
    resolved_at = as_utc(item.resolved_at) if item.resolved_at else None
    return ResolveOut(
        id=item.id,
        status=item.status,
        resolved_by=item.resolved_by,
        resolved_at=resolved_at,
        label=item.resolution_label,
    )
