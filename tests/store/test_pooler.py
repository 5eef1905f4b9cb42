"""DIALER_DATABASE_POOLER: the engine's sessions with and without a transaction pooler
in front (the chaos test runs a real PgBouncer; these check the settings themselves)."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from sqlalchemy import text

from dialer import settings
from dialer.store.dialects.postgresql import PostgresQueries


def session_settings(test_settings: settings.Settings, pooler: str) -> dict[str, str]:
    settings.override(dataclasses.replace(test_settings, database_pooler=pooler))
    engine = PostgresQueries().create_engine(test_settings.database_url)
    try:
        with engine.connect() as conn:
            names = ("plan_cache_mode", "random_page_cost", "jit")
            shown = {n: conn.scalar(text(f"SELECT current_setting('{n}')")) for n in names}
            # Run one statement past psycopg's threshold for preparing it.
            for _ in range(8):
                conn.execute(text("SELECT 1 WHERE 1 = :x"), {"x": 1})
            prepared = conn.scalar(text("SELECT count(*) FROM pg_prepared_statements"))
        return {**shown, "prepared": str(prepared)}
    finally:
        engine.dispose()
        settings.override(test_settings)


def test_direct_sessions_carry_the_planner_settings(test_settings: settings.Settings) -> None:
    got = session_settings(test_settings, "none")
    assert got["plan_cache_mode"] == "force_custom_plan"
    assert got["random_page_cost"] == "1.1"
    assert got["jit"] == "off"
    assert got["prepared"] != "0", "psycopg prepares repeated statements without a pooler"


def test_behind_a_pooler_nothing_needs_the_session_and_a_missing_setting_is_named(
    test_settings: settings.Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dialer.store.dialects.postgresql"):
        got = session_settings(test_settings, "transaction")
    assert got["prepared"] == "0", "a prepared statement would not survive a pooler"
    assert got["plan_cache_mode"] == "auto", "no startup options were sent"
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "ALTER DATABASE <name> SET plan_cache_mode = force_custom_plan" in warning
    assert "jit" in warning
