"""The migrations build exactly the schema the models describe, on PostgreSQL and on
SQLite, and 0002 carries campaigns made before it forward."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from dialer.store import migrate
from dialer.store.models import Base
from tests.helpers import database_named


def _differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_migrations_match_the_models(backend: str, tmp_path: Path) -> None:
    url = database_named("migrations") if backend == "postgresql" else f"sqlite:///{tmp_path}/m.db"
    assert _differences(url) == []


def test_0002_carries_started_campaigns_forward() -> None:
    engine = create_engine(database_named("migrations_data"))
    try:
        migrate.upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO campaign (id, name, from_number, state, region, phone_column,"
                    " columns, tag_fields, max_attempts, retry_delay, timezone, rows, imported,"
                    " invalid, duplicate, suppressed, created_at, started_at) VALUES"
                    " (1, 'old', '+19195550000', 'running', 'US', 'phone', '[]', '[]', 3, 600,"
                    " 'UTC', 0, 0, 0, 0, 0, now(), now()),"
                    " (2, 'draft', '+19195550000', 'draft', 'US', 'phone', '[]', '[]', 3, 600,"
                    " 'UTC', 0, 0, 0, 0, 0, now(), NULL)"
                )
            )
        migrate.upgrade(engine)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, run, zone_keys FROM campaign ORDER BY id")).all()
            assert [(r.id, r.run, r.zone_keys) for r in rows] == [(1, 1, [None]), (2, 0, [None])]
            assert conn.execute(text("SELECT campaign_id, number FROM campaign_run")).all() == [
                (1, 1)
            ]
    finally:
        engine.dispose()
