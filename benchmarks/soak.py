"""A long day: a campaign paced at 20 calls/s for 30 minutes, every process read each minute.

    python benchmarks/soak.py                         # 30 minutes, a reading a minute
    python benchmarks/soak.py --minutes 3 --every 10  # a short run

One fleet as production runs it (the simulator, the receiver under uvicorn with 2
processes, 2 workers, beat), default settings but the pace (DIALER_ACCOUNT_CPS and
DIALER_NUMBER_CPS at ``--cps``), a campaign with the compose file's outcome mix
(answered 0.6, busy 0.2, no answer 0.2, so the default 600 s retry delay brings
retries in from the tenth minute on), calls that ring and talk for seconds, not
milliseconds, so a few hundred are up at once. Contacts enough that it never runs dry.

Every ``--every`` seconds, per process (its whole tree: uvicorn's parent and workers
together): RSS, open file descriptors, TCP connections to PostgreSQL and to Redis (read
from /proc: each process's socket inodes against /proc/net/tcp); for the database, the
connections pg_stat_activity shows on it; for Redis, ``used_memory``, the event stream's
length and the dial queue's; and the calls created in the interval.

Judged at the end: each series' median over the first third of the readings against its
median over the last third, within 10% (counts that small also within a slack of a
couple of units: a connection or two, a second's worth of stream entries, since a
reading is one instant). The simulator is the carrier's stand-in, not the dialer, and
keeps every call it made for ``/_sim/calls``: its memory is printed, not judged.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from benchmarks.harness import Bench, log, median, write_contacts  # noqa: E402
from benchmarks.machine import describe, load_average, rss_mb, tree  # noqa: E402

OUTCOMES = "answered=0.6,busy=0.2,no-answer=0.2"
# Ringing and talking as people do (a few seconds), so a few hundred calls are up at once
# and the hang-up and timeout paths run as they would.
SIM_FLAGS = ["--outcomes", OUTCOMES, "--answer-delay", "3", "--talk-time", "8",
             "--no-answer-delay", "10"]  # fmt: skip
# The carrier's stand-in: read, not judged.
NOT_JUDGED = {"simulator"}
TOLERANCE = 0.10


# ------------------------------------------------------------------ readings from /proc
def _tcp_peers(ports: set[int]) -> dict[int, int]:
    """{socket inode: remote port} of established TCP connections to ``ports``."""
    out: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] != "01":  # ESTABLISHED
                        continue
                    port = int(cols[2].rsplit(":", 1)[1], 16)
                    if port in ports:
                        out[int(cols[9])] = port
        except OSError:
            continue
    return out


def _fds(pid: int) -> list[str]:
    """Where each open descriptor of ``pid`` points (vanished ones skipped)."""
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return []
    out = []
    for name in names:
        try:
            out.append(os.readlink(f"{base}/{name}"))
        except OSError:
            continue
    return out


def read_process(root: int, peers: dict[int, int], pg_port: int, redis_port: int) -> dict:
    rss = files = pg = rd = 0.0
    for pid in tree(root):
        rss += rss_mb(pid)
        links = _fds(pid)
        files += len(links)
        for link in links:
            if link.startswith("socket:["):
                port = peers.get(int(link[8:-1]))
                pg += port == pg_port
                rd += port == redis_port
    return {"rss MB": rss, "open files": files, "pg conns": pg, "redis conns": rd}


# ------------------------------------------------------------------ judging
# Slack for series whose values are small counts, read at one instant.
SLACK = {"open files": 4, "pg conns": 2, "redis conns": 2}


@dataclass
class Verdict:
    name: str
    first: float
    last: float
    flat: bool

    slack: float = 0.0

    def line(self) -> str:
        change = (self.last - self.first) / self.first * 100 if self.first else 0.0
        mark = "flat" if self.flat else "GREW" if self.last > self.first else "FELL"
        if self.flat and abs(self.last - self.first) > TOLERANCE * abs(self.first):
            mark = f"flat (within {self.slack:g}, a count read at one instant)"
        return (
            f"  {self.name:<34} {self.first:>10.1f} -> {self.last:>10.1f} ({change:+5.1f}%) {mark}"
        )


def judge(name: str, values: list[float], slack: float = 0.0) -> Verdict:
    """First third's median against the last third's: within TOLERANCE, or ``slack``."""
    third = max(1, len(values) // 3)
    first, last = median(values[:third]), median(values[-third:])
    flat = abs(last - first) <= max(TOLERANCE * abs(first), slack)
    return Verdict(name, first, last, flat, slack)


# ------------------------------------------------------------------ the run
@dataclass
class Report:
    cps: float
    every: float
    database_url: str = ""
    processes: dict[str, list[dict]] = field(default_factory=dict)
    database: list[dict] = field(default_factory=list)
    redis: list[dict] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    informative: list[Verdict] = field(default_factory=list)

    @property
    def flat(self) -> bool:
        return all(v.flat for v in self.verdicts)

    def pace(self) -> float:
        """Calls created per second over the readings after the first."""
        later = self.calls[1:] or self.calls
        return sum(later) / (len(later) * self.every)


def _redis_reading(client, backlog: int) -> dict:
    return {
        "used_memory MB": int(client.info("memory")["used_memory"]) / 1e6,
        "stream length": backlog,
        "dial queue": int(client.llen("dialer.dial")),
    }


def _database_reading(bench: Bench, campaign_id: int) -> tuple[dict, int]:
    with bench.engine.connect() as conn:
        conns = conn.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        )
        created = conn.scalar(
            text("SELECT count(*) FROM attempt WHERE campaign_id = :c AND created_at IS NOT NULL"),
            {"c": campaign_id},
        )
    # One of those connections is this benchmark's own reading.
    return {"connections": int(conns or 0) - 1}, int(created or 0)


def run(workdir: Path | None, *, minutes: float, every: float, cps: float) -> Report:
    import redis

    env = {"DIALER_ACCOUNT_CPS": f"{cps:g}", "DIALER_NUMBER_CPS": f"{cps:g}"}
    report = Report(cps=cps, every=every)
    readings = max(3, round(minutes * 60 / every))
    with Bench("dialer_bench_soak", env=env, keep_logs=workdir) as bench:
        contacts = int(cps * readings * every * 1.1) + 1000
        path = write_contacts(bench.workdir / "soak.csv", contacts)
        campaign_id = bench.create_campaign(path, "--tag-field", "ref")
        bench.up(workers=2, simulator=SIM_FLAGS)
        roots = {name: proc.pid for name, proc in bench.fleet.procs.items()}
        roots["redis-server"] = bench.redis.proc.pid
        report.database_url = bench.db_url
        pg_port = make_url(bench.db_url).port or 5432
        client = redis.Redis.from_url(bench.redis.url)
        bench.fleet.cli("campaign", "start", str(campaign_id))
        log(f"{contacts:,} contacts at {cps:g} calls/s: {readings} readings, {every:g} s apart")
        before = 0
        started = time.monotonic()
        for n in range(1, readings + 1):
            time.sleep(max(0.0, started + n * every - time.monotonic()))
            peers = _tcp_peers({pg_port, bench.redis.port})
            for name, pid in roots.items():
                reading = read_process(pid, peers, pg_port, bench.redis.port)
                report.processes.setdefault(name, []).append(reading)
            db, created = _database_reading(bench, campaign_id)
            report.database.append(db)
            report.redis.append(_redis_reading(client, bench.stream_backlog()))
            report.calls.append(created - before)
            before = created
            log(_line(report, n))
        client.close()
    _judge(report)
    return report


def _judge(report: Report) -> None:
    events_per_second = report.cps * 3  # answer and hangup, or timeout and hangup, + slack
    for name, rows in report.processes.items():
        for key in ("rss MB", "open files", "pg conns", "redis conns"):
            if name in ("redis-server", *NOT_JUDGED) and key.endswith("conns"):
                continue
            verdict = judge(f"{name} {key}", [r[key] for r in rows], SLACK.get(key, 0.0))
            (report.informative if name in NOT_JUDGED else report.verdicts).append(verdict)
    report.verdicts.append(
        judge("postgres connections", [r["connections"] for r in report.database], 2)
    )
    for key, slack in (
        ("used_memory MB", 0.0),
        ("stream length", events_per_second),
        ("dial queue", report.cps * 2),
    ):
        report.verdicts.append(judge(f"redis {key}", [r[key] for r in report.redis], slack))


def _line(report: Report, n: int) -> str:
    """One reading, as the run prints it."""
    minute = n * report.every / 60
    parts = [f"{minute:6.1f} min  calls/s {report.calls[-1] / report.every:5.1f}"]
    for name, rows in report.processes.items():
        r = rows[-1]
        parts.append(
            f"{name} {r['rss MB']:.0f}MB/{r['open files']:.0f}fd"
            + (
                f"/pg{r['pg conns']:.0f}/rd{r['redis conns']:.0f}"
                if r["pg conns"] + r["redis conns"]
                else ""
            )
        )
    rd = report.redis[-1]
    parts.append(
        f"db conns {report.database[-1]['connections']}; redis {rd['used_memory MB']:.1f}MB "
        f"stream {rd['stream length']} dial queue {rd['dial queue']}"
    )
    return "  ".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--every", type=float, default=60.0, help="seconds between readings")
    p.add_argument("--cps", type=float, default=20.0)
    p.add_argument("--keep-logs", type=Path, help="leave the fleet's logs in this folder")
    args = p.parse_args()
    load_at_start = load_average()
    report = run(args.keep_logs, minutes=args.minutes, every=args.every, cps=args.cps)
    readings = len(report.calls)
    print(
        f"soak: {args.minutes:g} min at {args.cps:g} calls/s, {readings} readings "
        f"{args.every:g} s apart; achieved {report.pace():.2f} calls/s, "
        f"{sum(report.calls):,} calls"
    )
    print("judged (median of the first third -> median of the last third):")
    for v in report.verdicts:
        print(v.line())
    print("read, not judged (the carrier's stand-in):")
    for v in report.informative:
        print(v.line())
    print("all flat" if report.flat else "NOT FLAT: " + ", ".join(
        v.name for v in report.verdicts if not v.flat))  # fmt: skip
    print(describe(report.database_url, load_at_start))
    return 0 if report.flat else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
