"""The service's database behind one `Store`: tables.py (the tables), engine.py (connection and
start-up migrations), audit.py (the hash-chained audit log) and one module per group of queries.

The names below are this package's interface; import them from `cnnlab.serve.store`."""

from __future__ import annotations

from cnnlab.serve.store.activations import ActivationQueries
from cnnlab.serve.store.activity import MINUTE_CHARS, MINUTE_FORMAT, OPERATOR_METHOD, ActivityQueries
from cnnlab.serve.store.audit import AUDIT_FIELDS, GENESIS, AuditLog, AuditProblem, chain_hash
from cnnlab.serve.store.cases import CaseQueries
from cnnlab.serve.store.engine import (
    BASELINE,
    DEFAULT_BUSY_TIMEOUT_S,
    Database,
    alembic_config,
    head_revision,
    is_busy,
    make_engine,
    migrate,
    schema_revision,
)
from cnnlab.serve.store.keys import KeyQueries, SecretQueries
from cnnlab.serve.store.live import LabelledCase, LiveQueries, RecentPrediction
from cnnlab.serve.store.retention import Purged, RetentionQueries
from cnnlab.serve.store.rollouts import ROLLOUT_ENDED, RolloutQueries, StaleDecision
from cnnlab.serve.store.tables import (
    ActiveModel,
    ApiKey,
    AuditRow,
    Base,
    FeedbackRow,
    ModelEvent,
    PredictionRow,
    ReviewItem,
    Rollout,
    ShadowRow,
    as_utc,
    utcnow,
)
from cnnlab.serve.store.usage import RATE_LIMITED, UsageQueries


class Store(
    KeyQueries,
    SecretQueries,
    CaseQueries,
    LiveQueries,
    RetentionQueries,
    ActivityQueries,
    ActivationQueries,
    RolloutQueries,
    UsageQueries,
    AuditLog,
):
    """Every read and write the service and its commands make, on one migrated database."""


__all__ = [
    "AUDIT_FIELDS",
    "BASELINE",
    "DEFAULT_BUSY_TIMEOUT_S",
    "GENESIS",
    "MINUTE_CHARS",
    "MINUTE_FORMAT",
    "OPERATOR_METHOD",
    "RATE_LIMITED",
    "ROLLOUT_ENDED",
    "ActiveModel",
    "ApiKey",
    "AuditProblem",
    "AuditRow",
    "Base",
    "Database",
    "FeedbackRow",
    "LabelledCase",
    "ModelEvent",
    "PredictionRow",
    "Purged",
    "RecentPrediction",
    "ReviewItem",
    "Rollout",
    "ShadowRow",
    "StaleDecision",
    "Store",
    "alembic_config",
    "as_utc",
    "chain_hash",
    "head_revision",
    "is_busy",
    "make_engine",
    "migrate",
    "schema_revision",
    "utcnow",
]
