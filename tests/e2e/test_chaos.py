"""Issue 3's chaos run at 1,000 contacts: carrier faults, SIGKILLed workers, a Redis
restart that loses every queued message. Nothing may be dialed twice or skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.chaos import run_chaos
from tests.helpers import database_named

pytestmark = pytest.mark.e2e


def test_chaos_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    report = run_chaos(
        1000,
        tmp_path,
        database_named("chaos"),  # named after the test database: suites never share it
        cps=60,
        redis_down=15,
        timeout=600,
    )
    print(report)
    assert report.contacts == 1000
    assert report.creates >= 1000
    assert report.extra_dials == 0, "a person was dialed more often than the policy says"
    assert report.missing_dials == 0, "a dial the policy calls for never happened"
    assert report.not_final == 0
    assert report.events_refused == 0
    assert report.export_mismatches == 0, "export does not match the carrier's record"
    assert report.unknown_calls == 0, "the carrier and the database disagree on call ids"
