"""The carrier simulator's own capacity: creates/s and callbacks/s it sustains, its CPU.

    python benchmarks/simulator_capacity.py --rate 400 --seconds 15
    python benchmarks/simulator_capacity.py --rate 0 --seconds 15     # closed loop: its max

So a throughput figure measures the dialer, not the simulator: this drives ``dialer
simulator`` (every call answered: an answer and a hangup callback ~0.1 s later) straight
from a load generator, with callbacks going to a minimal sink that answers 200 at once,
both in processes of their own. It prints creates/s and their latency, callbacks/s and
their delay from the event's time to the sink, and the simulator's CPU: at the dialer's
target (400 calls/s) the simulator should keep every delay flat and have a core to spare.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import multiprocessing as mp
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import requests

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import code_env, log, median, percentile  # noqa: E402
from benchmarks.machine import CpuMeter, describe, load_average  # noqa: E402
from dialer.dev.fleet import Fleet, free_port  # noqa: E402

SIM_FLAGS = ["--answer-delay", "0.05", "--talk-time", "0.05"]


def _sink(port: int, count: mp.Value, delays: mp.Queue, stop: mp.Event) -> None:  # type: ignore[valid-type]
    """An HTTP/1.1 keep-alive server that answers every request 200 with no body; every
    tenth body's ``time`` gives the delivery delay."""
    seen = 0
    samples: list[float] = []

    class Sink(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            nonlocal seen
            self.buf += data
            while True:
                head_end = self.buf.find(b"\r\n\r\n")
                if head_end < 0:
                    return
                head = self.buf[:head_end].lower()
                i = head.find(b"content-length:")
                length = int(head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0
                                  else None]) if i >= 0 else 0  # fmt: skip
                if len(self.buf) < head_end + 4 + length:
                    return
                body = self.buf[head_end + 4 : head_end + 4 + length]
                self.buf = self.buf[head_end + 4 + length :]
                seen += 1
                if seen % 10 == 0:
                    stamp = json.loads(body)["time"]
                    at = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
                    samples.append(time.time() - at)
                self.t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # type: ignore[attr-defined]

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", port)
        async with server:
            while not stop.is_set():
                await asyncio.sleep(0.1)
                count.value = seen

    asyncio.run(serve())
    delays.put(samples)


def _generator(
    sim: str,
    sink_port: int,
    connections: int,
    interval: float,
    start_at: float,
    stop_at: float,
    offset: int,
    out: mp.connection.Connection,
) -> None:
    host, port = sim.split("//")[1].split(":")
    auth = "Basic " + base64.b64encode(b"sim-token:sim-secret").decode()
    headers = {"Content-Type": "application/json", "Authorization": auth}
    callback = f"http://dialer:secret@127.0.0.1:{sink_port}/cb"
    results: list[tuple[float, float, int]] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        mine: list[tuple[float, float, int]] = []
        planned = start_at + interval * i / connections
        n = 0
        while planned < stop_at and time.time() < stop_at:
            delay = planned - time.time()
            if delay > 0:
                time.sleep(delay)
            number = offset + i * 1_000_000 + n
            n += 1
            body = json.dumps(
                {
                    "from": "+19195550000",
                    "to": f"+1312{number // 10_000_000 % 800 + 200:03d}{number % 10_000_000:07d}",
                    "callbackUrl": callback,
                    "tag": json.dumps({"attempt": number}),
                }
            )
            try:
                conn.request("POST", "/v1/users/u-sim/calls", body, headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                status = 0
            mine.append((planned, time.time(), status))
            planned = planned + interval if interval else time.time()
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.send(results)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=400, help="creates/s offered; 0: closed loop")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--connections", type=int, default=16, help="per client process")
    args = p.parse_args()
    load_at_start = load_average()
    import tempfile

    ctx = mp.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(Path(tmp), code_env())
        try:
            sim = fleet.start_simulator(*SIM_FLAGS)
            sink_port = free_port()
            count, delays, stop = ctx.Value("q", 0), ctx.Queue(), ctx.Event()
            sink = ctx.Process(target=_sink, args=(sink_port, count, delays, stop))
            sink.start()
            time.sleep(0.5)
            total = args.clients * args.connections
            interval = total / args.rate if args.rate else 0.0
            start_at = time.time() + 1.0
            stop_at = start_at + args.seconds
            pipes, gens = [], []
            for c in range(args.clients):
                recv, send = ctx.Pipe(duplex=False)
                g = ctx.Process(
                    target=_generator,
                    args=(
                        sim,
                        sink_port,
                        args.connections,
                        interval,
                        start_at,
                        stop_at,
                        c * 100_000_000,
                        send,
                    ),  # fmt: skip
                )
                g.start()
                pipes.append(recv)
                gens.append(g)
            meter = CpuMeter(
                {"simulator": fleet.procs["simulator"].pid, "sink": sink.pid}
                | {f"gen{i}": g.pid for i, g in enumerate(gens)}
            )
            time.sleep(max(0.0, start_at - time.time()))
            meter.start()
            callbacks0 = count.value
            time.sleep(max(0.0, stop_at - time.time()))
            wall, cpu = meter.read()
            callbacks1 = count.value
            results = [r for pipe in pipes for r in pipe.recv()]
            for g in gens:
                g.join()
            time.sleep(1.0)  # the last callbacks land
            stop.set()
            samples = delays.get(timeout=30)
            sink.join()
            created = requests.get(sim + "/_sim/stats", timeout=10).json()
        finally:
            fleet.close()

    ok = [r for r in results if r[2] == 201]
    span = max(r[1] for r in results) - start_at
    lat = [r[1] - r[0] for r in ok]
    sim_cpu = cpu["simulator"]
    print(
        f"simulator capacity: offered {'closed loop' if not args.rate else f'{args.rate:g}/s'}"
        f" creates for {args.seconds:g} s from {args.clients} x {args.connections} connections"
    )
    print(
        f"creates: {len(ok):,} answered 201 in {span:.1f} s -> {len(ok) / span:.0f}/s; "
        f"{len(results) - len(ok)} other; latency from planned send p50 "
        f"{1000 * percentile(lat, 50):.1f} ms, p99 {1000 * percentile(lat, 99):.1f} ms"
    )
    print(
        f"callbacks delivered to the sink: {(callbacks1 - callbacks0) / wall:.0f}/s over the "
        f"window; delay from the event's time p50 {1000 * median(samples):.0f} ms, "
        f"p99 {1000 * percentile(samples, 99):.0f} ms"
    )
    print(
        f"simulator CPU: {sim_cpu / wall:.2f} cores, {1000 * sim_cpu / max(len(ok), 1):.2f} ms "
        f"per call (its create and both callbacks); sink {cpu['sink'] / wall:.2f} cores, "
        f"generator {sum(v for k, v in cpu.items() if k.startswith('gen')) / wall:.2f} cores"
    )
    print(f"simulator stats: {created}")
    log("")
    print(describe(None, load_at_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
