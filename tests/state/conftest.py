"""The state machine on both dialects: every test here that takes ``session`` runs once
on PostgreSQL (the suite's database) and once on SQLite (a file migrated with Alembic
the same way), so the SQLite statements of ``dialer.store.dialects`` are tested as
well as the PostgreSQL ones. A test that needs PostgreSQL alone says so with
``@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from dialer import settings
from tests.helpers import rolled_back

DIALECTS = ["postgresql", "sqlite"]


@pytest.fixture(scope="session")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """A SQLite database file, migrated as the demo's is, with the demo's engine."""
    from dialer.store import db, migrate

    path = Path(tmp_path_factory.mktemp("sqlite")) / "state.db"
    engine = db.engine_for(f"sqlite:///{path}")
    migrate.upgrade(engine)
    return engine


@pytest.fixture(params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def session(
    dialect: str, test_settings: settings.Settings, request: pytest.FixtureRequest
) -> Iterator[Session]:
    """A session in a transaction that is rolled back after the test, on ``dialect``."""
    from dialer.store import db

    engine = db.engine() if dialect == "postgresql" else request.getfixturevalue("sqlite_engine")
    with rolled_back(engine) as sess:
        yield sess
