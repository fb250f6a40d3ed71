"""Keys that expire (api_keys.expires_at) and the audit log's time index (the monitor counts its last
hour). Both may already be there: releases before migrations added them with ad-hoc ALTERs at start-up,
and such a database is stamped at the baseline, so this revision adds only what is missing.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("api_keys")}
    if "expires_at" not in columns:
        # Nullable: a key from before expiry existed never expires, which is what its NULL says.
        op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_audit_at", "audit", ["at"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_audit_at", "audit")
    with op.batch_alter_table("api_keys") as batch:  # SQLite rebuilds the table to drop a column
        batch.drop_column("expires_at")
