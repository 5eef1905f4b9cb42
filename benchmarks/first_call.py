"""From ``start`` to the carrier creating the first call.

    python benchmarks/first_call.py                # a 10,000-contact campaign
    python benchmarks/first_call.py --million      # the million-contact one instead
    python benchmarks/first_call.py --cli-only     # only `dialer campaign start`

The fleet (simulator, receiver, 2 workers, beat) is up and idle, as in production: the
ticks have warmed the workers. The clock starts when ``api.start(ID)`` is called in this
process and stops at the ``created_at`` the simulator records for the campaign's first
call (one machine, one clock). Then the campaign is paused and ``api.resume(ID)`` timed
the same way, ``--repeat`` times.

``dialer campaign start`` is timed as a subprocess, ``--repeat`` times, each on a fresh
1,000-contact campaign with the fleet idle: from just before the process is started to
the simulator's ``created_at`` of its first call, which is what a user typing it waits
for (issue 13: < 500 ms). Its breakdown reads times the code records anyway: the
campaign's ``started_at`` (the command's transition), the first attempt's ``queued_at``
(released) and ``sent_at`` (claimed by a worker), and when the command exited.

``--cli-also DIR`` times the command of another checkout too (the code before a change),
each of its runs in turn with this one's, on this checkout's fleet: on a machine others
share, runs minutes apart see different loads, runs in turn the same. The other command
must work with this checkout's schema and workers (the code before issue 13's change
does: it releases and publishes the dials itself).

The database is ``dialer_bench_first``, or ``<name>_first`` when
``DIALER_BENCH_DATABASE_URL`` names a database of its own, so two people benchmarking on
one machine do not drop each other's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (  # noqa: E402
    DEFAULT_DB,
    MILLION_DB,
    Bench,
    log,
    median,
    million_campaign,
    write_contacts,
)
from benchmarks.machine import describe, load_average  # noqa: E402

SIM_FLAGS = ["--answer-delay", "0.05", "--talk-time", "0.05"]


def first_create(sim: str, since: float, timeout: float = 30.0) -> float:
    """Seconds from ``since`` (epoch) to the first call the simulator created after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if requests.get(sim + "/_sim/stats", timeout=10).json()["created"]:
            calls = requests.get(sim + "/_sim/calls", timeout=30).json()
            return min(c["created_at"] for c in calls if c["created_at"] >= since) - since
        time.sleep(0.002)
    raise TimeoutError(f"no call created within {timeout} s")


def backlog(bench: Bench) -> int:
    """Messages waiting in the broker's queues (and delivered, not yet acknowledged)."""
    import redis

    r = redis.Redis.from_url(bench.redis.url)
    return int(r.llen("dialer.dial")) + int(r.hlen("unacked"))


def wait_idle(bench: Bench, timeout: float = 90.0) -> float:
    """Wait until the broker holds no dial or event message; seconds waited."""
    started = time.monotonic()
    while backlog(bench) and time.monotonic() - started < timeout:
        time.sleep(0.2)
    time.sleep(1.0)  # calls in flight end, the tick runs once more
    return time.monotonic() - started


def measure(bench: Bench, campaign_id: int, repeat: int) -> dict[str, list[float]]:
    """Start once, then pause and resume on an idle fleet; and once resume at once after a
    pause, with the paused campaign's released dials still queued in the broker."""
    from dialer import api

    sim = bench.fleet.sim_url
    out: dict[str, list[float]] = {"start": [], "resume": [], "resume, backlog queued": []}
    requests.post(sim + "/_sim/reset", timeout=10)
    t0 = time.time()
    api.start(campaign_id)
    out["api.start() itself returning"] = [time.time() - t0]
    out["start"].append(first_create(sim, t0))
    for _ in range(repeat):
        time.sleep(2.0)  # running: the unpaced tick releases ahead of the workers
        api.pause(campaign_id)
        waited = wait_idle(bench)
        log(f"broker drained in {waited:.1f} s after the pause")
        requests.post(sim + "/_sim/reset", timeout=10)
        t0 = time.time()
        api.resume(campaign_id)
        out["resume"].append(first_create(sim, t0))
    time.sleep(2.0)
    api.pause(campaign_id)
    queued = backlog(bench)
    requests.post(sim + "/_sim/reset", timeout=10)
    t0 = time.time()
    api.resume(campaign_id)
    out["resume, backlog queued"].append(first_create(sim, t0, timeout=120))
    log(f"{queued} messages were queued at that resume")
    api.pause(campaign_id)
    wait_idle(bench)
    return out


def db_name() -> str:
    """``dialer_bench_first``, or ``<name>_first`` for a DIALER_BENCH_DATABASE_URL naming
    its own database (the harness takes only the server from it)."""
    from sqlalchemy.engine import make_url

    url = os.environ.get("DIALER_BENCH_DATABASE_URL")
    name = make_url(url).database if url else None
    default = make_url(DEFAULT_DB + "dialer_bench").database
    return f"{name}_first" if name and name != default else "dialer_bench_first"


def cli_start(bench: Bench, campaign_id: int, code: str | None = None) -> dict[str, float]:
    """One ``dialer campaign start`` as a subprocess (of the checkout ``code``, if given):
    seconds from just before the process is started to the first create, and to each
    step on the way."""
    from sqlalchemy import text

    sim = bench.fleet.sim_url
    env = {**bench.fleet.env, "PYTHONPATH": code} if code else bench.fleet.env
    requests.post(sim + "/_sim/reset", timeout=10)
    t0 = time.time()
    subprocess.run(
        [sys.executable, "-m", "dialer.cli", "campaign", "start", str(campaign_id)],
        env=env,
        cwd=bench.fleet.workdir,
        capture_output=True,
        check=True,
        timeout=60,
    )
    returned = time.time() - t0
    first = first_create(sim, t0)
    with bench.engine.connect() as conn:
        started = conn.scalar(
            text("SELECT started_at FROM campaign WHERE id = :c"), {"c": campaign_id}
        )
        queued, sent = conn.execute(
            text("SELECT min(queued_at), min(sent_at) FROM attempt WHERE campaign_id = :c"),
            {"c": campaign_id},
        ).one()
    return {
        "first create": first,
        "transition (started_at)": started.timestamp() - t0,
        "first attempt queued": queued.timestamp() - t0,
        "first attempt claimed (sent_at)": sent.timestamp() - t0,
        "command exited": returned,
    }


def cli_starts(
    bench: Bench, repeat: int, others: list[str]
) -> dict[str | None, list[dict[str, float]]]:
    """``repeat`` runs of ``dialer campaign start``, each on a new 1,000-contact campaign
    with the fleet idle (the previous one paused and its work drained); with ``others``,
    each run is followed by one of each other checkout's command, in turn."""
    from dialer import api

    path = write_contacts(bench.workdir / "cli.csv", 1000, area=312)
    out: dict[str | None, list[dict[str, float]]] = {None: [], **{o: [] for o in others}}
    for _ in range(repeat):
        for code in out:
            campaign_id = bench.create_campaign(path)
            wait_idle(bench)
            out[code].append(cli_start(bench, campaign_id, code))
            api.pause(campaign_id)
    wait_idle(bench)
    return out


def cli_lines(size_name: str, runs: list[dict[str, float]], code: str | None = None) -> list[str]:
    firsts = [r["first create"] for r in runs]
    whose = f" of {code}" if code else ""
    lines = [
        f"{size_name}: `dialer campaign start`{whose} (subprocess, 1,000-contact campaigns, "
        f"idle fleet) -> first create: median {1000 * median(firsts):.0f} ms, max "
        f"{1000 * max(firsts):.0f} ms ({len(runs)} runs: "
        + ", ".join(f"{1000 * f:.0f}" for f in firsts)
        + ")",
        "  from just before the process started, medians:",
    ]
    for step in runs[0]:
        lines.append(f"    {step:<32} {1000 * median([r[step] for r in runs]):6.0f} ms")
    return lines


def run(size_name: str, bench: Bench, campaign_id: int, args: argparse.Namespace) -> list[str]:
    os.environ.update({k: v for k, v in bench.fleet.env.items() if k.startswith(("DIALER", "CAT"))})
    from dialer import settings
    from dialer.worker import clients, tasks

    # The Celery app and its tasks are imported before the clock starts, as a long-running
    # admin script has them; the cold case is the CLI command timed below.
    del tasks
    settings.override(None)
    clients.reset_clients()
    bench.up(workers=2, simulator=SIM_FLAGS)
    time.sleep(3)  # idle: beat ticks, the workers connect
    lines = []
    if not args.cli_only:
        times = measure(bench, campaign_id, args.repeat)
        lines = [
            f"{size_name}: {what}{'' if 'itself' in what else ' -> first create'}: median "
            f"{1000 * median(v):.0f} ms, max {1000 * max(v):.0f} ms "
            f"({len(v)} run{'s' if len(v) > 1 else ''})"
            for what, v in times.items()
        ]
    # What a user typing the command waits for.
    for code, runs in cli_starts(bench, args.repeat, args.cli_also).items():
        lines += cli_lines(size_name, runs, code)
    return lines


def pace(args: argparse.Namespace) -> dict[str, str]:
    return {"DIALER_ACCOUNT_CPS": str(args.cps), "DIALER_NUMBER_CPS": str(args.cps)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contacts", type=int, default=10_000)
    p.add_argument("--million", action="store_true", help="the million-contact campaign instead")
    p.add_argument("--repeat", type=int, default=5, help="resumes, and CLI starts (default 5)")
    p.add_argument(
        "--cli-only", action="store_true", help="only `dialer campaign start` (no api.start)"
    )
    p.add_argument(
        "--cli-also",
        action="append",
        default=[],
        metavar="DIR",
        help="also time the command of the checkout in DIR (e.g. a worktree of the code "
        "before a change), its runs in turn with this one's, against this checkout's "
        "fleet: both see the same moments of a busy machine",
    )
    p.add_argument(
        "--cps",
        type=float,
        default=400,
        help="account and number rate (default 400, the throughput target): unpaced, the "
        "tick releases 2,000 a second whatever the workers send, and pausing a campaign "
        "with more than 65,535 attempts queued fails (see benchmarks/PROFILE.md)",
    )
    args = p.parse_args()
    load_at_start = load_average()
    # One size per process: the Celery app in this process binds to one broker.
    if args.million:
        _, million_id, _ = million_campaign()
        log("cloning the million-contact campaign")
        with Bench(db_name(), template=MILLION_DB, env=pace(args)) as bench:
            lines = run("1,000,000 contacts", bench, million_id, args)
            url = bench.db_url
    else:
        with Bench(db_name(), env=pace(args)) as bench:
            path = write_contacts(bench.workdir / "contacts.csv", args.contacts)
            campaign_id = bench.create_campaign(path, "--tag-field", "ref")
            lines = run(f"{args.contacts:,} contacts", bench, campaign_id, args)
            url = bench.db_url
    print(
        f"start to first call created (fleet up and idle: 2 workers, beat, receiver; "
        f"account paced at {args.cps:g} calls/s)"
    )
    for line in lines:
        print(line)
    print(describe(url, load_at_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
