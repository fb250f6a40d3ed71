"""The audit log by key and time: each key's rate limit counts that key's requests of the last minute.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_key_at", "audit", ["key_id", "at"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_audit_key_at", "audit")
