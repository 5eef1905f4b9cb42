"""The suite's environment and fresh databases for tests that run whole processes.

Imported by conftest before anything loads the Celery app or the settings, so it imports
nothing of the dialer's that reads them. Test modules import shared helpers from here and
from ``tests.factories``, never from one another.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from dialer.dev.fleet import free_port, fresh_database

# ------------------------------------------------------------------ the environment

TEST_DATABASE_URL = os.environ.get(
    "DIALER_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/dialer_test"
)

REDIS_PORT = free_port()
TEST_ENV = {
    "DIALER_DATABASE_URL": TEST_DATABASE_URL,
    "DIALER_BROKER_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
    "DIALER_REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
    "CATAPULT_API_URL": "http://127.0.0.1:9",
    "CATAPULT_USER_ID": "u-sim",
    "CATAPULT_API_TOKEN": "sim-token",
    "CATAPULT_API_SECRET": "sim-secret",
    "DIALER_CALLBACK_URL": "http://127.0.0.1:9",
    "DIALER_CALLBACK_SECRET": "test-callback-secret",
    "DIALER_ACCOUNT_CPS": "1000",
    "DIALER_NUMBER_CPS": "1000",
    "DIALER_HTTP_TIMEOUT": "2",
}


def database_named(name: str) -> str:
    """A fresh database beside the test database, for tests that run whole processes."""
    # Prefixed with the test database's own name, so two suites on one server (two
    # checkouts, CI beside a developer) never share a database.
    base = make_url(TEST_DATABASE_URL)
    return fresh_database(
        base.set(database=f"{base.database}_{name}").render_as_string(hide_password=False)
    )


@contextmanager
def rolled_back(engine: Engine) -> Iterator[Session]:
    """A session in an outer transaction that is rolled back at the end: the code under
    test may commit (a savepoint), and nothing it wrote outlives the test."""
    connection = engine.connect()
    outer = connection.begin()
    session = Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


def rows_read(session: Session, table: str) -> int:
    """Rows the session's current transaction has read from ``table`` so far (PostgreSQL:
    sequential-scan rows plus index fetches)."""
    return int(
        session.execute(
            text(
                "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
                " FROM pg_stat_xact_user_tables WHERE relname = :t"
            ),
            {"t": table},
        ).scalar_one()
    )


def fresh_redis(port: int, db: int) -> str:
    """Redis database ``db`` of the suite's private server, emptied: a test that starts
    processes on it meets no stream entry, queued task or pace another test left there."""
    import redis

    url = f"redis://127.0.0.1:{port}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url
