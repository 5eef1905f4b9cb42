"""The soak benchmark (benchmarks/soak.py) in short: 20 calls/s for 45 s, read every 7.5 s.

The 30-minute run is the benchmark's; here it must read every process it claims to,
keep the pace, and find the fleet flat over its short window. The judge itself is
checked on series that are not flat."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak import judge, run

pytestmark = pytest.mark.e2e


def test_judge_tells_growth_from_noise() -> None:
    assert judge("rss", [100, 101, 99, 100, 102, 101]).flat
    assert not judge("rss", [100, 100, 105, 110, 115, 120]).flat  # a leak
    assert not judge("conns", [8, 8, 8, 4, 4, 4]).flat  # a pool that lost half
    # A count read at one instant may move by its slack, however small it is.
    assert judge("conns", [2, 2, 3, 3, 3, 3], slack=2).flat
    assert not judge("conns", [2, 2, 3, 5, 5, 5], slack=2).flat


def test_a_short_soak_reads_every_process_and_stays_flat(tmp_path: Path) -> None:
    report = run(tmp_path / "fleet", minutes=0.75, every=7.5, cps=20)
    print("\n".join(v.line() for v in report.verdicts + report.informative))
    assert len(report.calls) == 6
    assert report.pace() == pytest.approx(20, rel=0.1)
    assert set(report.processes) == {"simulator", "receiver", "w0", "w1", "beat", "redis-server"}
    for name, rows in report.processes.items():
        assert all(r["rss MB"] > 5 and r["open files"] > 3 for r in rows), name
    # The connections are found where they are: workers and receiver on both services.
    for name in ("receiver", "w0", "w1"):
        last = report.processes[name][-1]
        assert last["pg conns"] >= 1 and last["redis conns"] >= 1, (name, last)
    assert report.database[-1]["connections"] >= 3
    # Callbacks are applied as they come: the stream holds seconds of them, not minutes.
    assert max(r["stream length"] for r in report.redis) < 20 * 3 * 5
    assert report.flat, [v.line() for v in report.verdicts if not v.flat]
