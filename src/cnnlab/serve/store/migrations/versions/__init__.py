"""One module per revision of the service's schema, oldest first (Alembic reads them by file)."""
