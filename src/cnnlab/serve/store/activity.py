"""Counts from the database, so that every worker reports every worker's requests: per UTC minute over a
recent span (the monitor's charts), and in all (the Prometheus counters)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import func, select

from cnnlab.serve.store.engine import Database
from cnnlab.serve.store.tables import AuditRow, PredictionRow, as_utc

OPERATOR_METHOD = "CLI"
"""The audit `method` of a row an operator's command wrote (cnnlab purge), not an HTTP request."""
MINUTE_FORMAT = "%Y-%m-%dT%H:%M"
MINUTE_CHARS = 16
"""A UTC minute as text, the way the monitor's counts over time name it."""


class ActivityQueries(Database):
    def requests_per_minute(self, since: datetime) -> list[tuple[str, str, int]]:
        """(UTC minute as 'YYYY-MM-DDTHH:MM', outcome, requests) from the audit log since `since`."""
        minute = func.substr(AuditRow.at, 1, MINUTE_CHARS)  # `at` is ISO text: its first 16 characters
        query = (
            select(minute, AuditRow.outcome, func.count())
            .where(AuditRow.at >= since.astimezone(UTC).isoformat(timespec="microseconds"))
            .group_by(minute, AuditRow.outcome)
        )
        with self.sessions() as s:
            return [(str(m), str(o), int(n)) for m, o, n in s.execute(query)]

    def predictions_per_minute(self, since: datetime, model_name: str) -> list[tuple[str, str, int]]:
        """(UTC minute as 'YYYY-MM-DDTHH:MM', label, predictions) of one model name since `since`."""
        column, dialect = PredictionRow.created_at, self.engine.dialect.name
        recent = (PredictionRow.created_at >= since) & (PredictionRow.model_name == model_name)
        # Grouped in SQL where the dialect can truncate to the minute: an hour of heavy traffic then
        # crosses the wire as 60 x classes rows, not row by row.
        if dialect == "sqlite":
            minute = func.strftime("%Y-%m-%dT%H:%M", column)
        elif dialect == "postgresql":
            minute = func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI')
        else:
            with self.sessions() as s:
                counts = Counter(
                    (as_utc(at).strftime(MINUTE_FORMAT), label)
                    for at, label in s.execute(select(column, PredictionRow.label).where(recent))
                )
            return [(m, label, n) for (m, label), n in counts.items()]
        query = select(minute, PredictionRow.label, func.count()).where(recent).group_by(minute, PredictionRow.label)
        with self.sessions() as s:
            return [(str(m), str(label), int(n)) for m, label, n in s.execute(query)]

    def requests_by_route_status(self) -> list[tuple[str, int, int]]:
        """(route, HTTP status, requests) over the whole audit log: every worker's, every restart's."""
        query = (  # an operator's command (cnnlab purge) is audited too, but it is no HTTP request
            select(AuditRow.route, AuditRow.status, func.count())
            .where(AuditRow.method != OPERATOR_METHOD)
            .group_by(AuditRow.route, AuditRow.status)
        )
        with self.sessions() as s:
            return [(str(r), int(st), int(n)) for r, st, n in s.execute(query)]

    def predictions_by_label(self) -> list[tuple[str, str, str, int]]:
        """(model name, version, label, predictions) over every prediction still kept."""
        columns = (PredictionRow.model_name, PredictionRow.model_version, PredictionRow.label)
        query = select(*columns, func.count()).group_by(*columns)
        with self.sessions() as s:
            return [(str(m), str(v), str(label), int(n)) for m, v, label, n in s.execute(query)]
