"""The store tests' fixtures: a SQLite file, then PostgreSQL (tests/staff/pgkit.py)."""

from tests.staff.pgkit import store_cluster, store_location  # noqa: F401 (fixtures)
