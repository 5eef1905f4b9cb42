"""What the fleet benchmarks share: a private Redis, a fresh database, a fleet of real
processes, contact files, and readings of the database while a campaign runs.

Every benchmark that starts processes goes through :class:`Bench`, so they all run the
same commands production runs (``dialer simulator``, ``dialer receiver`` under uvicorn,
``celery -A dialer worker|beat``) with the same settings, only the scale differing.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dialer.dev.fleet import Fleet, RedisServer, free_port, fresh_database

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/"
# The million-contact campaign is imported once into this database and cloned (CREATE
# DATABASE ... TEMPLATE, a file copy) by the benchmarks that need one.
MILLION_DB = "dialer_bench_1m"
FROM = "+19195550000"
# Unpaced: the account and number rates are far above anything two cores can create.
UNPACED_CPS = "100000"
CALLBACK_SECRET = "bench-callback-secret"


def code_env() -> dict[str, str]:
    """PYTHONPATH for the fleet's processes: the dialer this benchmark imported first, so
    a checkout benchmarked beside another installed copy runs its own code throughout."""
    import dialer

    root = str(Path(dialer.__file__).resolve().parents[1])
    return {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def database_url(name: str) -> str:
    base = os.environ.get("DIALER_BENCH_DATABASE_URL", DEFAULT_DB + "dialer_bench")
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_contacts(path: Path, count: int, area: int = 212) -> Path:
    """``count`` distinct valid US numbers, one context column (``ref``)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phone", "ref"])
        for i in range(count):
            a = area + (i // 8_000_000) * 100
            w.writerow([f"+1{a}{200 + (i // 10_000) % 800:03d}{i % 10_000:04d}", f"r{i}"])
    return path


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Bench:
    """A private Redis, a fresh (or cloned) database and a fleet, all torn down at exit."""

    def __init__(
        self,
        db_name: str,
        *,
        template: str | None = None,
        env: dict[str, str] | None = None,
        keep_logs: Path | None = None,
    ) -> None:
        self.db_url = database_url(db_name)
        self.template = template
        self.extra_env = env or {}
        self.keep_logs = keep_logs
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Bench:
        if self.template:
            clone_database(database_url(self.template), self.db_url)
        else:
            fresh_database(self.db_url)
        self.redis = RedisServer(free_port())
        self.redis.start()
        self._stack.callback(self.redis.stop)
        if self.keep_logs:
            self.workdir = self.keep_logs
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(self._stack.enter_context(tempfile.TemporaryDirectory()))
        env = {
            "DIALER_DATABASE_URL": self.db_url,
            "DIALER_BROKER_URL": self.redis.url,
            "DIALER_REDIS_URL": self.redis.url,
            "CATAPULT_USER_ID": "u-sim",
            "CATAPULT_API_TOKEN": "sim-token",
            "CATAPULT_API_SECRET": "sim-secret",
            "DIALER_CALLBACK_SECRET": CALLBACK_SECRET,
            "DIALER_ACCOUNT_CPS": UNPACED_CPS,
            "DIALER_NUMBER_CPS": UNPACED_CPS,
            "DIALER_LOG_FORMAT": "text",
            **code_env(),
            **self.extra_env,
        }
        self.fleet = Fleet(self.workdir / "fleet", env)
        self._stack.callback(self.fleet.close)
        self.engine = create_engine(self.db_url, pool_size=2)
        self._stack.callback(self.engine.dispose)
        # A clone carries the template's schema, which may predate the code's: migrate
        # it too (a no-op when it is current).
        self.fleet.cli("db", "upgrade")
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None and exc[0] is not KeyboardInterrupt:
            with contextlib.suppress(Exception):
                log(self.fleet.logs(tail=30))
        self._stack.close()

    # ------------------------------------------------------------------ processes
    def up(
        self,
        *,
        workers: int = 2,
        threads: int | None = None,
        receiver_workers: int = 2,
        beat: bool = True,
        simulator: list[str] | None = None,
    ) -> None:
        if simulator is not None:
            self.fleet.start_simulator(*simulator)
        self.fleet.start_receiver(receiver_workers)
        for n in range(workers):
            self.fleet.start_worker(f"w{n}", concurrency=threads)
        if beat:
            self.fleet.start_beat()
        # A worker is ready when its log says so; celery prints "ready." once connected.
        deadline = time.monotonic() + 60
        for n in range(workers):
            path = self.fleet.workdir / f"w{n}.log"
            while "ready." not in (path.read_text(errors="replace") if path.exists() else ""):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker w{n} not ready:\n{self.fleet.logs()}")
                time.sleep(0.2)

    def pid(self, name: str) -> int:
        return self.fleet.procs[name].pid

    def worker_names(self) -> list[str]:
        return [n for n in self.fleet.procs if n.startswith("w")]

    # ------------------------------------------------------------------ campaigns
    def create_campaign(self, path: Path, *flags: str) -> int:
        out = self.fleet.cli(
            "campaign", "create", "--name", path.stem, "--from", FROM,
            "--contacts", str(path), "--json", *flags,
        ).stdout  # fmt: skip
        return int(json.loads(out)["id"])

    def attempt_counts(self, campaign_id: int) -> dict[str, int]:
        with self.engine.connect() as conn:
            return dict(
                conn.execute(
                    text(
                        "SELECT status, count(*) FROM attempt WHERE campaign_id = :c "
                        "GROUP BY status"
                    ),
                    {"c": campaign_id},
                ).all()
            )

    def stream_backlog(self) -> int:
        """Callback events accepted and not yet applied (the event stream's length)."""
        import redis

        from dialer.callbacks import eventstream

        return int(redis.Redis.from_url(self.redis.url).xlen(eventstream.STREAM))

    def event_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(text("SELECT count(*) FROM call_event")) or 0)


def clone_database(template_url: str, target_url: str) -> None:
    """CREATE DATABASE target TEMPLATE template: a file copy, seconds for a million rows."""
    src, dst = make_url(template_url), make_url(target_url)
    admin = create_engine(dst.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{dst.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{dst.database}" TEMPLATE "{src.database}"'))
    admin.dispose()


def million_campaign(rows: int = 1_000_000, *, rebuild: bool = False) -> tuple[str, int, float]:
    """The template database holding one ``rows``-contact draft campaign, imported once
    (by ``dialer campaign create``, as a user would); (database name, campaign id, seconds
    the import took, or 0.0 when it was already there)."""
    url = database_url(MILLION_DB)
    if not rebuild:
        found = _find_campaign(url, rows)
        if found is not None:
            return MILLION_DB, found, 0.0
    fresh_database(url)
    env = {"DIALER_DATABASE_URL": url, **code_env()}
    with tempfile.TemporaryDirectory(prefix="dialer-1m-") as tmp:
        fleet = Fleet(Path(tmp), env)
        fleet.cli("db", "upgrade")
        path = write_contacts(Path(tmp) / f"million-{rows}.csv", rows)
        log(f"importing {rows:,} contacts into {MILLION_DB} (once; later runs reuse it)")
        started = time.perf_counter()
        out = fleet.cli(
            "campaign", "create", "--name", f"million-{rows}", "--from", FROM,
            "--contacts", str(path), "--json", "--tag-field", "ref",
        ).stdout  # fmt: skip
        seconds = time.perf_counter() - started
    campaign_id = int(json.loads(out)["id"])
    # Statistics for the planner, as autovacuum would eventually gather them.
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return MILLION_DB, campaign_id, seconds


def _find_campaign(url: str, rows: int) -> int | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(
                text("SELECT id FROM campaign WHERE name = :n AND rows = :r AND state = 'draft'"),
                {"n": f"million-{rows}", "r": rows},
            )
    except Exception:
        return None
    finally:
        engine.dispose()


def worker_pids(bench: Bench) -> dict[str, int]:
    return {n: bench.pid(n) for n in bench.worker_names()}


@contextlib.contextmanager
def timed() -> Iterator[dict[str, Any]]:
    out: dict[str, Any] = {}
    started = time.perf_counter()
    yield out
    out["seconds"] = time.perf_counter() - started
