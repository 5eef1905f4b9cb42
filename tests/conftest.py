"""Shared fixtures: a real PostgreSQL database and a private Redis server.

The database (``DIALER_TEST_DATABASE_URL``, default ``dialer_test`` on the local server)
is dropped, recreated and migrated with Alembic once per test process. Tests that take
``session`` run inside an outer transaction that is rolled back (the pypi/warehouse
pattern); tests that need real commits (tasks, processes) take ``clean_db``, which
empties every table afterwards.

Redis is a private ``redis-server`` on a free port, started here and stopped at the end,
so tests never touch a Redis anything else uses.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from dialer import settings
from dialer.dev.fleet import RedisServer, fresh_database
from dialer.dev.simulator import SimConfig, Simulator
from dialer.store.models import Base
from tests.helpers import REDIS_PORT, TEST_DATABASE_URL, TEST_ENV, rolled_back

# Set before any test module imports the Celery app, and inherited by every process a
# test starts: nothing in the suite can reach the machine's own Redis or database.
os.environ.update(TEST_ENV)
settings.override(None)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(REDIS_PORT)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_url() -> str:
    url = make_url(fresh_database(TEST_DATABASE_URL))
    from dialer.store import migrate

    engine = create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session", autouse=True)
def test_settings(database_url: str, redis_server: RedisServer) -> Iterator[settings.Settings]:
    """Point the process's settings at the test database and the private Redis."""
    s = settings.load({**TEST_ENV, "DIALER_DATABASE_URL": database_url})
    settings.override(s)
    yield s
    settings.override(None)


@pytest.fixture
def session(test_settings: settings.Settings) -> Iterator[Session]:
    """A session in a transaction that is rolled back after the test."""
    from dialer.store import db

    with rolled_back(db.engine()) as sess:
        yield sess


@pytest.fixture
def clean_db(test_settings: settings.Settings) -> Iterator[None]:
    """For tests that commit: every table is emptied afterwards."""
    from dialer.store import db

    yield
    tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
    with db.engine().begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def sim(test_settings: settings.Settings, clean_db: None) -> Iterator[Simulator]:
    """The carrier simulator on loopback, the process's settings pointed at it; the
    clock is restored afterwards (tests that move it use ``clock.set_source``)."""
    import redis

    from dialer import clock
    from dialer.worker import clients

    simulator = Simulator(SimConfig(answer_delay=0.01, talk_time=0.01, ambiguous_hold=3.0))
    url = simulator.start()
    settings.override(dataclasses.replace(test_settings, catapult_api_url=url))
    clients.reset_clients()
    # A clean slate: no hold, no pace or share left by an earlier test's campaign (ids
    # restart at 1), no messages it published.
    redis.Redis.from_url(test_settings.redis_url).flushdb()
    yield simulator
    simulator.stop()
    settings.override(test_settings)
    clients.reset_clients()
    clock.set_source(None)


@pytest.fixture
def tmp_csv(tmp_path: Path):
    """Write rows (a list of lists, header first) to a CSV file and return its path."""
    import csv

    def write(rows: list[list[str]], name: str = "contacts.csv") -> Path:
        path = tmp_path / name
        with path.open("w", newline="") as f:
            csv.writer(f).writerows(rows)
        return path

    return write
