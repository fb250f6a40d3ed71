"""What a prediction means for the clinician: the operating point's decision, and whether (and why)
the case goes to the review queue."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnlab.evaluation.operating import operating_decision, positive_score
from cnnlab.serve.models import LoadedModel
from cnnlab.serve.settings import ServeSettings

INTENDED_USE = (
    "Decision support for a qualified clinician, who makes the diagnosis: not a diagnosis, and not for use "
    "without a clinician's review. Trained and validated on the data its model card names; other hospitals, "
    "devices or populations may see it perform worse."
)
"""Stated with every result, by the API and on the page."""

LOW_CONFIDENCE = "low_confidence"
NEAR_OPERATING_POINT = "near_operating_point"


@dataclass(frozen=True)
class Triage:
    label: str
    confidence: float
    probabilities: dict[str, float]
    decision: str | None
    """The operating point's answer (None when the bundle has no operating point)."""
    review_reasons: list[str]

    @property
    def needs_review(self) -> bool:
        return bool(self.review_reasons)

    @property
    def outcome(self) -> str:
        """The audit log's outcome of the request that made this prediction."""
        return "needs_review" if self.needs_review else "predicted"


def triage(model: LoadedModel, proba: np.ndarray, settings: ServeSettings) -> Triage:
    """`proba`: one image's calibrated probabilities, in the model's class order."""
    classes = model.classifier.classes
    index = int(proba.argmax())
    return Triage(
        label=classes[index],
        confidence=float(proba[index]),
        probabilities={c: float(p) for c, p in zip(classes, proba, strict=True)},
        decision=operating_decision(model.operating_point, classes, proba),
        review_reasons=review_reasons(model, proba, settings.review_threshold, settings.operating_margin),
    )


def review_reasons(model: LoadedModel, proba: np.ndarray, threshold: float, margin: float) -> list[str]:
    """Why a clinician must look: a calibrated confidence under `threshold`, or a positive score
    within `margin` of the operating point (where the decision could go either way)."""
    reasons = []
    if float(proba.max()) < threshold:
        reasons.append(LOW_CONFIDENCE)
    point = model.operating_point
    if point:
        score = float(positive_score(proba[None], model.classifier.classes, point["positive"])[0])
        if abs(score - float(point["value"])) < margin:
            reasons.append(NEAR_OPERATING_POINT)
    return reasons
