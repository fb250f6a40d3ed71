"""What the monitor compares versions on, read from the database so that every worker process
reports the same figures: each version's recent predictions, and the cases a clinician labelled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, null, select

from cnnlab.serve.store.engine import Database
from cnnlab.serve.store.tables import FeedbackRow, PredictionRow, ShadowRow, as_utc


@dataclass(frozen=True)
class RecentPrediction:
    latency_ms: float
    label: str
    needs_review: bool
    embedding: bytes | None


@dataclass(frozen=True)
class LabelledCase:
    """One prediction (served, or a shadow's) and the label the clinician gave its image last."""

    version: str
    shadow: bool
    at: datetime
    predicted: str
    decision: str | None
    truth: str


class LiveQueries(Database):
    def recent_predictions(
        self, name: str, version: str, limit: int, embeddings: bool = True
    ) -> list[RecentPrediction]:
        """The last `limit` predictions `version` answered, newest first (without their embeddings,
        a few kilobytes each, unless asked)."""
        embedding = PredictionRow.embedding if embeddings else null()
        query = (
            select(PredictionRow.latency_ms, PredictionRow.label, PredictionRow.needs_review, embedding)
            .where((PredictionRow.model_name == name) & (PredictionRow.model_version == version))
            .order_by(PredictionRow.created_at.desc())
            .limit(limit)
        )
        with self.sessions() as s:
            rows = s.execute(query)
            return [RecentPrediction(float(ms), str(label), bool(review), emb) for ms, label, review, emb in rows]

    def answered_by_version(self, name: str) -> dict[str, tuple[int, int]]:
        """version -> (predictions answered, of which sent to review), every arm."""
        query = (
            select(PredictionRow.model_version, func.count(), func.sum(case((PredictionRow.needs_review, 1), else_=0)))
            .where(PredictionRow.model_name == name)
            .group_by(PredictionRow.model_version)
        )
        with self.sessions() as s:
            return {str(v): (int(n), int(r or 0)) for v, n, r in s.execute(query)}

    def shadow_answers(self, name: str) -> dict[str, tuple[int, int]]:
        """shadow version -> (answers stored, of which equal to the served answer)."""
        same = func.sum(case((ShadowRow.label == PredictionRow.label, 1), else_=0))
        query = (
            select(ShadowRow.model_version, func.count(), same)
            .join(PredictionRow, PredictionRow.request_id == ShadowRow.request_id)
            .where(ShadowRow.model_name == name)
            .group_by(ShadowRow.model_version)
        )
        with self.sessions() as s:
            return {str(v): (int(n), int(k or 0)) for v, n, k in s.execute(query)}

    def labelled_cases(self, name: str) -> list[LabelledCase]:
        """Every prediction of `name` with clinician feedback, served and shadow, with the latest label."""
        with self.sessions() as s:
            latest_id = select(func.max(FeedbackRow.id)).group_by(FeedbackRow.request_id)
            latest = select(FeedbackRow.request_id, FeedbackRow.label).where(FeedbackRow.id.in_(latest_id)).subquery()
            served = (
                select(PredictionRow.model_version, PredictionRow.created_at, PredictionRow.label,
                       PredictionRow.decision, latest.c.label)
                .join(latest, latest.c.request_id == PredictionRow.request_id)
                .where(PredictionRow.model_name == name)
            )  # fmt: skip
            shadow = (
                select(ShadowRow.model_version, ShadowRow.created_at, ShadowRow.label, latest.c.label)
                .join(latest, latest.c.request_id == ShadowRow.request_id)
                .where(ShadowRow.model_name == name)
            )
            cases = [LabelledCase(str(v), False, as_utc(at), str(p), d, str(t)) for v, at, p, d, t in s.execute(served)]
            cases += [LabelledCase(str(v), True, as_utc(at), str(p), None, str(t)) for v, at, p, t in s.execute(shadow)]
            return cases
