"""``dialer campaign status`` reads with the database driver alone (dialer.store.campaign_status):
it imports no SQLAlchemy, models, phonenumbers or Celery, shows what ``api.status``
shows, and works on SQLite (where it counts the rows) as on PostgreSQL (the tallies)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text, update

from dialer import api, clock, settings
from dialer.dev.simulator import Simulator
from dialer.state import windows
from dialer.store import campaign_status, db, migrate
from dialer.store.dialects import drivers
from dialer.store.models import Attempt, Contact
from tests.factories import LA, NY, at, dial_all, queued

HEAVY = (
    "sqlalchemy",
    "dialer.store.models",
    "dialer.api",
    "phonenumbers",
    "celery",
    "dialer.worker.tasks",
)
ROOT = Path(__file__).resolve().parents[2]

# Runs the CLI in a fresh interpreter, then says which heavy modules it had imported.
PROBE = f"""
import json, sys
from dialer import cli
code = cli.main(sys.argv[1:])
print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def run_cli(*args: str, url: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DIALER_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_the_status_command_imports_nothing_heavy_and_shows_api_status(
    sim: Simulator, test_settings: settings.Settings
) -> None:
    at(2026, 11, 27, 16, 0)
    cid = api.create_campaign(
        "lean",
        "+19195550000",
        [{"phone": n} for n in [*NY, *LA, "not a number"]],
        window="09:00-17:00",
        days="mon-fri",
    )["id"]
    api.start(cid)
    dial_all(queued(cid))
    out = run_cli("campaign", "status", str(cid), "--json", url=test_settings.database_url)
    assert out.returncode == 0, out.stderr
    shown, probe = (json.loads(line) for line in out.stdout.splitlines())
    assert probe == {"code": 0, "heavy": []}
    # The subprocess runs on the wall clock: the window part depends on the time.
    expected = api.status(cid)
    assert {k: v for k, v in shown.items() if k != "window"} == {
        k: v for k, v in expected.items() if k != "window"
    }
    assert shown["calls"] == 3 and shown["contacts"]["dialing"] == 3

    unknown = run_cli("campaign", "status", "99999", url=test_settings.database_url)
    assert "dialer: no campaign with id 99999" in unknown.stderr
    assert json.loads(unknown.stdout) == {"code": 1, "heavy": []}
    no_run = run_cli("campaign", "status", str(cid), "--run", "7", url=test_settings.database_url)
    assert f"campaign {cid} has no run 7 (runs: 1)" in no_run.stderr


def test_rules_import_without_sqlalchemy_or_phonenumbers() -> None:
    code = (
        "import sys, dialer.policy.rules, dialer.store.campaign_status\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
    from dialer.policy import rules
    from dialer.store.models import ContactStatus

    assert rules.ContactStatus is ContactStatus, "the models re-export the same enums"
    assert rules.zones_for("+12125550000") == "America/New_York"
    assert rules.zones_for("+999") is None and rules.zones_for("sip:a@b") is None


@pytest.fixture
def sqlite_db(tmp_path: Path, test_settings: settings.Settings):
    """The process's settings on a migrated SQLite database (relative URL, from tmp_path)."""
    url = f"sqlite:///{tmp_path}/status.db"
    settings.override(dataclasses.replace(test_settings, database_url=url))
    try:
        migrate.upgrade(db.engine())
        yield url
    finally:
        db.engine().dispose()
        settings.override(test_settings)
        clock.set_source(None)


def test_on_sqlite_the_rows_are_counted(sqlite_db: str, tmp_path: Path) -> None:
    at(2026, 11, 27, 23, 30)  # New York 18:30 (shut), Los Angeles 15:30 (open)
    cid = api.create_campaign(
        "small",
        "+19195550000,+17045550000",
        [{"phone": n} for n in [*NY, *LA, "not a number", NY[0]]],
        window="09:00-17:00",
        days="mon-fri",
    )["id"]
    with db.session_scope() as session:
        session.execute(
            text("UPDATE campaign SET state = 'running', run = 1 WHERE id = :c"), {"c": cid}
        )
        windows.defer_closed(session, api._campaign(session, cid), at(2026, 11, 27, 23, 30))
        session.execute(
            update(Contact).where(Contact.e164 == LA[0]).values(status="answered", attempts=1)
        )
        contact_id = session.scalar(text("SELECT id FROM contact WHERE e164 = :e"), {"e": LA[0]})
        session.add(
            Attempt(
                contact_id=contact_id,
                campaign_id=cid,
                number=1,
                run=1,
                status="ended",
                call_id="c-1",
                queued_at=at(2026, 11, 27, 23, 30),
                from_number="+17045550000",
            )
        )
    st = api.status(cid)
    # Calls per caller id, counted from the attempts on SQLite (a tally on PostgreSQL).
    assert [(c["number"], c["state"], c["calls"]) for c in st["caller_ids"]] == [
        ("+19195550000", "active", 0),
        ("+17045550000", "active", 1),
    ]
    assert st["contacts"] == {
        "pending": 4,
        "dialing": 0,
        "answered": 1,
        "unanswered": 0,
        "failed": 0,
        "invalid": 1,
        "duplicate": 1,
        "suppressed": 0,
        "cancelled": 0,
    }
    assert st["total"] == 7 and st["calls"] == 1 and st["state"] == "running"
    assert st["window"] == {
        "waiting": 3,
        "next_opening": "2026-11-30T14:00:00+00:00",  # Monday 09:00 in New York
        "never_opens": 0,
    }
    assert st["created_at"].endswith("+00:00")
    with campaign_status.Reader(sqlite_db) as reader:
        assert reader.status(cid) == st
    # The command, from the directory a relative URL is relative to.
    relative = "sqlite:///status.db"
    out = run_cli("campaign", "status", str(cid), "--json", url=relative, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    shown, probe = (json.loads(line) for line in out.stdout.splitlines())
    assert probe == {"code": 0, "heavy": []}
    assert shown["contacts"] == st["contacts"] and shown["calls"] == 1


def test_database_urls_become_driver_connections(tmp_path: Path) -> None:
    conn, driver = drivers.connect(f"sqlite:///{tmp_path}/x.db?timeout=5")
    assert driver.name == "sqlite"
    conn.close()
    assert (tmp_path / "x.db").exists()
    with pytest.raises(api.ApiError, match="no status reader"):
        drivers.connect("mysql://u@h/db")
