"""Deleting what the retention period no longer allows to keep: predictions, their kept images, the
feedback, review items and shadow answers on them. The audit log is never touched: its rows name
requests and hashes, not images, and the chain must stay whole."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from cnnlab.serve.store.engine import Database
from cnnlab.serve.store.tables import FeedbackRow, PredictionRow, ReviewItem, ShadowRow


@dataclass(frozen=True)
class Purged:
    predictions: int
    image_files: list[str]
    """The kept images of the deleted predictions and feedback (names under images/), for the caller to delete."""


class RetentionQueries(Database):
    def purge_before(self, moment: datetime) -> Purged:
        """Delete every prediction made before `moment`, with everything that hangs on it, in one transaction."""
        with self.sessions.begin() as s:
            old = select(PredictionRow.request_id).where(PredictionRow.created_at < moment)
            kept = select(PredictionRow.image_file).where(PredictionRow.created_at < moment)
            images = {f for (f,) in s.execute(kept) if f}
            images |= {
                f for (f,) in s.execute(select(FeedbackRow.image_file).where(FeedbackRow.request_id.in_(old))) if f
            }
            for table in (ShadowRow, FeedbackRow, ReviewItem):
                s.execute(delete(table).where(table.request_id.in_(old)))
            count = s.execute(delete(PredictionRow).where(PredictionRow.created_at < moment)).rowcount
        return Purged(int(count or 0), sorted(images))
