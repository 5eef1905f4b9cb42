"""A local fleet of real processes: simulator, receiver, workers and beat.

For end-to-end tests, benchmarks and trials on one machine. Every process is the real
command a production deployment runs (``dialer simulator``, ``dialer receiver``,
``celery -A dialer worker|beat``), started with the environment given, and all of them
are stopped when the fleet closes. Logs go to files in ``workdir`` so a failing test
can show them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Any, timeout: float, interval: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def fresh_database(url: str) -> str:
    """Drop and create the PostgreSQL database ``url`` names; return the URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()
    return parsed.render_as_string(hide_password=False)


def receiver_command(port: int, workers: int) -> list[str]:
    """``dialer receiver`` on loopback, as the tests and benchmarks start it."""
    return [
        sys.executable, "-m", "dialer.cli", "receiver",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


class RedisServer:
    """A private redis-server process; ``options`` are more redis-server options
    (``--requirepass``, ...).

    Without ``data_dir`` it keeps nothing: a restart loses every key. With it, it runs
    as docker-compose.yml runs Redis, with the append-only file (fsync every second),
    and a restart comes back from that file.
    """

    def __init__(
        self, port: int | None = None, options: Sequence[str] = (), data_dir: Path | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.options = list(options)
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        if self.data_dir is None:
            persistence = ["--appendonly", "no"]
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            persistence = ["--appendonly", "yes", "--appendfsync", "everysec"]
            persistence += ["--dir", str(self.data_dir)]
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *persistence,
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self, graceful: bool = False) -> None:
        """SIGKILL (a crash: the append-only file may miss its last second), or with
        ``graceful`` SIGTERM, which writes the file out first (a restart, as ``docker
        compose restart`` does it)."""
        if self.proc is not None:
            if graceful:
                self.proc.terminate()
            else:
                self.proc.kill()
            self.proc.wait()
            self.proc = None


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class Fleet:
    def __init__(self, workdir: Path, env: Mapping[str, str], stdout_apart: bool = False) -> None:
        """``stdout_apart``: each process's standard output goes to NAME.stdout, and
        NAME.log holds its standard error alone, where every process logs (Celery
        prints its banner and shutdown notices to standard output)."""
        self.workdir = Path(workdir)
        self.stdout_apart = stdout_apart
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **env}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.sim_url = ""
        self.receiver_url = ""

    # ------------------------------------------------------------------ processes
    def _spawn(
        self, name: str, argv: list[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        out = (self.workdir / f"{name}.stdout").open("ab") if self.stdout_apart else log
        proc = subprocess.Popen(
            argv,
            env={**self.env, **(env or {})},
            stdout=out,
            stderr=log,
            cwd=self.workdir,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def start_simulator(self, *flags: str) -> str:
        port = free_port()
        self._spawn(
            "simulator",
            [
                sys.executable,
                "-m",
                "dialer.cli",
                "simulator",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *flags,
            ],
        )
        self.sim_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ok(self.sim_url + "/_sim/calls"), 20, what="the simulator")
        self.env["CATAPULT_API_URL"] = self.sim_url
        return self.sim_url

    def start_receiver(self, workers: int = 2) -> str:
        port = free_port()
        self.receiver_url = f"http://127.0.0.1:{port}"
        # Before it starts: the receiver builds a scripted call's gather URL from it.
        self.env["DIALER_CALLBACK_URL"] = self.receiver_url
        self._spawn("receiver", receiver_command(port, workers))
        wait_until(lambda: _ok(self.receiver_url + "/healthz"), 20, what="the receiver")
        return self.receiver_url

    def start_worker(
        self,
        name: str,
        concurrency: int | None = None,
        loglevel: str = "INFO",
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """``env``: settings for this worker alone, over the fleet's."""
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dialer",
            "worker",
            f"--loglevel={loglevel}",
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
        if concurrency:
            argv.append(f"--concurrency={concurrency}")
        return self._spawn(name, argv, env)

    def start_beat(self, name: str = "beat", quiet: bool = False) -> subprocess.Popen[bytes]:
        """``quiet``: no start-up banner (celery's global -q), as with JSON logs."""
        return self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                *(["-q"] if quiet else []),
                "-A",
                "dialer",
                "beat",
                "--loglevel=INFO",
                f"--schedule={self.workdir / (name + '-schedule')}",
            ],
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "dialer.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            cwd=self.workdir,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"dialer {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}"
            )
        return result

    def sim_calls(self) -> list[dict[str, Any]]:
        return list(requests.get(self.sim_url + "/_sim/calls", timeout=10).json())

    def logs(self, tail: int = 60) -> str:
        out = []
        for path in sorted(self.workdir.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"----- {path.name} -----\n" + "\n".join(lines))
        return "\n".join(out)

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False
