"""Issue 3's chaos run at 1,000 contacts: carrier faults, SIGKILLed workers, a Redis
restart that loses every queued message. Nothing may be dialed twice or skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from benchmarks.chaos import run_chaos
from tests.conftest import TEST_DATABASE_URL

pytestmark = pytest.mark.e2e


def test_chaos_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    url = make_url(TEST_DATABASE_URL).set(database="dialer_chaos_test")
    report = run_chaos(
        1000,
        tmp_path,
        url.render_as_string(hide_password=False),
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
