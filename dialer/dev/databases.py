"""A private PostgreSQL server and a PgBouncer in front of it, as real processes.

For the chaos test and benchmarks that restart the database under a running fleet
(``benchmarks/chaos.py --postgres-restart``): the machine's own PostgreSQL serves every
other test, so it is never the one restarted. The binaries are Debian's
(``postgresql`` and ``pgbouncer`` packages; ``.ci/run`` installs both). Neither server
runs as root, so when this process is root they run as the ``postgres`` user, in a
directory that user owns.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from dialer.dev.fleet import free_port, wait_for_port


def _postgres_bin(name: str) -> str:
    """``name`` from the newest ``/usr/lib/postgresql/N/bin``, else from PATH."""
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        for version in sorted(root.iterdir(), key=lambda p: int(p.name), reverse=True):
            candidate = version / "bin" / name
            if candidate.exists():
                return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (apt-get install postgresql)")
    return found


def _as_service_user(argv: list[str]) -> list[str]:
    """``argv`` run as ``postgres`` when we are root (neither server runs as root)."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _service_dir(prefix: str) -> Path:
    """A fresh directory the servers' user owns (``/tmp/pytest-of-root`` is not
    reachable by ``postgres``, so tests' own tmp paths cannot be used)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


class PostgresServer:
    """A throwaway PostgreSQL cluster on a free port, trust auth for ``postgres``.

    ``restart(down=...)`` stops it the way a crash or a failover does (``immediate``:
    every connection cut mid-statement, no checkpoint), keeps it down, and starts it
    again on the same port with the same data.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = _service_dir("dialer-pg-")
        self.data = self.dir / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._initdb()

    def _initdb(self) -> None:
        self._run(
            _postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8", "--locale", "C.UTF-8",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\n"
                "max_connections = 200\n"
                # A test cluster: the OS does not crash, only the server, so fsync can go.
                # synchronous_commit stays on: an immediate stop is a crash, and a commit
                # the dialer was told about must survive it as it would in production.
                "fsync = off\n"
                "full_page_writes = off\n"
            )

    def _run(self, *argv: str) -> None:
        subprocess.run(
            _as_service_user(list(argv)),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.dir,
        )

    def start(self) -> None:
        self._run(
            _postgres_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip
        wait_for_port(self.port)

    def stop(self, mode: str = "immediate") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def database(self, name: str) -> str:
        """The URL of database ``name`` on this server (not created)."""
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def log(self, tail: int = 40) -> str:
        path = self.dir / "server.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(lines[-tail:])

    def close(self) -> None:
        self.stop("fast")
        shutil.rmtree(self.dir, ignore_errors=True)


class PgBouncer:
    """PgBouncer in transaction mode in front of ``server``'s databases.

    As fleets run it: ``pool_mode = transaction`` (a server connection is a client's
    only for one transaction), no ``ignore_startup_parameters`` (so a client that sends
    ``options`` is refused, as it would be in production: the dialer must not need
    them; ``DIALER_DATABASE_POOLER=transaction``), and a short ``server_login_retry``
    so it reconnects within a second of the server's return.
    """

    def __init__(self, server: PostgresServer, pool_size: int = 20) -> None:
        self.server = server
        self.port = free_port()
        self.dir = _service_dir("dialer-pgbouncer-")
        ini = self.dir / "pgbouncer.ini"
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={server.port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'users.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 2000\n"
            "server_login_retry = 1\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
            f"pidfile = {self.dir / 'pgbouncer.pid'}\n"
        )
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in self.dir.iterdir():
                os.chown(path, user.pw_uid, user.pw_gid)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).exists():
            raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
        self.proc = subprocess.Popen(
            _as_service_user([binary, str(self.dir / "pgbouncer.ini")]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def database(self, name: str) -> str:
        """The URL of database ``name`` through the pooler."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def log(self, tail: int = 40) -> str:
        path = self.dir / "pgbouncer.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(lines[-tail:])

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
