"""``dialer demo``: a whole campaign on the embedded default, no services needed.

SQLite for the database, Celery's in-memory broker with a worker in this process, the
event stream as a queue in this process (dialer.callbacks.eventstream.LocalStream, read by that
worker's consumer threads), the carrier simulator and the callback receiver on loopback
threads. The code that runs is
the production code: the same tasks, state machine, pacing, carrier client and receiver
app, with production's Celery settings; only the services under them are embedded, and
the campaign and account settings are the demo's own (a short retry delay, a fast
account). Everything it starts is stopped and its scratch directory removed; only the
export is left, in the working directory.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import random
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from kombu.transport import memory

CONTACTS = 1000
OUTCOMES = {"answered": 0.55, "busy": 0.15, "no-answer": 0.15, "rejected": 0.1, "congestion": 0.05}
# The demo's account and campaign. Production defaults would make it last hours: a
# 600 s retry delay, 1 call per second. The rate is still paced, by the same GCRA code.
RATE = 150  # calls per second, account and number
MAX_ATTEMPTS = 2
RETRY_DELAY = 1  # seconds
CALL_TIMEOUT = 30
WORKER_THREADS = 16  # half production's 32: one SQLite connection serves them all
RECEIVER_THREADS = 16  # requests the demo's receiver serves at once
EXPORT_NAME = "dialer-demo-export.csv"
DEADLINE = 120  # seconds the campaign may take before the demo gives up
# The call script every answered call hears (BXML the receiver serves; dialer.script).
SAY = "Hello {name}. Press 1 to confirm your appointment, 2 to cancel, 9 to stop these calls."
CONSOLE_PORT = 8000  # dialer demo --web, when it is free (else any)


class _MemoryTransport(memory.Transport):
    """Celery's in-memory broker, waking the worker's consumer loop every few ms.

    A transport without an event loop (the in-memory one) runs Celery's ``synloop``,
    which sends the late acks its pool threads hand back only between two calls of
    ``drain_events(timeout=2.0)``; and the virtual transport's ``drain_events`` sits out
    that whole timeout when the prefetch window is full, full of tasks that finished and
    wait for their ack. With production's prefetch (one message per thread) the worker
    then ran about one window of tasks per 2 s, however idle its threads (reported for
    5.3 to 5.6 in celery/celery#10263). Capping the wait makes the loop ack within ms.
    Production is untouched: Redis workers run the event loop, which acks at once.
    """

    polling_interval = 0.005  # the default (1 s) would pace the demo
    drain_wait = 0.02

    def drain_events(self, connection: Any, timeout: Any = None, **kwargs: Any) -> Any:
        if timeout is not None:
            timeout = min(timeout, self.drain_wait)
        return super().drain_events(connection, timeout=timeout, **kwargs)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class _ReceiverServer(WSGIServer):
    """The receiver's WSGI app on a fixed pool of threads (not a thread per request, as
    ``socketserver.ThreadingMixIn`` would); production serves the same rules over ASGI."""

    def __init__(self, threads: int) -> None:
        super().__init__(("127.0.0.1", 0), _QuietHandler)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="demo-receiver")

    def process_request(self, request: Any, client_address: Any) -> None:
        self._pool.submit(self._handle, request, client_address)

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=True)


def _sample(workdir: Path) -> tuple[Path, Path]:
    """1,000 rows with a few bad, repeated and do-not-call numbers."""
    rng = random.Random(2026)
    good = [
        f"+1{rng.choice(['212', '312', '415', '617', '919'])}{rng.randint(200, 999)}"
        f"{rng.randint(0, 9999):04d}"
        for _ in range(CONTACTS)
    ]
    good = list(dict.fromkeys(good))[: CONTACTS - 20]
    rows = [[n, f"Customer {i}", f"A{i:05d}"] for i, n in enumerate(good)]
    rows += [["555-CALL-NOW", "Bad row", "X1"], ["12", "Too short", "X2"], ["", "Empty", "X3"]] + [
        [f"bogus{i}", "Bad", f"X{i + 4}"] for i in range(7)
    ]
    rows += [[good[i][2:], f"Again {i}", f"D{i}"] for i in range(10)]
    dnc = good[-10:]
    rng.shuffle(rows)
    contacts, dnc_file = workdir / "contacts.csv", workdir / "dnc.csv"
    with contacts.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phone", "name", "account"])
        w.writerows(rows)
    with dnc_file.open("w", newline="") as f:
        csv.writer(f).writerows([["phone"], *[[n] for n in dnc]])
    return contacts, dnc_file


def main(web: bool = False) -> int:
    """``web``: the operator's console on the demo too (``dialer demo --web``), up from
    the campaign's start until Ctrl-C, with everything else still running."""
    from rich.console import Console

    console = Console()
    started = time.monotonic()
    # kombu warns on every connection that memory:// names no host; it needs none.
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="dialer-demo-") as scratch:
        status, report, duration, export = _run(console, Path(scratch), web, started)
    if not web:
        _summary(console, status, report, duration, time.monotonic() - started, export)
    leftover = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if leftover:
        print(f"demo: threads still running: {', '.join(leftover)}", file=sys.stderr)
    return 0 if status["state"] == "completed" and not leftover else 1


def _run(
    console: Any, workdir: Path, web: bool = False, started: float = 0.0
) -> tuple[dict[str, Any], dict[str, Any], float, Path]:
    from dialer import settings
    from dialer.dev.simulator import SimConfig, Simulator

    with contextlib.ExitStack() as stack:
        sim = Simulator(
            SimConfig(
                outcomes=OUTCOMES,
                answer_delay=0.1,
                talk_time=0.1,
                no_answer_delay=0.3,
                seed=7,
                # The people who answer hear the script and press a key, mostly.
                people="press=0.8,wait=0.1,hangup=0.1",
                keys="1=0.6,2=0.3,9=0.1",
                speech_seconds=0.2,
                press_delay=0.1,
                time_scale=0.1,
            )
        )
        sim_url = sim.start("127.0.0.1", 0)
        stack.callback(sim.stop)
        receiver = _ReceiverServer(RECEIVER_THREADS)
        stack.callback(receiver.server_close)
        port = receiver.server_address[1]
        secret = secrets.token_urlsafe(16)
        database = workdir / "demo.db"
        settings.override(
            settings.load(
                {
                    "DIALER_DATABASE_URL": f"sqlite:///{database}",
                    "DIALER_BROKER_URL": "memory://",
                    "DIALER_REDIS_URL": "memory://",
                    "CATAPULT_API_URL": sim_url,
                    "CATAPULT_USER_ID": sim.config.user_id,
                    "CATAPULT_API_TOKEN": sim.config.token,
                    "CATAPULT_API_SECRET": sim.config.secret,
                    "DIALER_CALLBACK_URL": f"http://127.0.0.1:{port}",
                    "DIALER_CALLBACK_SECRET": secret,
                    "DIALER_ACCOUNT_CPS": str(RATE),
                    "DIALER_NUMBER_CPS": str(RATE),
                    "DIALER_HTTP_TIMEOUT": "5",
                    "DIALER_WORKER_THREADS": str(WORKER_THREADS),
                }
            )
        )
        stack.callback(settings.override, None)

        from celery.contrib.testing.worker import start_worker

        from dialer import api
        from dialer.callbacks.receiver import Receiver
        from dialer.store import db, migrate
        from dialer.worker import app as worker
        from dialer.worker import clients, tasks

        stack.callback(clients.reset_clients)
        worker.configure(settings.get())
        worker.app.conf.broker_transport = _MemoryTransport
        migrate.upgrade()
        stack.callback(lambda: db.engine().dispose())
        receiver.set_app(Receiver(secret))
        _thread(stack, receiver.serve_forever, receiver.shutdown, "demo-receiver-http")

        contacts, dnc = _sample(workdir)
        console.print(f"[bold]dialer demo[/bold]: simulator at {sim_url}, receiver on :{port}")
        report = api.create_campaign(
            "demo",
            "+19195550000",
            contacts,
            dnc=[dnc],
            max_attempts=MAX_ATTEMPTS,
            retry_delay=RETRY_DELAY,
            call_timeout=CALL_TIMEOUT,
            tag_fields=["account"],
            say=SAY,
            keys="1=confirmed,2=cancelled,9=opt-out",
            goodbye="Thank you, {name}. Goodbye.",
        )
        console.print(
            f"imported {report['rows']} rows: {report['imported']} to dial, "
            f"{report['invalid']} invalid, {report['duplicate']} duplicate, "
            f"{report['suppressed']} on the do-not-call list"
        )
        with start_worker(
            worker.app,
            pool="threads",
            concurrency=WORKER_THREADS,
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=30,
        ) as embedded:
            # The embedded worker stops by "terminate", which leaves the thread pool's
            # (idle) threads to the interpreter's exit: stop them now.
            stack.callback(embedded.pool.stop)
            stop = threading.Event()
            beat = threading.Thread(target=_beat, args=(tasks, stop), name="demo-beat")
            with _running(beat, stop):
                if web:
                    url, password = _console(stack)
                    console.print(
                        f"[bold]console[/bold]: {url}  user [bold]admin[/bold]  "
                        f"password [bold]{password}[/bold]",
                        soft_wrap=True,
                        highlight=False,
                    )
                t0 = time.monotonic()
                api.start(report["id"])
                status = _follow(api, report["id"], console)
                duration = time.monotonic() - t0
                export = _export_path()
                api.export(report["id"], export)
                if web:
                    # Everything stays up, so the console can run more campaigns.
                    _summary(console, status, report, duration, time.monotonic() - started, export)
                    _hold(console, url)
    return status, report, duration, export


def _console(stack: contextlib.ExitStack) -> tuple[str, str]:
    """``dialer web`` on the demo's database, in a thread on loopback (port 8000 when it
    is free), with a password made for this run: (its URL, the password)."""
    import dataclasses
    import socket

    import uvicorn

    from dialer import settings
    from dialer.web.app import create_app

    password = secrets.token_urlsafe(12)
    app = create_app(dataclasses.replace(settings.get(), web_password=password))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", CONSOLE_PORT))
    except OSError:
        sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(
            app, lifespan="on", loop="asyncio", ws="none", access_log=False, log_level="warning"
        )
    )
    stack.callback(sock.close)

    def stop() -> None:
        server.should_exit = True

    _thread(stack, lambda: server.run(sockets=[sock]), stop, "demo-console")
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return f"http://127.0.0.1:{sock.getsockname()[1]}/", password


def _hold(console: Any, url: str) -> None:
    """Until Ctrl-C (or SIGTERM)."""
    import signal

    console.print(f"the console stays up at {url}: Ctrl-C to stop", highlight=False)
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _running(thread: threading.Thread, stop: threading.Event) -> Iterator[None]:
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _thread(stack: contextlib.ExitStack, target: Any, stop: Any, name: str) -> None:
    """Run ``target`` in a thread until the stack unwinds: then ``stop()`` and join."""
    thread = threading.Thread(target=target, name=name)
    thread.start()
    stack.callback(thread.join)
    stack.callback(stop)


def _export_path() -> Path:
    """The working directory's export file, or a temporary one if it is not writable."""
    path = Path.cwd() / EXPORT_NAME
    try:
        path.touch()
        return path
    except OSError:
        fd, name = tempfile.mkstemp(prefix="dialer-demo-", suffix=".csv")
        os.close(fd)
        return Path(name)


def _beat(tasks: Any, stop: threading.Event) -> None:
    """What ``celery beat`` does in production: publish a tick each second, a sweep each ten."""
    from dialer.worker.app import SWEEP_SECONDS, TICK_SECONDS

    n = 0
    per_sweep = round(SWEEP_SECONDS / TICK_SECONDS)
    while not stop.wait(TICK_SECONDS):
        tasks.tick.delay()
        n += 1
        if n % per_sweep == 0:
            tasks.sweep.delay()


def _follow(api: Any, campaign_id: int, console: Any) -> dict[str, Any]:
    """Poll the campaign until it ends: a live bar on a terminal, a line every 2 s if not."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    started = time.monotonic()
    deadline = started + DEADLINE
    status = api.status(campaign_id)
    printed = 0.0
    with Progress(
        TextColumn("dialing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[calls]} calls, {task.fields[rate]:.0f}/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("demo", total=status["total"], calls=0, rate=0.0)
        while status["state"] not in ("completed", "cancelled"):
            if time.monotonic() > deadline:
                print(f"demo: the campaign did not finish in {DEADLINE} s", file=sys.stderr)
                break
            time.sleep(0.25)
            status = api.status(campaign_id)
            now = time.monotonic()
            left = status["contacts"]["pending"] + status["contacts"]["dialing"]
            rate = status["calls"] / max(now - started, 1e-6)
            bar.update(task, completed=status["total"] - left, calls=status["calls"], rate=rate)
            if not console.is_terminal and now - printed >= 2:
                printed = now
                console.print(
                    f"{status['total'] - left}/{status['total']} contacts final, "
                    f"{status['calls']} calls"
                )
    return status


def _summary(
    console: Any,
    status: dict[str, Any],
    report: dict[str, Any],
    duration: float,
    total: float,
    export: Path,
) -> None:
    from rich.table import Table

    table = Table(title=f"campaign {status['id']} ({status['name']}): {status['state']}")
    table.add_column("contacts by status")
    table.add_column("count", justify="right")
    for name, count in status["contacts"].items():
        if count:
            table.add_row(name, str(count))
    table.add_row("total", str(status["total"]), end_section=True)
    dialable = report["imported"]
    answered = status["contacts"]["answered"]
    calls = status["calls"]
    with export.open(newline="", encoding="utf-8") as f:
        tries = [int(row["attempts"] or 0) for row in csv.DictReader(f)]
    table.add_row("attempts", f"{sum(tries)} ({sum(tries) - sum(1 for n in tries if n)} retries)")
    table.add_row("calls made", str(calls))
    table.add_row("answer rate", f"{answered / max(dialable, 1):.0%} of {dialable}")
    responses = status.get("responses") or {}
    table.add_row(
        "responses",
        ", ".join(f"{label} {n}" for label, n in responses.items()) or "none",
    )
    table.add_row("calls per second", f"{calls / max(duration, 1e-6):.1f} (limit {RATE})")
    table.add_row("campaign took", f"{duration:.1f} s")
    table.add_row("demo took", f"{total:.1f} s")
    console.print(table)
    console.print(f"export written to {export}", soft_wrap=True, highlight=False)
