"""The chaos run at 600 contacts (benchmarks/chaos.py): carrier faults, SIGKILLed
workers, the workers behind PgBouncer in transaction mode, PostgreSQL crashed and down
10 s, Redis restarted from its append-only file, the carrier cut off, and a Redis crash
that loses every queued message. Nothing may be dialed twice or skipped.

Smaller than the benchmark's run (1,000 contacts; Redis down 15 s, the carrier 30 s), so
the suite stays well inside its time: the faults still fall every ~100 calls with calls
in flight, and the fleet's hold on an unreachable carrier reaches its 5 s ceiling
within 4 s, so 10 s of outage covers it."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.chaos import run_chaos

pytestmark = pytest.mark.e2e


def test_chaos_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    report = run_chaos(
        600,
        tmp_path,
        cps=60,
        redis_down=5,
        carrier_down=10,
        timeout=600,
    )
    print(report)
    assert report.contacts == 600
    assert report.creates >= 600
    assert report.extra_dials == 0, "a person was dialed more often than the policy says"
    assert report.missing_dials == 0, "a dial the policy calls for never happened"
    assert report.not_final == 0
    assert report.events_refused == 0
    assert report.export_mismatches == 0, "export does not match the carrier's record"
    assert report.unknown_calls == 0, "the carrier and the database disagree on call ids"
    # Every fault was done, and after each the fleet dialed again within seconds of the
    # service's return, with no restart of its own (a bound on backoffs, not a speed
    # figure: benchmarks/chaos.py prints the seconds).
    assert set(report.resumed_after) == {
        "worker killed",
        "postgres restart",
        "redis restart (aof)",
        "carrier cut off",
        "redis data lost",
        "worker killed (2)",
    }
    slow = {k: v for k, v in report.resumed_after.items() if v > 20}
    assert not slow, f"resumed more than 20 s after the service's return: {slow}"
