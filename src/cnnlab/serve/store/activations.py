"""Which loaded version of each model name is active: kept in the database, so that every worker
process and a restart see the same choice."""

from __future__ import annotations

from cnnlab.serve.store.engine import Database
from cnnlab.serve.store.tables import ActiveModel, utcnow


class ActivationQueries(Database):
    def activation(self, name: str) -> str | None:
        with self.sessions() as s:
            row = s.get(ActiveModel, name)
            return row.version if row else None

    def set_activation(self, name: str, version: str, by: str | None) -> None:
        with self.sessions.begin() as s:
            row = s.get(ActiveModel, name)
            if row is None:
                s.add(ActiveModel(name=name, version=version, activated_by=by))
            else:
                row.version, row.activated_by, row.activated_at = version, by, utcnow()
