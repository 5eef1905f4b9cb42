"""``dialer demo`` as a user runs it: a subprocess, no services, nothing left behind."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from dialer.store.models import ContactStatus

# Every service setting points at a port nothing listens on: the demo must need none.
NOWHERE = {
    "DIALER_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
    "DIALER_BROKER_URL": "redis://127.0.0.1:1/0",
    "DIALER_REDIS_URL": "redis://127.0.0.1:1/0",
    "CATAPULT_API_URL": "http://127.0.0.1:1",
}
FINAL = {"answered", "unanswered", "failed", "invalid", "duplicate", "suppressed", "cancelled"}


def test_demo_runs_a_whole_campaign_without_services(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dialer.cli", "demo"],
        cwd=tmp_path,
        env={**os.environ, **NOWHERE, "TMPDIR": str(scratch), "COLUMNS": "100"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Its own process group: whatever it might start stays findable after it exits.
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"

    # Nothing it started outlives it: no process in its group, no thread it reported.
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        pass
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the demo left a process running")
    assert "still running" not in err, err
    # Its scratch directory (database, sample files) is gone; only the export stays.
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dialer-demo-export.csv", "tmp"]

    # Not on a terminal: plain progress lines instead of a bar.
    assert re.search(r"^\d+/1000 contacts final, \d+ calls$", out, re.M), out

    # The summary: a completed campaign whose contacts by status add up to 1,000.
    assert re.search(r"campaign \d+ \(demo\): completed", out), out
    rows = dict(re.findall(r"^\W*([a-z][a-z ]*?)\s+│\s+(\S.*?)\s*│$", out, re.M))
    by_status = {k: int(v) for k, v in rows.items() if k in {s.value for s in ContactStatus}}
    assert set(by_status) <= FINAL, by_status
    assert sum(by_status.values()) == 1000 == int(rows["total"])
    for bad in ("invalid", "duplicate", "suppressed"):
        assert by_status[bad] == 10, by_status
    assert by_status["answered"] > 0 and by_status["unanswered"] > 0
    attempts = int(rows["attempts"].split()[0])
    assert attempts > 970, "the busy and unanswered numbers were not retried"
    assert int(rows["calls made"]) == attempts
    assert re.fullmatch(r"\d+% of 970", rows["answer rate"])
    assert re.match(r"[\d.]+ \(limit", rows["calls per second"])
    assert re.fullmatch(r"[\d.]+ s", rows["campaign took"])

    # The export: where it says, one row per contact, matching the summary.
    match = re.search(r"export written to (\S+)", out)
    assert match and Path(match.group(1)) == tmp_path / "dialer-demo-export.csv"
    with (tmp_path / "dialer-demo-export.csv").open(newline="", encoding="utf-8") as f:
        export = list(csv.DictReader(f))
    assert len(export) == 1000
    assert list(export[0])[:8] == [
        "contact_id",
        "phone",
        "e164",
        "status",
        "attempts",
        "call_id",
        "result",
        "cause",
    ]
    counted: dict[str, int] = {}
    for row in export:
        counted[row["status"]] = counted.get(row["status"], 0) + 1
    assert counted == by_status
    assert sum(int(row["attempts"] or 0) for row in export) == attempts
    # The call script: the summary's responses are the export's, label by label.
    responses: dict[str, int] = {}
    for row in export:
        if row["response"]:
            assert row["status"] == "answered" and row["digits"], row
            responses[row["response"]] = responses.get(row["response"], 0) + 1
    shown = dict(re.findall(r"([a-z-]+) (\d+)", rows["responses"]))
    assert {k: int(v) for k, v in shown.items()} == responses
    assert set(responses) <= {"confirmed", "cancelled", "opt-out"} and responses
