"""Every request and response body of the API, in one place.

No class here has a docstring on purpose: pydantic would publish it as the schema's description
in /openapi.json, and the published API description is part of the contract."""

from __future__ import annotations

from datetime import datetime

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
class ActivateIn(BaseModel):
    version: str = Field(max_length=64, description="A version listed by GET /v1/models.")
