"""Whole-machine CPU per call: the dialer beside a plain Celery design, in one run.

    python benchmarks/cost_per_call.py                      # 5,000 contacts at 50 calls/s
    python benchmarks/cost_per_call.py --cps 0              # unpaced
    python benchmarks/cost_per_call.py --contacts 1000 --only dialer

Issue 13, target 3: CPU per call counted over every process that works for a call,
beside a reference measured in the same run (a figure from one day means little on the
next). Two campaigns on the same N contacts, one after the other, each with its own
database, private Redis and simulator (the same flags: an outcome mix of answered, busy
and no-answer):

- the dialer, through its public commands (``dialer campaign create`` and ``campaign
  start``, default settings, ``--workers`` Celery workers with the thread pool, beat,
  the receiver with 2 processes), as benchmarks/throughput.py runs it, paced with the
  campaign's ``--cps``. By default it retries busy and unanswered contacts once
  (``--max-attempts 2 --retry-delay 5``), so it places more calls than the reference:
  the figures are per call created;
- the reference (benchmarks/reference): one Celery task per contact and per event, one
  ORM transaction per row, 2 workers with the thread pool, a WSGI receiver under uvicorn
  with 2 processes, paced by its launcher, which enqueues the dials at ``--cps`` (one
  producer for the fleet; why not Celery's ``rate_limit``: see its docstring).

From just before the launch (``campaign start``, or the reference's enqueueing) until
every call has ended and every callback has been applied, /proc is sampled every 0.2 s
for the CPU of: the workers, the receiver (the supervisor and its processes), beat, the
launch command, Redis, and PostgreSQL, in two classes:

- ``pg backends``: the backends connected to the run's database (their process title
  names it), and its share of the backends that lived between two samples (their CPU
  is in the postmaster's reaped-children time; shared out by the sessions each
  database opened meanwhile, from pg_stat_database);
- ``pg shared``: the cluster's own processes (postmaster, WAL writer, checkpointer,
  background writer), charged in proportion to the run's share of all backends' CPU:
  all of it on a machine of its own, about its part on a shared one.

Other databases' backends, the simulator and this script (its own backend included)
are left out. On a busy machine other people's work still inflates ``pg shared``
somewhat (the total is also printed without it), and every CPU second costs more:
read the figures with the load average. The fleet's idle cost (ticks, polling) is
measured for ``--idle`` seconds before each launch and shown as what it would have
cost over the run's wall time.

Set-up (the campaign's import, the reference's table) is not measured; after it both
databases are ANALYZEd, as autovacuum, which is off on the benchmark machine's cluster,
would have done (``--no-analyze`` to skip). The default pace, 50 calls/s, is one the
reference sustains on 2 cores (20-30 ms of CPU per call, 1-1.5 cores at 50/s); at a
pace it cannot hold, its figure would be measured at saturation instead.

It prints, per design, CPU ms per call by process class and in total, calls, wall time
and the achieved rate, the database's commits and rows read and written per call (from
pg_stat_user_tables, this script's own reads taken out), Redis commands per call, and
the ratio reference / dialer; then the machine and the load average at start and end.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (  # noqa: E402
    FROM,
    Bench,
    code_env,
    database_url,
    log,
    write_contacts,
)
from benchmarks.machine import _TICK, _stat, describe, load_average, tree  # noqa: E402
from dialer.dev.fleet import (  # noqa: E402
    Fleet,
    RedisServer,
    free_port,
    fresh_database,
    wait_for_port,
)

DIALER_DB = "dialer_bench_ref_dialer"
REFERENCE_DB = "dialer_bench_ref_plain"
SIM_FLAGS = [
    "--answer-delay", "0.5", "--talk-time", "1", "--no-answer-delay", "2",
    "--outcomes", "answered=0.7,busy=0.15,no-answer=0.15",
]  # fmt: skip
CLASSES = ("workers", "receiver", "beat", "launcher", "pg backends", "pg shared", "redis")


# ---------------------------------------------------------------------- /proc sampling


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").split()
    except OSError:
        return []


def _ticks(fields: list[str]) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds from a /proc stat line."""
    own = (int(fields[11]) + int(fields[12])) / _TICK
    return own, (int(fields[13]) + int(fields[14])) / _TICK


@dataclass
class _Seen:
    cls: str  # a process class, or one of PostgreSQL's kinds (_OURS, _OTHER, _BACKGROUND)
    first: float  # CPU s at the first sample it was in (0.0 if born after the start)
    last: float
    new: bool  # born after the start
    session: bool = False  # a PostgreSQL client backend


_OURS, _OTHER, _BACKGROUND = "pg: this database's", "pg: others'", "pg: background"


@dataclass
class Sampler:
    """CPU seconds per process class from /proc, sampled on a thread until stopped.

    ``roots``: class -> pids whose process trees belong to it. A process that exits
    counts up to its last sample. PostgreSQL's processes are told apart by their title:
    backends of ``database`` (ours), other backends and the ``exclude`` pids (this
    script's connection), and the cluster's background processes (the postmaster, WAL
    writer, checkpointer, ...). A backend that exits is added to the postmaster's
    reaped-children time with its whole life; what that time grew by, less the exited
    backends already counted, is the CPU of backends never sampled (those that lived
    less than ``interval``) and of the last moments of the others: the "residual".
    :meth:`attributed` shares the residual and the background out (see there).
    """

    roots: dict[str, list[int]]
    database: str
    exclude: set[int] = field(default_factory=set)
    interval: float = 0.2

    def __post_init__(self) -> None:
        self.seen: dict[int, _Seen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _classify_postgres(self, pid: int, argv: list[str], postmaster: bool) -> tuple[str, bool]:
        # A backend's title is "postgres: CLUSTER: USER DATABASE HOST(PORT) STATE".
        session = any(a.endswith(")") and "(" in a for a in argv) or "[local]" in argv
        if pid in self.exclude:
            return _OTHER, session
        if postmaster:
            return _BACKGROUND, False
        if self.database in argv:
            return _OURS, session
        if session or "parallel" in argv:
            return _OTHER, session
        return _BACKGROUND, False

    def _sample(self, first: bool) -> None:
        pids: dict[int, tuple[str, bool]] = {}
        for cls, roots in self.roots.items():
            for root in roots:
                for pid in tree(root):
                    pids[pid] = (cls, False)
        postgres: list[int] = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() != "postgres":
                        continue
            except OSError:
                continue
            postgres.append(int(entry))
        postgres_set = set(postgres)
        reaped = 0.0
        for pid in postgres:
            fields = _stat(pid)
            if fields is None:
                continue
            postmaster = int(fields[1]) not in postgres_set
            if postmaster:
                reaped += _ticks(fields)[1]
            pids[pid] = self._classify_postgres(pid, _cmdline(pid), postmaster)
        alive = set()
        for pid, (cls, session) in pids.items():
            fields = _stat(pid)
            if fields is None:
                continue
            alive.add(pid)
            cpu = _ticks(fields)[0]
            seen = self.seen.get(pid)
            if seen is None:
                self.seen[pid] = _Seen(cls, cpu if first else 0.0, cpu, not first, session)
            else:
                seen.last, seen.cls, seen.session = cpu, cls, seen.session or session
        self._alive = alive
        if first:
            self._reaped0 = reaped
        self._reaped1 = reaped

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(first=False)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._sample(first=True)
        self._thread.start()

    def stop(self) -> float:
        """Stop sampling; the wall seconds since start."""
        self._stop.set()
        self._thread.join()
        self._sample(first=False)
        return time.monotonic() - self._t0

    def attributed(self, sessions: int = 0, sessions_all: int = 0) -> tuple[dict[str, float], str]:
        """(CPU seconds by class, a line on PostgreSQL's share), given how many sessions
        were opened meanwhile on this database (``sessions``) and on all of them.

        ``pg backends``: this database's backends, plus the residual times the share of
        the cluster's unsampled sessions that were this database's. ``pg shared``: the
        background processes times this database's share of all backends' CPU (the
        residual counted as others'), so that on a machine of its own the run is
        charged the whole cluster, and on a shared one about its part.
        """
        used = dict.fromkeys(CLASSES, 0.0)
        raw = dict.fromkeys((_OURS, _OTHER, _BACKGROUND), 0.0)
        dead = 0.0
        seen_sessions = seen_all = 0
        for pid, s in self.seen.items():
            bucket = raw if s.cls in raw else used
            bucket[s.cls] += s.last - s.first
            if s.cls in raw and pid not in self._alive:
                dead += s.last  # in the reaped time with its whole life
            if s.new and s.session:
                seen_all += 1
                seen_sessions += s.cls == _OURS
        residual = max(0.0, self._reaped1 - self._reaped0 - dead)
        unseen = max(0, sessions - seen_sessions)
        unseen_all = max(unseen, sessions_all - seen_all)
        ours = raw[_OURS] + (residual * unseen / unseen_all if unseen_all else 0.0)
        backends = raw[_OURS] + raw[_OTHER] + residual
        share = ours / backends if backends > 0 else 0.0
        used["pg backends"] = ours
        used["pg shared"] = raw[_BACKGROUND] * share
        note = (
            f"postgres CPU over the run, the whole cluster: this database's backends "
            f"{raw[_OURS]:.2f} s, other backends {raw[_OTHER]:.2f} s, exited unsampled "
            f"{residual:.2f} s ({unseen} of {unseen_all} such sessions this database's), "
            f"background {raw[_BACKGROUND]:.2f} s, of which {100 * share:.0f}% charged"
        )
        return used, note


# ---------------------------------------------------------------------- the database


class Driver:
    """This script's one connection to a run's database: its backend is left out of the
    CPU, and the rows its own queries read are left out of the rows per call."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_size=1, max_overflow=0)
        self.rows_read = 0
        self.transactions = 0
        self.pid = int(self.query("SELECT pg_backend_pid()")[0][0])

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            rows = list(conn.execute(text(sql), params).all())
            self.rows_read += int(
                conn.scalar(
                    text(
                        "SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0) "
                        "FROM pg_stat_xact_user_tables"
                    )
                )
            )
        self.transactions += 1
        return rows

    def stats(self) -> dict[str, int]:
        """The database's counters (as flushed so far; backends flush within ~1 s)."""
        (commits,) = self.query(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )[0]
        out = {"commits": int(commits)}
        for table, scans, seq, fetched, ins, upd, dele in self.query(
            "SELECT relname, seq_scan, seq_tup_read, coalesce(idx_tup_fetch, 0), n_tup_ins,"
            " n_tup_upd, n_tup_del FROM pg_stat_user_tables"
        ):
            out[f"seq scans {table}"] = int(scans)
            out[f"seq read {table}"] = int(seq)
            out[f"index read {table}"] = int(fetched)
            out[f"written {table}"] = int(ins + upd + dele)
        # Taken out: what this script read and committed up to now.
        out["driver rows"], out["driver commits"] = self.rows_read, self.transactions
        return out

    def sessions(self) -> dict[str, int]:
        """Connections opened so far, by database, the whole cluster's."""
        rows = self.query(
            "SELECT datname, sessions FROM pg_stat_database WHERE datname IS NOT NULL"
        )
        return {name: int(n) for name, n in rows}

    def analyze(self) -> None:
        """Statistics for the planner, as autovacuum (off on the benchmark machine's
        cluster) would have gathered after the set-up."""
        with self.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()

    def close(self) -> None:
        self.engine.dispose()


class RedisCounter:
    """Commands the Redis server has run, less this script's own."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.own: collections.Counter[str] = collections.Counter()

    def call(self, command: str, *args: Any) -> Any:
        self.own[command.lower()] += 1
        return self.client.execute_command(command, *args)

    def commands(self) -> collections.Counter[str]:
        stats = self.client.info("commandstats")
        self.own["info"] += 1
        done = collections.Counter(
            {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
        )
        return done - self.own


# ---------------------------------------------------------------------- one run


@dataclass
class Result:
    name: str
    calls: int = 0
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    rate: float = 0.0
    load: tuple[str, str] = ("", "")
    db: dict[str, float] = field(default_factory=dict)
    redis: int = 0
    idle: dict[str, float] = field(default_factory=dict)  # cores, by class, before launch
    notes: list[str] = field(default_factory=list)


def idle_cores(
    roots: dict[str, list[int]], database: str, exclude: int, seconds: float
) -> dict[str, float]:
    """What the fleet costs doing nothing (cores by class), over ``seconds`` before the
    launch; the start-up's database counters are flushed meanwhile."""
    sampler = Sampler(roots, database, {exclude})
    sampler.start()
    time.sleep(seconds)
    wall = sampler.stop()
    return {cls: cpu / wall for cls, cpu in sampler.attributed()[0].items()}


class Launcher:
    """The command that starts a campaign, run beside the sampling; its CPU is read from
    this process's reaped-children rusage, as it is the only child reaped meanwhile."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self._before = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._argv = argv
        self._proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def running(self) -> bool:
        return self._proc.poll() is None

    def cpu(self) -> float:
        """Wait for it to end; its CPU seconds."""
        _, err = self._proc.communicate(timeout=600)
        if self._proc.returncode != 0:
            raise RuntimeError(f"{' '.join(self._argv[2:])} exited {self._proc.returncode}: {err}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime - self._before.ru_utime) + (after.ru_stime - self._before.ru_stime)


def simulator_figures(sim_url: str, result: Result) -> None:
    calls = requests.get(sim_url + "/_sim/calls", timeout=60).json()
    created = sorted(c["created_at"] for c in calls)
    if len(created) > 1:
        result.rate = (len(created) - 1) / (created[-1] - created[0])
    outcomes = collections.Counter(c["outcome"] for c in calls)
    refused = sum(c["refused"] for c in calls)
    undelivered = sum(len(c["undelivered"]) for c in calls)
    result.notes.append(
        f"carrier: {len(calls):,} calls ({', '.join(f'{k} {v:,}' for k, v in outcomes.items())}),"
        f" {sum(len(c['events']) for c in calls):,} callbacks accepted, {refused} refused,"
        f" {undelivered} undelivered"
    )


def finish(
    result: Result, sampler: Sampler, launcher: Launcher, driver: Driver, sessions0: dict[str, int]
) -> None:
    result.wall = sampler.stop()
    result.load = (result.load[0], load_average())
    launched = launcher.cpu()
    time.sleep(1.5)  # backends flush their counters within a second of going idle
    sessions = driver.sessions()
    opened = {db: n - sessions0.get(db, 0) for db, n in sessions.items()}
    result.cpu, note = sampler.attributed(opened.get(sampler.database, 0), sum(opened.values()))
    result.cpu["launcher"] += launched
    result.notes.append(note)


def db_figures(driver: Driver, before: dict[str, int], result: Result) -> None:
    after = driver.stats()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    calls = max(result.calls, 1)
    read = sum(v for k, v in delta.items() if k.startswith(("seq read ", "index read ")))
    written = sum(v for k, v in delta.items() if k.startswith("written "))
    result.db = {
        "commits": (delta["commits"] - delta["driver commits"]) / calls,
        "rows read": (read - delta["driver rows"]) / calls,
        "rows written": written / calls,
    }
    tables = sorted(
        {k.rsplit(" ", 1)[1] for k in delta if k.startswith("seq read ")},
        key=lambda t: -(delta[f"seq read {t}"] + delta[f"index read {t}"]),
    )
    result.notes.append(
        "rows read per call by table, sequential (scans) + by index; this script's own "
        "reads are taken from the total only: "
        + "; ".join(
            f"{t} {delta[f'seq read {t}'] / calls:.1f} ({delta[f'seq scans {t}'] / calls:.2f})"
            f" + {delta[f'index read {t}'] / calls:.1f}"
            for t in tables
            if delta[f"seq read {t}"] or delta[f"index read {t}"]
        )
    )


def run_dialer(args: argparse.Namespace, contacts: Path, workdir: Path) -> Result:
    result = Result("dialer")
    with Bench(DIALER_DB, keep_logs=args.keep_logs and args.keep_logs / "dialer") as bench:
        pace = ["--cps", f"{args.cps:g}"] if args.cps else []
        campaign = bench.create_campaign(
            contacts, "--max-attempts", str(args.max_attempts),
            "--retry-delay", str(args.retry_delay), *pace,
        )  # fmt: skip
        bench.up(workers=args.workers, simulator=SIM_FLAGS)
        driver = Driver(bench.db_url)
        broker = RedisCounter(bench.redis.url)
        roots = {
            "workers": [bench.pid(n) for n in bench.worker_names()],
            "receiver": [bench.pid("receiver")],
            "beat": [bench.pid("beat")],
            "redis": [bench.redis.proc.pid],  # type: ignore[union-attr]
        }
        database = make_url(bench.db_url).database or ""
        if args.analyze:
            driver.analyze()
        result.idle = idle_cores(roots, database, driver.pid, args.idle)
        sampler = Sampler(roots, database, {driver.pid})
        stats0, redis0, sessions0 = driver.stats(), broker.commands(), driver.sessions()
        result.load = (load_average(), "")
        log(f"dialer: starting campaign {campaign} ({args.contacts:,} contacts)")
        sampler.start()
        launcher = Launcher(
            [sys.executable, "-m", "dialer.cli", "campaign", "start", str(campaign)],
            bench.fleet.env,
            bench.fleet.workdir,
        )
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            state = driver.query("SELECT state FROM campaign WHERE id = :c", c=campaign)[0][0]
            if state != "completed" or broker.call("XLEN", "dialer:events"):
                continue
            live, created = driver.query(
                "SELECT count(*) FILTER (WHERE status NOT IN ('ended', 'failed', 'withdrawn')),"
                " count(call_id) FROM attempt WHERE campaign_id = :c",
                c=campaign,
            )[0]
            if live == 0:
                result.calls = int(created)
                break
        else:
            result.notes.append("TIMED OUT before every call ended")
        finish(result, sampler, launcher, driver, sessions0)
        result.redis = sum((broker.commands() - redis0).values())
        db_figures(driver, stats0, result)
        statuses = driver.query(
            "SELECT status, count(*) FROM contact WHERE campaign_id = :c GROUP BY status",
            c=campaign,
        )
        result.notes.append(f"contacts by status: {dict(sorted((s, n) for s, n in statuses))}")
        simulator_figures(bench.fleet.sim_url, result)
        driver.close()
    return result


def run_reference(args: argparse.Namespace, contacts: Path, workdir: Path) -> Result:
    result = Result("reference")
    url = database_url(REFERENCE_DB)
    with contextlib.ExitStack() as stack:
        fresh_database(url)
        server = RedisServer(free_port())
        server.start()
        stack.callback(server.stop)
        logs = args.keep_logs / "reference" if args.keep_logs else workdir / "reference"
        env = {
            "REF_DATABASE_URL": url,
            "REF_BROKER_URL": server.url,
            "REF_CALLBACK_SECRET": "reference-callback-secret",
            "REF_FROM": FROM,
            "CATAPULT_USER_ID": "u-sim",
            "CATAPULT_API_TOKEN": "sim-token",
            "CATAPULT_API_SECRET": "sim-secret",
            **code_env(),
        }
        fleet = Fleet(logs, env)
        stack.callback(fleet.close)
        fleet.start_simulator(*SIM_FLAGS)
        port = free_port()
        fleet._spawn("receiver", [
            sys.executable, "-m", "uvicorn", "--interface", "wsgi", "--workers", "2",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            "--log-level", "warning", "benchmarks.reference.receiver:app",
        ])  # fmt: skip
        wait_for_port(port, timeout=30)
        fleet.env["REF_CALLBACK_URL"] = f"http://127.0.0.1:{port}"
        workers = [f"w{n}" for n in range(args.workers)]
        for name in workers:
            fleet._spawn(name, [
                sys.executable, "-m", "celery", "-A", "benchmarks.reference.app", "worker",
                "--pool", "threads", f"--concurrency={args.ref_threads}",
                "-Q", "ref.events,ref.dial", "-n", f"{name}@%h", "--loglevel=WARNING",
                "--without-gossip", "--without-mingle",
            ])  # fmt: skip
        loaded = subprocess.run(
            [sys.executable, "-m", "benchmarks.reference", "load", str(contacts)],
            env=fleet.env, cwd=logs, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if loaded.returncode != 0:
            raise RuntimeError(f"reference load failed: {loaded.stderr}")
        wait_for_workers(server.url, workers, fleet)
        driver = Driver(url)
        stack.callback(driver.close)
        broker = RedisCounter(server.url)
        roots = {
            "workers": [fleet.procs[name].pid for name in workers],
            "receiver": [fleet.procs["receiver"].pid],
            "redis": [server.proc.pid],  # type: ignore[union-attr]
        }
        if args.analyze:
            driver.analyze()
        result.idle = idle_cores(roots, REFERENCE_DB, driver.pid, args.idle)
        sampler = Sampler(roots, REFERENCE_DB, {driver.pid})
        stats0, redis0, sessions0 = driver.stats(), broker.commands(), driver.sessions()
        result.load = (load_average(), "")
        log(f"reference: launching {args.contacts:,} dials")
        sampler.start()
        launcher = Launcher(
            [sys.executable, "-m", "benchmarks.reference", "launch", "--cps", f"{args.cps:g}"],
            fleet.env,
            logs,
        )
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            # Nothing queued or held by a worker (late acks: a message stays in
            # "unacked" until its task has run), then the table.
            if (
                launcher.running()
                or broker.call("LLEN", "ref.dial")
                or broker.call("LLEN", "ref.events")
                or broker.call("HLEN", "unacked")
            ):
                continue
            done, created = driver.query(
                "SELECT count(*) FILTER (WHERE ended_at IS NOT NULL OR status = 'failed'),"
                " count(call_id) FROM ref_contact"
            )[0]
            if done == args.contacts:
                result.calls = int(created)
                break
        else:
            result.notes.append("TIMED OUT before every call ended")
        finish(result, sampler, launcher, driver, sessions0)
        result.redis = sum((broker.commands() - redis0).values())
        db_figures(driver, stats0, result)
        statuses = driver.query("SELECT status, count(*) FROM ref_contact GROUP BY status")
        unanswered, lost = driver.query(
            "SELECT count(*) FILTER (WHERE cause = 'NORMAL_CLEARING' AND answered_at IS NULL),"
            " count(*) FILTER (WHERE ended_at IS NOT NULL AND status <> 'ended')"
            " FROM ref_contact"
        )[0]
        result.notes.append(
            f"contacts by status: {dict(sorted((s, n) for s, n in statuses))}; "
            f"answered calls without their answer applied: {unanswered}; "
            f"ended calls with another status: {lost}"
        )
        simulator_figures(fleet.sim_url, result)
    return result


def wait_for_workers(broker_url: str, names: list[str], fleet: Fleet) -> None:
    """Until every reference worker answers a ping (they log at WARNING: no "ready.")."""
    from celery import Celery

    control = Celery(broker=broker_url).control
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        replies = control.ping(timeout=1.0) or []
        answered = {name.split("@")[0] for reply in replies for name in reply}
        if set(names) <= answered:
            return
    raise TimeoutError(f"reference workers not ready:\n{fleet.logs()}")


# ---------------------------------------------------------------------- report


def report(results: list[Result], args: argparse.Namespace) -> None:
    paced = f"paced at {args.cps:g} calls/s" if args.cps else "unpaced"
    print(f"cost per call: {args.contacts:,} contacts, {paced}, simulator {' '.join(SIM_FLAGS)}")
    print(
        f"dialer: {args.workers} workers (thread pool, default threads), beat, receiver "
        f"(2 processes); --max-attempts {args.max_attempts} --retry-delay {args.retry_delay}"
    )
    print(
        f"reference: {args.workers} workers (thread pool x {args.ref_threads}), receiver "
        f"(uvicorn --interface wsgi, 2 processes){', paced by its launcher' if args.cps else ''}"
        "; no retries"
    )
    for r in results:
        print(
            f"\n{r.name}: {r.calls:,} calls created, {r.wall:.1f} s from launch to the last "
            f"callback applied, creates at {r.rate:.1f}/s; load average {r.load[0]} -> {r.load[1]}"
        )
        idle = ", ".join(f"{k} {v:.3f}" for k, v in r.idle.items() if v >= 0.0005)
        print(f"  idle fleet before the launch: {sum(r.idle.values()):.3f} cores ({idle})")
        for note in r.notes:
            print(f"  {note}")
    names = [r.name for r in results]
    width = max(12, *(len(n) + 2 for n in names))
    header = f"\n{'CPU ms per call':<22}" + "".join(f"{n:>{width}}" for n in names)
    if len(results) == 2:
        header += f"{'ratio':>10}"
    print(header)

    def row(label: str, values: list[float], fmt: str = "{:.2f}") -> None:
        line = f"{label:<22}" + "".join(f"{fmt.format(v):>{width}}" for v in values)
        if len(values) == 2 and values[0] > 0:
            line += f"{values[1] / values[0]:>9.1f}x"
        print(line)

    for cls in CLASSES:
        row(f"  {cls}", [1000 * r.cpu.get(cls, 0.0) / max(r.calls, 1) for r in results])
    totals = [1000 * sum(r.cpu.values()) / max(r.calls, 1) for r in results]
    row("  total", totals)
    row(
        "  total, pg shared out",
        [
            t - 1000 * r.cpu.get("pg shared", 0.0) / max(r.calls, 1)
            for t, r in zip(totals, results, strict=True)
        ],
    )
    row(
        "  idle x wall",
        [1000 * sum(r.idle.values()) * r.wall / max(r.calls, 1) for r in results],
    )
    row("cores busy (mean)", [sum(r.cpu.values()) / max(r.wall, 1e-9) for r in results])
    print("per call")
    for key in ("commits", "rows read", "rows written"):
        row(f"  {key}", [r.db.get(key, 0.0) for r in results], "{:.1f}")
    row("  redis commands", [r.redis / max(r.calls, 1) for r in results], "{:.1f}")
    if len(results) == 2:
        print(
            f"\nreference / dialer, whole-machine CPU per call: "
            f"{totals[1] / max(totals[0], 1e-9):.1f}x (goal: >= 10x)"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contacts", type=int, default=5000)
    p.add_argument("--cps", type=float, default=50.0, help="the pace of both (calls/s); 0: unpaced")
    p.add_argument("--workers", type=int, default=2, help="worker processes, each design")
    p.add_argument("--max-attempts", type=int, default=2, help="the dialer's campaign")
    p.add_argument("--retry-delay", type=int, default=5, help="the dialer's campaign (s)")
    p.add_argument("--ref-threads", type=int, default=8, help="threads per reference worker")
    p.add_argument("--only", choices=("dialer", "reference"))
    p.add_argument("--reference-first", action="store_true")
    p.add_argument("--timeout", type=float, default=900, help="longest run (s)")
    p.add_argument(
        "--idle", type=float, default=5.0, help="seconds the idle fleet is measured before launch"
    )
    p.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="leave the planner without statistics after the set-up (no ANALYZE)",
    )
    p.add_argument("--keep-logs", type=Path, metavar="DIR")
    args = p.parse_args()
    # Killed, it still stops the processes it started (the fleets' exit handlers run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_at_start = load_average()
    runs = {"dialer": run_dialer, "reference": run_reference}
    order = ["reference", "dialer"] if args.reference_first else ["dialer", "reference"]
    if args.only:
        order = [args.only]
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="dialer-cost-") as tmp:
        contacts = write_contacts(Path(tmp) / "contacts.csv", args.contacts)
        for name in order:
            results[name] = runs[name](args, contacts, Path(tmp))
    report([results[n] for n in ("dialer", "reference") if n in results], args)
    print()
    print(describe(database_url(DIALER_DB), load_at_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
