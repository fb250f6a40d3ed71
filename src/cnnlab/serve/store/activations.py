"""Which loaded version of each model name is active: kept in the database, so that every worker
process and a restart see the same choice (rollouts.py changes it, with the governance log)."""

from __future__ import annotations

from cnnlab.serve.store.engine import Database
from cnnlab.serve.store.tables import ActiveModel


class ActivationQueries(Database):
    def activation(self, name: str) -> str | None:
        with self.sessions() as s:
            row = s.get(ActiveModel, name)
            return row.version if row else None
