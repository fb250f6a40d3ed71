"""Rollouts (a canary or shadow candidate beside the active version) and the governance log of every
decision about which version serves: both in the database, so every worker routes alike."""

from __future__ import annotations

from sqlalchemy import delete, select

from cnnlab.serve.store.engine import Database
from cnnlab.serve.store.tables import ActiveModel, ModelEvent, Rollout, utcnow


class RolloutQueries(Database):
    def rollout(self, name: str) -> Rollout | None:
        with self.sessions() as s:
            return s.get(Rollout, name)

    def start_rollout(self, name: str, version: str, mode: str, fraction: float, by: str | None) -> Rollout:
        """Start (or replace) the rollout of `name`; one event row says so, in the same transaction."""
        with self.sessions.begin() as s:
            row = s.get(Rollout, name)
            if row is None:
                row = Rollout(name=name)
                s.add(row)
            row.version, row.mode, row.fraction, row.started_by, row.started_at = version, mode, fraction, by, utcnow()
            active = s.get(ActiveModel, name)
            s.add(
                ModelEvent(
                    name=name, action=mode, version=version, previous=active.version if active else None, by=by,
                    reason=f"{fraction:.0%} of requests" if mode == "canary" else "every request, answers not shown",
                )
            )  # fmt: skip
        return row

    def change_active(
        self,
        name: str,
        version: str,
        by: str | None,
        action: str,
        reason: str = "",
        gate_json: str | None = None,
        end_rollout: bool = False,
    ) -> ModelEvent:
        """Make `version` the active one, end the rollout when asked, and log why: one transaction,
        so no worker ever sees the new version active and its event missing, or the reverse."""
        with self.sessions.begin() as s:
            row = s.get(ActiveModel, name)
            previous = row.version if row else None
            if row is None:
                s.add(ActiveModel(name=name, version=version, activated_by=by))
            else:
                row.version, row.activated_by, row.activated_at = version, by, utcnow()
            if end_rollout:
                s.execute(delete(Rollout).where(Rollout.name == name))
            event = ModelEvent(
                name=name, action=action, version=version, previous=previous, by=by, reason=reason, gate_json=gate_json
            )
            s.add(event)
        return event

    def end_rollout(self, name: str, by: str | None, action: str, reason: str) -> Rollout | None:
        """End the rollout of `name` (None when there was none), logged as `action`."""
        with self.sessions.begin() as s:
            row = s.get(Rollout, name)
            if row is None:
                return None
            s.delete(row)
            active = s.get(ActiveModel, name)
            s.add(
                ModelEvent(
                    name=name, action=action, version=active.version if active else None, previous=row.version,
                    by=by, reason=reason,
                )
            )  # fmt: skip
            return row

    def log_event(
        self, name: str, action: str, version: str | None, by: str | None, reason: str, gate_json: str | None
    ) -> ModelEvent:
        """An event that changes nothing (a refused gate): the log says it was tried."""
        with self.sessions.begin() as s:
            active = s.get(ActiveModel, name)
            event = ModelEvent(
                name=name, action=action, version=version, previous=active.version if active else None, by=by,
                reason=reason, gate_json=gate_json,
            )  # fmt: skip
            s.add(event)
        return event

    def events(self, name: str, limit: int = 200) -> list[ModelEvent]:
        """The governance log of `name`, newest first."""
        with self.sessions() as s:
            query = select(ModelEvent).where(ModelEvent.name == name).order_by(ModelEvent.id.desc()).limit(limit)
            return list(s.scalars(query))

    def previously_active(self, name: str) -> str | None:
        """The version that was active before the current one (what a rollback returns to)."""
        with self.sessions() as s:
            active = s.get(ActiveModel, name)
            query = (
                select(ModelEvent.previous)
                .where((ModelEvent.name == name) & (ModelEvent.version == (active.version if active else None)))
                .where(ModelEvent.action.in_(("activate", "promote", "rollback")))
                .where(ModelEvent.previous.is_not(None) & (ModelEvent.previous != ModelEvent.version))
                .order_by(ModelEvent.id.desc())
                .limit(1)
            )
            return s.scalar(query)
