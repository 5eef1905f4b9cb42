"""Progress off a terminal: what a log or a pipe gets from a long import and from --watch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dialer import api, settings
from dialer.importing.contacts import PROGRESS_EVERY

ROWS = 2 * PROGRESS_EVERY + 5_000


def dialer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dialer.cli", *args],
        capture_output=True,  # pipes, not a terminal
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


@pytest.fixture
def env(test_settings: settings.Settings) -> dict[str, str]:
    return {"DIALER_DATABASE_URL": test_settings.database_url}


@pytest.fixture
def large_csv(tmp_path: Path) -> Path:
    path = tmp_path / "large.csv"
    with path.open("w") as f:
        f.write("phone,account\n")
        f.writelines(f"+1919{2_000_000 + i:07d},A{i}\n" for i in range(ROWS))
    return path


def create(contacts: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return dialer(
        "campaign",
        "create",
        "--name",
        "progress",
        "--from",
        "+19195550000",
        "--contacts",
        str(contacts),
        *extra,
        env=env,
    )


def test_large_import_prints_plain_progress_lines_to_stderr(
    large_csv: Path, env: dict[str, str], clean_db: None
) -> None:
    out = create(large_csv, env)
    assert out.returncode == 0, out.stderr
    assert f"{ROWS} rows" in out.stdout
    assert "importing" not in out.stdout, "progress belongs on stderr"
    lines = out.stderr.splitlines()
    # The first report always shows; more at most once a second; and where it ended.
    assert re.fullmatch(rf"importing: {PROGRESS_EVERY:,} rows read, [\d,]+ rows/s", lines[0])
    assert lines[-1] == f"importing: {ROWS:,} rows read, done"
    assert all(line.startswith("importing: ") for line in lines), out.stderr
    assert "\x1b" not in out.stderr, "no terminal control codes in a log"


def test_json_and_small_imports_print_no_progress(
    large_csv: Path, tmp_path: Path, env: dict[str, str], clean_db: None
) -> None:
    out = create(large_csv, env, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rows"] == ROWS
    assert out.stderr == ""

    small = tmp_path / "small.csv"
    small.write_text("phone\n+19192000001\n+19192000002\n")
    out = create(small, env)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


def test_watch_prints_plain_lines_with_a_rate_until_the_campaign_ends(
    tmp_path: Path, env: dict[str, str], clean_db: None
) -> None:
    contacts = tmp_path / "c.csv"
    contacts.write_text("phone\n+19192000001\n+19192000002\nnope\n")
    cid = api.create_campaign("watched", "+19195550000", contacts)["id"]
    watch = subprocess.Popen(
        [sys.executable, "-m", "dialer.cli", "campaign", "status", str(cid), "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    try:
        assert watch.stdout is not None
        first, second = watch.stdout.readline(), watch.stdout.readline()
        api.cancel(cid)
        rest, err = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, err
    stamp = r"\d\d:\d\d:\d\d"
    assert re.fullmatch(rf"{stamp} draft 1/3 final, 0 calls\n", first)
    assert re.fullmatch(rf"{stamp} draft 1/3 final, 0 calls, 0\.0 calls/s\n", second)
    assert re.fullmatch(rf"({stamp} draft .*\n)*{stamp} cancelled 3/3 final, 0 calls, .*\n", rest)
    assert "\x1b" not in first + second + rest


def test_watch_json_prints_one_object_per_line(
    tmp_path: Path, env: dict[str, str], clean_db: None
) -> None:
    contacts = tmp_path / "c.csv"
    contacts.write_text("phone\n+19192000001\n")
    cid = api.create_campaign("watched", "+19195550000", contacts)["id"]
    api.cancel(cid)
    out = dialer("campaign", "status", str(cid), "--watch", "--json", env=env)
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    assert json.loads(line)["state"] == "cancelled"
