"""Rollouts (a canary or shadow candidate beside the active version) and the governance log of every
decision about which version serves: both in the database, so every worker routes alike."""

from __future__ import annotations

from sqlalchemy import delete, select

from cnnlab.serve.store.engine import Database
from cnnlab.serve.store.tables import ActiveModel, ModelEvent, Rollout, utcnow

ROLLOUT_ENDED = "rollout ended"
GOES_LIVE = ("activate", "promote")
"""The actions that put a version in front of every patient: what a rollback undoes."""


class StaleDecision(Exception):
    """The active version or the rollout changed while a decision was being made (another admin, another
    worker): nothing was written."""


class RolloutQueries(Database):
    def rollout(self, name: str) -> Rollout | None:
        with self.sessions() as s:
            return s.get(Rollout, name)

    def start_rollout(
        self,
        name: str,
        version: str,
        mode: str,
        fraction: float,
        by: str | None,
        reason: str,
        gate_json: str | None,
        expected_active: str | None,
    ) -> Rollout:
        """Start (or replace) the rollout of `name`, logged with why and the gate's verdict, in one transaction;
        StaleDecision when the active version is no longer `expected_active`."""
        with self.sessions.begin() as s:
            active = s.get(ActiveModel, name, with_for_update=True)
            current = active.version if active else None
            if current != expected_active:
                raise StaleDecision(f"the active version of '{name}' changed meanwhile (now {current})")
            row = s.get(Rollout, name)
            if row is None:
                row = Rollout(name=name)
                s.add(row)
            row.version, row.mode, row.fraction, row.started_by, row.started_at = version, mode, fraction, by, utcnow()
            s.add(ModelEvent(name=name, action=mode, version=version, previous=current, by=by, reason=reason,
                             gate_json=gate_json))  # fmt: skip
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
        expected_active: str | None = None,
        check: bool = False,
    ) -> ModelEvent:
        """Make `version` the active one, end the rollout when asked, and log why: one transaction, so no
        worker ever sees the new version active and its event missing, or the reverse. With `check`, a
        StaleDecision unless the active version is still `expected_active` (a gate ran meanwhile)."""
        with self.sessions.begin() as s:
            row = s.get(ActiveModel, name, with_for_update=True)
            previous = row.version if row else None
            if check and previous != expected_active:
                raise StaleDecision(f"the active version of '{name}' changed meanwhile (now {previous})")
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

    def end_rollout(self, name: str, by: str | None, reason: str) -> Rollout | None:
        """End the rollout of `name` (None when there was none); logged as ROLLOUT_ENDED."""
        with self.sessions.begin() as s:
            row = s.get(Rollout, name, with_for_update=True)
            if row is None:
                return None
            s.delete(row)
            active = s.get(ActiveModel, name)
            s.add(
                ModelEvent(
                    name=name, action=ROLLOUT_ENDED, version=active.version if active else None, previous=row.version,
                    by=by, reason=reason,
                )
            )  # fmt: skip
            return row

    def log_event(
        self, name: str, action: str, version: str | None, by: str | None, reason: str, gate_json: str | None
    ) -> ModelEvent:
        """An event that changes nothing (a refusal): the log says it was tried, and why it was refused."""
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

    def rollback_target(self, name: str) -> str | None:
        """The version a rollback returns to: the one active before the last activation or promotion,
        when that is what put the current version in place. None after a rollback (a second one has
        nothing to undo: a double click must not put the rejected version back) or at the start."""
        with self.sessions() as s:
            active = s.get(ActiveModel, name)
            query = (
                select(ModelEvent)
                .where((ModelEvent.name == name) & ModelEvent.action.in_((*GOES_LIVE, "rollback", "initial")))
                .order_by(ModelEvent.id.desc())
                .limit(1)
            )
            last = s.scalar(query)
            if last is None or active is None or last.action not in GOES_LIVE or last.version != active.version:
                return None
            return last.previous if last.previous != last.version else None
