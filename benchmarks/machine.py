"""What every benchmark prints beside its figure, and the /proc readings they share.

The targets of issue 7 are for 2 cores on loopback; a figure means little without the
machine it came from and how busy that machine was, so each script ends with
``print(describe(...))``. CPU time is read from ``/proc/<pid>/stat`` (Linux only: no
psutil needed), summed over a process and its descendants, so the receiver's
supervisor and its server processes, or a celery worker and its pool, count as one.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _postgres_version(database_url: str | None) -> str:
    if not database_url:
        return "n/a"
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(database_url)
        with engine.connect() as conn:
            version = conn.scalar(text("SHOW server_version"))
        engine.dispose()
        return str(version)
    except Exception as exc:  # the figure is still worth printing
        return f"unknown ({type(exc).__name__})"


def _redis_version() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        return "not installed"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip() or "unknown"


def reference_work(database_url: str | None = None) -> str:
    """A fixed amount of work timed now, in Python and in PostgreSQL: the same-run yardstick
    a figure is read against. The machine's speed moves from day to day (issue 13 saw the
    same code at 315 and 1,120 calls/s); a figure that moved with its reference moved with
    the machine, not the code. Best of three, so a passing hiccup does not count."""

    def python_work() -> None:
        total = 0
        for i in range(300_000):
            total += i % 7
        "".join(str(i) for i in range(50_000))

    def best(fn: object, runs: int = 3) -> float:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            fn()  # type: ignore[operator]
            times.append(time.perf_counter() - started)
        return 1000 * min(times)

    out = f"python {best(python_work):.1f} ms"
    if database_url:
        try:
            from sqlalchemy import create_engine, text

            engine = create_engine(database_url)
            with engine.connect() as conn:
                query = text("SELECT count(*), sum(g % 7) FROM generate_series(1, 300000) AS g")
                out += f", postgresql {best(lambda: conn.execute(query).all()):.1f} ms"
            engine.dispose()
        except Exception as exc:
            out += f", postgresql unknown ({type(exc).__name__})"
    return out


def describe(database_url: str | None = None, load_at_start: str | None = None) -> str:
    """One block naming the machine: CPUs, Python, PostgreSQL, Redis, load average, and
    the reference work (``reference_work``) timed at the end."""
    lines = [
        f"machine: {platform.platform()}",
        f"cpus: {os.cpu_count()} x {cpu_model()}",
        f"python: {platform.python_implementation()} {platform.python_version()}",
        f"postgresql: {_postgres_version(database_url)}",
        f"redis: {_redis_version()}",
    ]
    if load_at_start is not None:
        lines.append(f"load average (1/5/15 min) at start: {load_at_start}")
    lines.append(f"load average (1/5/15 min) at end: {load_average()}")
    lines.append(
        f"reference work (fixed; slower = busier or slower machine): {reference_work(database_url)}"
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------ /proc readings


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def children_of(pid: int) -> list[int]:
    """Every descendant of ``pid`` (direct children first)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def tree(pid: int) -> list[int]:
    return [pid, *children_of(pid)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (its own threads, not its children)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # After the name: state(0) ppid(1) ... utime(11) stime(12)
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_mb(pid: int) -> float:
    fields = _stat(pid)
    if fields is None:
        return 0.0
    return int(fields[21]) * _PAGE / 1e6  # rss(21) in pages


@dataclass
class CpuMeter:
    """CPU seconds of process trees between ``start()`` and ``read()``.

    Descendants are rediscovered at each reading; a process that died in between is
    lost from the total, which the long-lived processes measured here never do.
    """

    roots: dict[str, int]

    def _sample(self) -> dict[str, dict[int, float]]:
        return {name: {p: cpu_seconds(p) for p in tree(pid)} for name, pid in self.roots.items()}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._s0 = self._sample()

    def read(self) -> tuple[float, dict[str, float]]:
        """(wall seconds since start, CPU seconds per root name since start)."""
        s1 = self._sample()
        wall = time.monotonic() - self._t0
        used = {
            name: sum(v - self._s0.get(name, {}).get(p, 0.0) for p, v in s1[name].items())
            for name in s1
        }
        return wall, used


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(v) for v in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    total = sum(parts[:8])  # guest time is already in user
    return (total - idle) / _TICK, total / _TICK


def pids_named(name: str) -> list[int]:
    """Every process whose command name is ``name`` (e.g. all of PostgreSQL's)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == name:
                        out.append(int(entry))
            except OSError:
                continue
    return out


def _children_cpu(pid: int) -> float:
    """CPU seconds of ``pid``'s children that it has reaped (cutime + cstime)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    return (int(fields[13]) + int(fields[14])) / _TICK


class PostgresMeter:
    """CPU seconds of every PostgreSQL process, short-lived backends included.

    A connection that opens and closes between two readings is a backend forked and
    reaped in between: its CPU shows only in the postmaster's reaped-children time, so
    that is added, and the live backends' own times beside it.
    """

    def __init__(self, name: str = "postgres") -> None:
        self.name = name

    def _read(self) -> tuple[dict[int, float], float]:
        pids = pids_named(self.name)
        postmasters = [p for p in pids if (_stat(p) or ["", "0"])[1] not in map(str, pids)]
        return {p: cpu_seconds(p) for p in pids}, sum(_children_cpu(p) for p in postmasters)

    def start(self) -> None:
        self._s0, self._c0 = self._read()

    def read(self) -> float:
        s1, c1 = self._read()
        live = sum(v - self._s0.get(p, 0.0) for p, v in s1.items())
        # Those that died in between are in the reaped time with their whole life.
        died = sum(v for p, v in self._s0.items() if p not in s1)
        return live + (c1 - self._c0) - died
