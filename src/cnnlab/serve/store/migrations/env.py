"""Alembic's environment: the revisions run on the connection `store.engine.migrate` passes in, inside
its transaction and under its migration lock, so that several processes starting on one database
take turns and a failed revision leaves the schema as it was (where the database has transactional
DDL, as PostgreSQL and SQLite do)."""

from __future__ import annotations

from alembic import context

context.configure(connection=context.config.attributes["connection"])
with context.begin_transaction():
    context.run_migrations()
