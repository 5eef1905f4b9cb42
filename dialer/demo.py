"""``dialer demo``: a whole campaign on the embedded default, no services needed.

SQLite for the database, Celery's in-memory broker with a worker in this process, the
carrier simulator and the callback receiver on loopback threads. The code that runs is
the production code: the same tasks, state machine, pacing, carrier client and receiver
app; only the services under them are embedded.
"""

from __future__ import annotations

import csv
import random
import secrets
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from kombu.transport import memory

CONTACTS = 1000
OUTCOMES = {"answered": 0.55, "busy": 0.15, "no-answer": 0.15, "rejected": 0.1, "congestion": 0.05}


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

    def drain_events(self, connection: Any, timeout: float | None = None) -> Any:
        if timeout is not None:
            timeout = min(timeout, self.drain_wait)
        return super().drain_events(connection, timeout=timeout)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class _ReceiverServer(WSGIServer):
    """The receiver app on a fixed pool of threads, as gunicorn's gthread worker runs it.

    Not a thread per request (``socketserver.ThreadingMixIn``): Celery keeps its result
    backend per thread and builds a new one on a thread's first publish, scanning every
    installed package's entry points to do so. With a thread per callback that scan ran
    for every event, and took more than half of the demo's CPU time (16 s of 30 s).
    """

    def __init__(self, address: tuple[str, int], handler: Any, threads: int = 16) -> None:
        super().__init__(address, handler)
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


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False)
    workdir = Path(tempfile.mkdtemp(prefix="dialer-demo-"))
    started = time.monotonic()

    from dialer import settings
    from dialer.carrier.simulator import SimConfig, Simulator

    sim = Simulator(
        SimConfig(outcomes=OUTCOMES, answer_delay=0.1, talk_time=0.1, no_answer_delay=0.3, seed=7)
    )
    sim_url = sim.start("127.0.0.1", 0)
    secret = secrets.token_urlsafe(16)

    receiver_server = make_server(
        "127.0.0.1",
        0,
        _placeholder_app,
        server_class=_ReceiverServer,
        handler_class=_QuietHandler,
    )
    port = receiver_server.server_address[1]
    settings.override(
        settings.load(
            {
                "DIALER_DATABASE_URL": f"sqlite:///{workdir / 'demo.db'}",
                "DIALER_BROKER_URL": "memory://",
                "DIALER_REDIS_URL": "memory://",
                "CATAPULT_API_URL": sim_url,
                "CATAPULT_USER_ID": sim.config.user_id,
                "CATAPULT_API_TOKEN": sim.config.token,
                "CATAPULT_API_SECRET": sim.config.secret,
                "DIALER_CALLBACK_URL": f"http://127.0.0.1:{port}",
                "DIALER_CALLBACK_SECRET": secret,
                "DIALER_ACCOUNT_CPS": "150",
                "DIALER_NUMBER_CPS": "150",
                "DIALER_HTTP_TIMEOUT": "5",
                "DIALER_WORKER_THREADS": "16",
            }
        )
    )

    from celery.contrib.testing.worker import start_worker

    from dialer import api, migrate, tasks, worker
    from dialer.receiver import Receiver

    worker.configure(settings.get())
    worker.app.conf.broker_transport = _MemoryTransport
    migrate.upgrade()
    receiver_server.set_app(Receiver(secret))
    threading.Thread(target=receiver_server.serve_forever, daemon=True).start()

    contacts, dnc = _sample(workdir)
    console.print(
        f"[bold]dialer demo[/bold]: simulator at {sim_url}, receiver on :{port}, "
        f"database {workdir / 'demo.db'}"
    )
    report = api.create_campaign(
        "demo",
        "+19195550000",
        contacts,
        dnc=[dnc],
        max_attempts=2,
        retry_delay=1,
        call_timeout=30,
        tag_fields=["account"],
    )
    console.print(
        f"imported {report['rows']} rows: {report['imported']} to dial, "
        f"{report['invalid']} invalid, {report['duplicate']} duplicate, "
        f"{report['suppressed']} on the do-not-call list"
    )
    stop = threading.Event()
    try:
        with start_worker(
            worker.app,
            pool="threads",
            concurrency=16,
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=10,
        ):
            ticker = threading.Thread(target=_beat, args=(tasks, stop), daemon=True)
            ticker.start()
            t0 = time.monotonic()
            api.start(report["id"])
            status = _follow(api, report["id"], console)
            duration = time.monotonic() - t0
            stop.set()
            ticker.join()
    finally:
        stop.set()
        receiver_server.shutdown()
        receiver_server.server_close()
        sim.stop()
        tasks.reset_clients()
    export = workdir / "export.csv"
    api.export(report["id"], export)

    table = Table(title=f"campaign {status['id']}: {status['state']}")
    table.add_column("status")
    table.add_column("contacts", justify="right")
    for name, count in status["contacts"].items():
        if count:
            table.add_row(name, str(count))
    console.print(table)
    dialable = report["imported"]
    answered = status["contacts"]["answered"]
    console.print(
        f"calls: {status['calls']}   answer rate: {answered / max(dialable, 1):.0%} "
        f"of {dialable} dialable   pace: {status['calls'] / duration:.1f} calls/s   "
        f"campaign took {duration:.1f} s (demo {time.monotonic() - started:.1f} s)"
    )
    console.print(f"export written to {export}")
    return 0 if status["state"] == "completed" else 1


def _placeholder_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting"]


def _beat(tasks: Any, stop: threading.Event) -> None:
    """What ``celery beat`` does in production: publish a tick each second, a sweep each ten."""
    n = 0
    while not stop.wait(1.0):
        tasks.tick.delay()
        n += 1
        if n % 10 == 0:
            tasks.sweep.delay()


def _follow(api: Any, campaign_id: int, console: Any) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    deadline = time.monotonic() + 120
    status = api.status(campaign_id)
    with Progress(
        TextColumn("dialing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[calls]} calls"),
        console=console,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("demo", total=status["total"], calls=0)
        while status["state"] not in ("completed", "cancelled"):
            if time.monotonic() > deadline:
                print("demo: the campaign did not finish in 120 s", file=sys.stderr)
                break
            time.sleep(0.5)
            status = api.status(campaign_id)
            left = status["contacts"]["pending"] + status["contacts"]["dialing"]
            bar.update(task, completed=status["total"] - left, calls=status["calls"])
            if not console.is_terminal:
                console.print(
                    f"{status['total'] - left}/{status['total']} contacts final, "
                    f"{status['calls']} calls"
                )
    return status
