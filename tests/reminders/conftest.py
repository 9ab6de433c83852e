"""The stores' fixtures (a SQLite file, then PostgreSQL) for the reminder tests."""

from tests.staff.pgkit import store_cluster, store_location  # noqa: F401 (fixtures)
