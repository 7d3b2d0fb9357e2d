"""Storage backends behind one interface (`Store`, declared in store/base.py; the SQL both
share is `SQLStore`): SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

from .base import Store
from .sql import SQLStore

__all__ = ["Store", "SQLStore", "open_store", "is_postgres_url"]


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def open_store(target: str, *, migrate: bool = True) -> Store:
    """Open (and by default migrate) the database named by a path or URL."""
    if is_postgres_url(target):
        from .postgres import PostgresStore

        return PostgresStore(target, migrate=migrate)
    if target.startswith("sqlite:///"):
        target = target[len("sqlite:///"):]
    from .sqlite import SQLiteStore

    return SQLiteStore(target, migrate=migrate)
