"""The service's schema history, as Alembic revisions (versions/), applied by `store.engine.migrate`
at every start on the connection it opens: no alembic.ini is needed, on disk or in the wheel.

To change a table: edit `store/tables.py`, then add `versions/vN_<what>.py` with `revision = "000N"`
and `down_revision` the previous one, its `upgrade()` written with `alembic.op` against the table
names (never the ORM classes, which move on with later revisions). `tests/serve/test_migrations.py`
checks that a new database and every older one end at exactly the tables that tables.py declares."""
