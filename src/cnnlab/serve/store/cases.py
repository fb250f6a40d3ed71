"""Predictions, the feedback on them and the review queue of the ones that need a clinician."""

from __future__ import annotations

from sqlalchemy import func, select

from cnnlab.serve.store.engine import Database
from cnnlab.serve.store.tables import FeedbackRow, PredictionRow, ReviewItem, ShadowRow, utcnow


class CaseQueries(Database):
    def add_prediction(self, row: PredictionRow, review_reasons: list[str]) -> None:
        with self.sessions.begin() as s:
            s.add(row)
            if review_reasons:
                s.flush()  # the review item's foreign key needs the prediction first
                s.add(ReviewItem(request_id=row.request_id, reasons=",".join(review_reasons)))

    def prediction(self, request_id: str) -> PredictionRow | None:
        with self.sessions() as s:
            return s.get(PredictionRow, request_id)

    def add_feedback(self, row: FeedbackRow) -> FeedbackRow:
        with self.sessions.begin() as s:
            s.add(row)
        return row

    def feedback_for(self, request_id: str) -> list[FeedbackRow]:
        """Every feedback row on one prediction, oldest first (review resolutions included)."""
        with self.sessions() as s:
            query = select(FeedbackRow).where(FeedbackRow.request_id == request_id).order_by(FeedbackRow.id)
            return list(s.scalars(query))

    def review_queue(self, limit: int = 50) -> list[tuple[ReviewItem, PredictionRow]]:
        with self.sessions() as s:
            query = (
                select(ReviewItem, PredictionRow)
                .join(PredictionRow, PredictionRow.request_id == ReviewItem.request_id)
                .where(ReviewItem.status == "pending")
                .order_by(ReviewItem.created_at, ReviewItem.id)
                .limit(limit)
            )
            return [(item, pred) for item, pred in s.execute(query).all()]

    def pending_reviews(self) -> int:
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).where(ReviewItem.status == "pending")) or 0)

    def review_item(self, item_id: int) -> tuple[ReviewItem, PredictionRow] | None:
        with self.sessions() as s:
            item = s.get(ReviewItem, item_id)
            if item is None:
                return None
            pred = s.get(PredictionRow, item.request_id)
            assert pred is not None  # a foreign key
            return item, pred

    def resolve_review(
        self, item_id: int, reviewer: str | None, label: str | None, note: str, agrees: bool | None
    ) -> ReviewItem | None:
        """Mark a pending item resolved (None when it is not pending); a label also becomes feedback."""
        with self.sessions.begin() as s:
            item = s.get(ReviewItem, item_id, with_for_update=True)
            if item is None or item.status != "pending":
                return None
            item.status, item.resolved_by, item.resolved_at = "resolved", reviewer, utcnow()
            item.resolution_label, item.resolution_note = label, note
            if label is not None:
                pred = s.get(PredictionRow, item.request_id)
                assert pred is not None
                s.add(
                    FeedbackRow(
                        request_id=item.request_id,
                        reviewer=reviewer,
                        label=label,
                        agrees=bool(agrees),
                        note=note,
                        image_file=pred.image_file,
                    )
                )
            return item

    def feedback_for_export(self) -> list[tuple[FeedbackRow, PredictionRow]]:
        """The latest feedback per request, oldest request first."""
        with self.sessions() as s:
            rows = s.execute(
                select(FeedbackRow, PredictionRow)
                .join(PredictionRow, PredictionRow.request_id == FeedbackRow.request_id)
                .order_by(FeedbackRow.id)
            ).all()
            latest: dict[str, tuple[FeedbackRow, PredictionRow]] = {}
            for fb, pred in rows:
                latest[fb.request_id] = (fb, pred)
            return list(latest.values())

    def add_shadow(self, row: ShadowRow) -> None:
        with self.sessions.begin() as s:
            s.add(row)
