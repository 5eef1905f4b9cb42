"""The admin CLI as scripts use it: real subprocesses against the test database."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dialer import settings


def dialer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dialer.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


@pytest.fixture
def contacts(tmp_csv) -> Path:
    return tmp_csv(
        [
            ["phone", "name", "status"],
            ["(919) 200-0001", "Ann", "vip"],
            ["nope", "Bob", "x"],
            ["+19192000001", "Ann again", "y"],
            ["+19192000002", "Cy", "z"],
        ]
    )


def test_create_status_export_list(
    contacts: Path, clean_db: None, tmp_path: Path, test_settings: settings.Settings
) -> None:
    env = {"DIALER_DATABASE_URL": test_settings.database_url}
    out = dialer(
        "campaign",
        "create",
        "--name",
        "cli",
        "--from",
        "+19195550000",
        "--contacts",
        str(contacts),
        "--tag-field",
        "name",
        "--json",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {k: report[k] for k in ("rows", "imported", "invalid", "duplicate", "suppressed")} == {
        "rows": 4,
        "imported": 2,
        "invalid": 1,
        "duplicate": 1,
        "suppressed": 0,
    }
    cid = str(report["id"])

    status = json.loads(dialer("campaign", "status", cid, "--json", env=env).stdout)
    assert status["state"] == "draft" and status["total"] == 4
    assert status["contacts"]["pending"] == 2 and status["contacts"]["invalid"] == 1

    export = dialer("campaign", "export", cid, env=env)
    rows = list(csv.DictReader(io.StringIO(export.stdout)))
    assert list(rows[0])[:8] == [
        "contact_id",
        "phone",
        "e164",
        "status",
        "attempts",
        "call_id",
        "result",
        "cause",
    ]
    assert [r["phone"] for r in rows] == ["(919) 200-0001", "nope", "+19192000001", "+19192000002"]
    assert rows[1]["status"] == "invalid" and rows[0]["e164"] == "+19192000001"
    assert rows[0]["name"] == "Ann" and rows[0]["context.status"] == "vip", (
        "a context column named like a built-in one keeps its value under a prefix"
    )

    target = tmp_path / "out.csv"
    assert dialer("campaign", "export", cid, "-o", str(target), env=env).returncode == 0
    assert target.read_text().count("\n") == 5

    listed = json.loads(dialer("campaign", "list", "--json", env=env).stdout)
    assert [c["id"] for c in listed] == [report["id"]]

    cancelled = dialer("campaign", "cancel", cid, env=env)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    again = dialer("campaign", "start", cid, env=env)
    assert again.returncode == 1 and "cancelled" in again.stderr


def test_bad_input_is_named(contacts: Path, tmp_csv, test_settings) -> None:
    env = {"DIALER_DATABASE_URL": test_settings.database_url}
    bad_from = dialer(
        "campaign",
        "create",
        "--name",
        "x",
        "--from",
        "919555",
        "--contacts",
        str(contacts),
        env=env,
    )
    assert bad_from.returncode == 1 and "--from" in bad_from.stderr
    no_column = tmp_csv([["number"], ["+19192000001"]], name="other.csv")
    missing = dialer(
        "campaign",
        "create",
        "--name",
        "x",
        "--from",
        "+19195550000",
        "--contacts",
        str(no_column),
        env=env,
    )
    assert missing.returncode == 1 and "phone" in missing.stderr
    unknown = dialer("campaign", "status", "99999", env=env)
    assert unknown.returncode == 1 and "99999" in unknown.stderr
    bad_tag = dialer(
        "campaign",
        "create",
        "--name",
        "x",
        "--from",
        "+19195550000",
        "--contacts",
        str(contacts),
        "--tag-field",
        "nosuch",
        env=env,
    )
    assert bad_tag.returncode == 1 and "nosuch" in bad_tag.stderr


def test_malformed_setting_is_reported_by_name() -> None:
    out = dialer("campaign", "list", env={"DIALER_ACCOUNT_CPS": "fast"})
    assert out.returncode == 2 and "DIALER_ACCOUNT_CPS" in out.stderr


def test_worker_refuses_to_start_without_credentials(tmp_path: Path) -> None:
    env = {**os.environ, "CATAPULT_API_SECRET": ""}
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "dialer", "worker", "--loglevel=WARNING"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode != 0 and "CATAPULT_API_SECRET" in (out.stdout + out.stderr)


def test_campaign_update_changes_rules_and_none_removes_one(
    contacts: Path, clean_db: None, test_settings: settings.Settings
) -> None:
    env = {"DIALER_DATABASE_URL": test_settings.database_url}
    out = dialer(
        "campaign", "create", "--name", "u", "--from", "+19195550000",
        "--contacts", str(contacts), "--cps", "3", "--json", env=env,
    )  # fmt: skip
    cid = str(json.loads(out.stdout)["id"])
    out = dialer(
        "campaign", "update", cid, "--window", "09:00-17:00", "--days", "Mon-Fri",
        "--timezone", "America/Chicago", "--cps", "none", "--schedule", "0 9 * * mon",
        "--json", env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["changed"] == ["window", "days", "timezone", "cps", "schedule"]
    assert (result["rules"]["days"], result["rules"]["cps"]) == ("mon-fri", None)
    assert result["next_run"] is None, "a draft has no next run until it starts"
    out = dialer("campaign", "update", cid, "--window", "25:00-26:00", env=env)
    assert out.returncode == 1 and "--window must look like 09:00-17:30" in out.stderr
    out = dialer("campaign", "update", cid, env=env)
    assert out.returncode == 2 and "at least one rule" in out.stderr
    out = dialer("campaign", "status", cid, "--run", "7", env=env)
    assert out.returncode == 1 and "has no run 7" in out.stderr


# Runs the CLI in a fresh interpreter, then says which of these it had imported.
HEAVY = ("sqlalchemy", "celery", "kombu", "redis", "phonenumbers", "rich", "requests", "cronsim")
PROBE = f"""
import json, sys
from dialer import cli
code = cli.main(sys.argv[1:])
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


def probe(*args: str, env: dict[str, str]) -> tuple[list[str], dict[str, Any]]:
    """The command's own output lines, and what it imported."""
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "PYTHONPATH": root},
        timeout=60,
    )
    *lines, last = out.stdout.splitlines()
    return lines, json.loads(last) | {"stderr": out.stderr}


def test_start_and_resume_import_only_the_driver_and_nudge_the_workers(
    contacts: Path, clean_db: None, test_settings: settings.Settings
) -> None:
    """``start`` and ``resume``: the transition, one message to the workers and the status,
    without SQLAlchemy, Celery, redis-py or phonenumbers (issue 13); the output is what
    it always was. ``pause`` and ``cancel`` come through the API without Celery."""
    import redis

    from dialer import api
    from dialer.worker import nudge

    env = {"DIALER_DATABASE_URL": test_settings.database_url}
    out = dialer(
        "campaign", "create", "--name", "s", "--from", "+19195550000",
        "--contacts", str(contacts), "--json", env=env,
    )  # fmt: skip
    cid = json.loads(out.stdout)["id"]
    broker = redis.Redis.from_url(test_settings.broker_url)
    broker.delete(nudge.CONTROL_QUEUE)

    lines, seen = probe("campaign", "start", str(cid), env=env)
    assert lines == [f"campaign {cid} is running"] and seen["code"] == 0, seen["stderr"]
    assert seen["heavy"] == [] and seen["stderr"] == ""
    [raw] = broker.lrange(nudge.CONTROL_QUEUE, 0, -1)
    message = json.loads(raw)
    assert message["headers"]["task"] == nudge.RELEASE_TASK
    assert json.loads(base64.b64decode(message["body"]))[0] == [cid]
    status = api.status(cid)
    assert status["state"] == "running" and status["run"] == 1

    lines, seen = probe("campaign", "pause", str(cid), env=env)
    assert lines == [f"campaign {cid} is paused"] and seen["code"] == 0, seen["stderr"]
    assert set(seen["heavy"]) <= {"sqlalchemy", "cronsim"}, "no Celery, phonenumbers or rich"

    lines, seen = probe("campaign", "resume", str(cid), "--json", env=env)
    assert seen["code"] == 0 and seen["heavy"] == [], seen["stderr"]
    assert json.loads(lines[0]) == api.status(cid), "the status as the API gives it"
    assert broker.llen(nudge.CONTROL_QUEUE) == 2

    lines, seen = probe("campaign", "resume", str(cid), env=env)
    assert seen["code"] == 1 and lines == []
    assert (
        f"dialer: campaign {cid} is running: only a paused campaign can be resumed"
        in (seen["stderr"])
    )
    lines, seen = probe("campaign", "start", "99999", env=env)
    assert seen["code"] == 1 and "dialer: no campaign with id 99999" in seen["stderr"]
    broker.delete(nudge.CONTROL_QUEUE)


def test_a_caller_id_pool_and_the_call_options_on_create_update_and_status(
    contacts: Path, clean_db: None, tmp_csv, test_settings: settings.Settings
) -> None:
    env = {"DIALER_DATABASE_URL": test_settings.database_url}
    ids = tmp_csv([["phone", "label"], ["(704) 555-0102", "charlotte"]], name="ids.csv")
    out = dialer(
        "campaign", "create", "--name", "pool", "--from", "+19195550101, 212 555 0103",
        "--from-file", str(ids), "--contacts", str(contacts), "--local-presence",
        "--record", "--record-format", "mp3", "--record-max", "120", "--transcribe",
        "--sip-header", "X-Account=42", "--sip-header", "X-Team=sales",
        "--callback-timeout", "4000", "--json", env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    cid = str(json.loads(out.stdout)["id"])
    st = json.loads(dialer("campaign", "status", cid, "--json", env=env).stdout)
    assert st["from"] == "+19195550101"
    assert [(c["number"], c["label"], c["state"], c["calls"]) for c in st["caller_ids"]] == [
        ("+19195550101", None, "active", 0),
        ("+12125550103", None, "active", 0),
        ("+17045550102", "charlotte", "active", 0),
    ]
    assert {k: st["rules"].get(k) for k in ("record", "record_format", "sip_headers")} == {
        "record": True,
        "record_format": "mp3",
        "sip_headers": {"X-Account": "42", "X-Team": "sales"},
    }
    assert st["rules"]["local_presence"] is True and st["rules"]["callback_timeout"] == 4000
    shown = dialer("campaign", "status", cid, env=env).stdout
    assert "caller ids (3 active)" in shown and "+17045550102 charlotte" in shown
    out = dialer(
        "campaign", "update", cid, "--no-record", "--callback-timeout", "none",
        "--sip-header", "none", "--json", env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert sorted(result["changed"]) == ["callback_timeout", "record", "sip_headers"]
    assert "record" not in result["rules"] and "sip_headers" not in result["rules"]
    bad = dialer("campaign", "update", cid, "--callback-timeout", "20000", env=env)
    assert bad.returncode == 1 and "--callback-timeout" in bad.stderr


def test_bad_pool_numbers_and_options_are_named(
    contacts: Path, tmp_csv, test_settings: settings.Settings
) -> None:
    env = {"DIALER_DATABASE_URL": test_settings.database_url}
    ids = tmp_csv([["phone"], ["+19195550101"], ["12"]], name="ids.csv")

    def create(*options: str) -> subprocess.CompletedProcess[str]:
        return dialer(
            "campaign", "create", "--name", "x", "--contacts", str(contacts), *options, env=env
        )

    out = create("--from", "+19195550101,+1919")
    assert out.returncode == 1 and "--from: '+1919'" in out.stderr
    out = create("--from-file", str(ids))
    assert out.returncode == 1 and "line 3: '12'" in out.stderr
    out = create()
    assert out.returncode == 1 and "--from or --from-file" in out.stderr
    out = create("--from", "+19195550101", *[f"--sip-header=X-H{i}=1" for i in range(6)])
    assert out.returncode == 1 and "--sip-header: at most 5 headers" in out.stderr
    out = create("--from", "+19195550101", "--record-format", "ogg")
    assert out.returncode == 1 and "--record-format: must be wav or mp3" in out.stderr


def test_hostile_files_and_the_formula_safe_export(
    clean_db: None, tmp_path: Path, test_settings: settings.Settings
) -> None:
    """Issue 17 through the CLI: a semicolon file from Excel (BOM, CRLF) imports, a
    Latin-1 file and a header of a million columns are refused naming why, and the
    export quotes a formula unless --raw."""
    env = {"DIALER_DATABASE_URL": test_settings.database_url}
    create = ("campaign", "create", "--name", "x", "--from", "+19195550000", "--contacts")
    excel = tmp_path / "excel.csv"
    excel.write_bytes(
        "phone;name;note\r\n(919) 200-0001;Zoë;=1+1\r\nnope;Bob;@SUM(A1)\r\n".encode("utf-8-sig")
    )
    out = dialer(*create, str(excel), "--json", env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["rows"], report["imported"], report["invalid"]) == (2, 1, 1)
    cid = str(report["id"])

    safe = list(csv.DictReader(io.StringIO(dialer("campaign", "export", cid, env=env).stdout)))
    assert [(r["e164"], r["name"], r["note"]) for r in safe] == [
        ("+19192000001", "Zoë", "'=1+1"),
        ("", "Bob", "'@SUM(A1)"),
    ]
    target = tmp_path / "raw.csv"
    assert dialer("campaign", "export", cid, "--raw", "-o", str(target), env=env).returncode == 0
    raw = list(csv.DictReader(target.open(newline="", encoding="utf-8")))
    assert [r["note"] for r in raw] == ["=1+1", "@SUM(A1)"]

    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("phone,name\n9192000002,José\n".encode("latin-1"))
    refused = dialer(*create, str(latin1), env=env)
    assert refused.returncode == 1
    assert "not UTF-8 (byte 0xe9 on line 2)" in refused.stderr and "UTF-8 CSV" in refused.stderr
    wide = tmp_path / "wide.csv"
    wide.write_text("phone," + ",".join(f"c{i}" for i in range(1_000_000)) + "\n", "utf-8")
    too_wide = dialer(*create, str(wide), env=env)
    assert too_wide.returncode == 1 and "more than 1,000 columns" in too_wide.stderr
    listed = json.loads(dialer("campaign", "list", "--json", env=env).stdout)
    assert [c["id"] for c in listed] == [report["id"]], "a refused file created a campaign"
