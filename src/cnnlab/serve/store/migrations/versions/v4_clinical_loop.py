"""The clinical loop: patients, rollout arms and embeddings on predictions; shadow answers,
rollouts, the governance log and the service's own secrets.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    # A database stamped at the baseline may have been built by create_all from these very tables
    # (tests/serve/test_migrations.py makes one): add only what is missing, as 0002 does.
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    if "shadow_predictions" in tables:
        return
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("patient_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("arm", sa.String(16), nullable=False, server_default="active"))
        batch.add_column(sa.Column("embedding", sa.LargeBinary(), nullable=True))
        batch.create_index("ix_predictions_patient_key", ["patient_key"])
    op.create_table(
        "shadow_predictions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(32), sa.ForeignKey("predictions.request_id"), nullable=False),
        sa.Column("created_at", _when(), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("probs_json", sa.Text(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
    )
    op.create_index("ix_shadow_predictions_request_id", "shadow_predictions", ["request_id"])
    op.create_index("ix_shadow_predictions_created_at", "shadow_predictions", ["created_at"])
    op.create_table(
        "rollouts",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=False),
        sa.Column("started_by", sa.String(32), nullable=True),
        sa.Column("started_at", _when(), nullable=False),
    )
    op.create_table(
        "model_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", _when(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("previous", sa.String(64), nullable=True),
        sa.Column("by", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("gate_json", sa.Text(), nullable=True),
    )
    op.create_index("ix_model_events_at", "model_events", ["at"])
    op.create_index("ix_model_events_name", "model_events", ["name"])
    op.create_table(
        "service_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    for table in ("service_secrets", "model_events", "rollouts", "shadow_predictions"):
        op.drop_table(table)
    with op.batch_alter_table("predictions") as batch:
        batch.drop_index("ix_predictions_patient_key")
        batch.drop_column("embedding")
        batch.drop_column("arm")
        batch.drop_column("patient_key")
