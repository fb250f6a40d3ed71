"""Every request and response body of the API, in one place.

No class here has a docstring on purpose: pydantic would publish it as the schema's description
in /openapi.json, and the published API description is part of the contract."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

NOTE_MAX = 4000


# --------------------------------------------------------------------------- account
class MeOut(BaseModel):
    key_id: str
    name: str
    role: str
    roles: list[str]
    """Every role, least first: the key may do what its role and those before it may."""
    expires_at: datetime | None
    explain_methods: list[str]
    """The CAM methods predict and explanation accept (clients offer these, never a list of their own)."""


# --------------------------------------------------------------------------- predictions
class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str


class Explanation(BaseModel):
    method: str
    overlay_png_base64: str
    heatmap_png_base64: str
    """The coloured heat map alone, the image's size: a page blends it over the kept image at any opacity."""


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
    intended_use: str
    routed: str
    """Which side of a rollout answered: active, or canary."""


class ExplanationOut(Explanation):
    request_id: str
    model: ModelInfo
    label: str
    """The class explained: the one the model predicted."""


# --------------------------------------------------------------------------- feedback and review
class FeedbackIn(BaseModel):
    request_id: str = Field(max_length=64, description="The request id a prediction returned.")
    label: str = Field(max_length=200, description="The clinician's label: one of the model's classes.")
    agrees: bool | None = Field(None, description="Agreement with the prediction (default: label == predicted).")
    note: str = Field("", max_length=NOTE_MAX)


class FeedbackOut(BaseModel):
    id: int
    request_id: str
    label: str
    agrees: bool
    reviewer: str | None
    created_at: datetime


class ReviewEntry(BaseModel):
    id: int
    request_id: str
    created_at: datetime
    reasons: list[str]
    model_name: str
    model_version: str
    label: str
    confidence: float
    probabilities: dict[str, float]


class ResolveIn(BaseModel):
    label: str | None = Field(None, max_length=200, description="The clinician's label; also stored as feedback.")
    note: str = Field("", max_length=NOTE_MAX)


class ResolveOut(BaseModel):
    id: int
    status: str
    resolved_by: str | None
    resolved_at: datetime | None
    label: str | None


# --------------------------------------------------------------------------- models
OVERRIDE_MIN = 10
"""An override reason shorter than this says nothing an auditor could check."""


class ActivateIn(BaseModel):
    version: str = Field(max_length=64, description="A version listed by GET /v1/models.")
    override_reason: str | None = Field(
        None,
        min_length=OVERRIDE_MIN,
        max_length=NOTE_MAX,
        description="Activate although the promotion gate refused (or cannot run): why, for the governance log.",
    )


class RolloutIn(BaseModel):
    version: str = Field(max_length=64, description="A loaded version other than the active one.")
    mode: Literal["canary", "shadow"] = Field(
        description="canary: it answers `fraction` of the requests; shadow: it predicts on every request, unseen."
    )
    fraction: float = Field(0.1, ge=0.0, le=1.0, description="The canary's share of requests, by patient.")
    override_reason: str | None = Field(
        None, min_length=OVERRIDE_MIN, max_length=NOTE_MAX, description="Start a canary the gate refused: why."
    )


class PromoteIn(BaseModel):
    override_reason: str | None = Field(
        None, min_length=OVERRIDE_MIN, max_length=NOTE_MAX, description="Promote although the gate refused: why."
    )


class RollbackIn(BaseModel):
    reason: str = Field(min_length=3, max_length=NOTE_MAX, description="Why, for the governance log.")


class RolloutOut(BaseModel):
    name: str
    version: str
    mode: str
    fraction: float | None
    started_by: str | None
    started_at: datetime
    gate: dict[str, Any] | None = None


class RollbackOut(BaseModel):
    action: str
    active: str


class EventOut(BaseModel):
    at: datetime
    action: str
    version: str | None
    previous: str | None
    by: str | None
    reason: str
    gate: dict[str, Any] | None
