"""Call scripts: answer → first audio, requests per answered call, CPU per answered call;
BXML (what the dialer does) beside REST call control, on the simulator, in one run.

    python benchmarks/call_script.py                    # 3,000 contacts at 50 answers/s
    python benchmarks/call_script.py --contacts 600 --cps 20 --only bxml

Issue 14: "measure both on the simulator (requests per answered call, answer → first
audio latency, behaviour when the receiver or a worker dies mid-call), pick one".

- **bxml**: the dialer through its public commands, default settings (2 workers, beat,
  the receiver with 2 processes), a campaign whose every call is answered (``--cps``
  calls a second, so about as many answers a second) with a script: ``--say`` naming a
  column, ``--keys`` with an opt-out, ``--goodbye``. The simulator's people press a key
  (80%), wait the gather out (10%) or hang up mid-prompt (10%). Figures: the simulator's
  answer → first sound (it starts the clock when it first sends the answer, so the
  receiver's work and the network are in it) p50/p99; the requests on the account's
  non-create budget per answered call (the simulator counts them); CPU per answered
  call over the workers, the receiver, beat, PostgreSQL and Redis.
- **rest**: what REST call control would cost, with the smallest possible driver: this
  script creates the calls itself at ``--cps`` and answers the simulator's POSTed events
  from a thread pool with no database, no stream and no worker in between (a lower bound
  on REST's latency): ``answer`` → ``POST …/gather`` with the prompt; ``gather`` →
  ``POST …/audio`` (the goodbye), then ``POST …/calls/{id}`` (hang up). It honours 429
  by waiting for ``X-RateLimit-Reset``. Run twice: with the carrier's default non-create
  limit (``--request-rate``, 1 a second) and with none.

Then the machine and the load average at start and end: read every time against them.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from sqlalchemy.engine import make_url

from dialer.dev.fleet import free_port
from dialer.dev.simulator import SimConfig, Simulator

try:
    from benchmarks.cost_per_call import Sampler
    from benchmarks.harness import Bench, log, percentile
    from benchmarks.machine import describe, load_average
except ImportError:  # run as a script
    from cost_per_call import Sampler  # type: ignore[no-redef]
    from harness import Bench, log, percentile  # type: ignore[no-redef]
    from machine import describe, load_average  # type: ignore[no-redef]

PEOPLE = "press=0.8,wait=0.1,hangup=0.1"
KEYS = "1=0.6,2=0.3,9=0.1"
SAY = "Hello {ref}. Your appointment is tomorrow at ten. Press 1 to confirm, 2 to cancel."
# What a call sounds like: a person picks up 0.5 s after ringing, a sentence takes 1 s,
# a key comes 0.5 s into the prompt, and the 5 s wait for a key is scaled to 1 s.
SIM_FLAGS = [
    "--outcomes", "answered=1", "--answer-delay", "0.5", "--speech-seconds", "1",
    "--press-delay", "0.5", "--time-scale", "0.2", "--talk-time", "1",
    "--people", PEOPLE, "--keys", KEYS, "--seed", "14",
]  # fmt: skip


def bxml_run(contacts: int, cps: float, workdir: Path | None) -> dict[str, Any]:
    with Bench("dialer_bench_script", keep_logs=workdir) as bench:
        bench.up(simulator=SIM_FLAGS)
        path = bench.workdir / "contacts.csv"
        with path.open("w") as f:
            f.write("phone,ref\n")
            for i in range(contacts):
                f.write(f"+1919{400 + i // 10000:03d}{i % 10000:04d},R{i:05d}\n")
        cid = bench.create_campaign(
            path, "--cps", str(cps), "--say", SAY, "--keys", "1=confirmed,2=cancelled,9=opt-out",
            "--goodbye", "Thank you. Goodbye.",
        )  # fmt: skip
        roots = {
            "workers": [bench.pid(n) for n in bench.worker_names()],
            "receiver": [bench.pid("receiver")],
            "beat": [bench.pid("beat")],
            "redis": [bench.redis.proc.pid],  # type: ignore[union-attr]
        }
        # PostgreSQL's CPU told apart by database (cost_per_call.Sampler): the machine
        # is shared, and other databases' work is not this run's.
        sampler = Sampler(roots, make_url(bench.db_url).database or "")
        sampler.start()
        bench.fleet.cli("campaign", "start", str(cid))

        def done() -> bool:
            st = json.loads(bench.fleet.cli("campaign", "status", str(cid), "--json").stdout)
            return st["state"] == "completed"

        deadline = time.monotonic() + contacts / cps * 3 + 120
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError("the campaign did not complete")
            time.sleep(1)
        wall = sampler.stop()
        used, pg_note = sampler.attributed()
        stats = requests.get(bench.fleet.sim_url + "/_sim/stats", timeout=10).json()
        calls = requests.get(bench.fleet.sim_url + "/_sim/calls", timeout=30).json()
        status = json.loads(bench.fleet.cli("campaign", "status", str(cid), "--json").stdout)
    answered = [c for c in calls if c.get("first_audio_ms") is not None]
    firsts = sorted(c["first_audio_ms"] for c in answered)
    n = max(1, len(answered))
    return {
        "answered": len(answered),
        "wall": wall,
        "first_p50": percentile(firsts, 50),
        "first_p99": percentile(firsts, 99),
        "first_max": firsts[-1] if firsts else None,
        "requests_per_answer": stats["control_requests"] / n,
        "fetches_per_answer": stats["bxml_fetches"] / n,
        "one_prompt_each": all(
            sum(1 for a in c["audio"] if a.get("prompt")) <= 1 for c in answered
        ),
        "cpu_ms": {k: v * 1000 / n for k, v in used.items() if k != "launcher"},
        "pg_note": pg_note,
        "responses": status.get("responses"),
    }


class _Driver:
    """The smallest REST call-control driver: events in, requests out, no state kept
    but the call's goodbye."""

    def __init__(self, sim_url: str) -> None:
        self.base = f"{sim_url}/v1/users/u-sim/calls"
        self.session = requests.Session()
        self.session.auth = ("sim-token", "sim-secret")
        self.pool = ThreadPoolExecutor(32)
        self.requests = 0
        self.rate_limited = 0
        self.lock = threading.Lock()

    def post(self, url: str, body: dict[str, Any]) -> int:
        while True:
            with self.lock:
                self.requests += 1
            r = self.session.post(url, json=body, timeout=10)
            if r.status_code != 429:
                return r.status_code
            with self.lock:
                self.rate_limited += 1
            reset = float(r.headers.get("X-RateLimit-Reset", "0")) / 1000
            time.sleep(max(0.05, reset - time.time()))

    def event(self, payload: dict[str, Any]) -> None:
        call = f"{self.base}/{payload.get('callId')}"
        kind = payload.get("eventType")
        if kind == "answer":
            self.post(
                call + "/gather",
                {"maxDigits": 1, "interDigitTimeout": 5, "prompt": {"sentence": "Press 1"}},
            )
        elif kind == "gather" and payload.get("reason") != "hung-up":
            self.post(call + "/audio", {"sentence": "Thank you. Goodbye."})
            self.post(call, {"state": "completed"})


def rest_run(contacts: int, cps: float, request_rate: float | None) -> dict[str, Any]:
    sim = Simulator(
        SimConfig(
            outcomes={"answered": 1.0},
            answer_delay=0.5,
            speech_seconds=1.0,
            press_delay=0.5,
            time_scale=0.2,
            talk_time=5.0,  # long enough for the driver's requests to find the call up
            people=PEOPLE,
            keys=KEYS,
            seed=14,
            request_rate=request_rate,
        )
    )
    sim_url = sim.start()
    driver = _Driver(sim_url)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            driver.pool.submit(driver.event, json.loads(body))

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    callback = f"http://127.0.0.1:{port}/events"
    started = time.monotonic()
    try:
        for i in range(contacts):
            slot = started + i / cps
            time.sleep(max(0.0, slot - time.monotonic()))
            driver.session.post(
                driver.base,
                json={
                    "from": "+19195550000",
                    "to": f"+1919{400 + i // 10000:03d}{i % 10000:04d}",
                    "callbackUrl": callback,
                },
                timeout=10,
            )
        # Until every call has ended (or a minute past the last create).
        end = time.monotonic() + 60 + contacts / max(request_rate or cps, 0.1) * 3
        while time.monotonic() < end:
            calls = sim.calls()
            if calls and all(c["state"] in ("completed", "rejected") for c in calls):
                break
            time.sleep(1)
        calls = sim.calls()
    finally:
        server.shutdown()
        sim.stop()
    answered = [c for c in calls if c.get("outcome") == "answered"]
    heard = sorted(c["first_audio_ms"] for c in answered if c.get("first_audio_ms") is not None)
    n = max(1, len(answered))
    return {
        "answered": len(answered),
        "heard": len(heard),
        "first_p50": percentile(heard, 50) if heard else None,
        "first_p99": percentile(heard, 99) if heard else None,
        "requests_per_answer": driver.requests / n,
        "rate_limited": driver.rate_limited,
        "silent": len(answered) - len(heard),
        "wall": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--cps", type=float, default=50.0)
    parser.add_argument("--only", choices=("bxml", "rest"))
    parser.add_argument("--request-rate", type=float, default=1.0, help="the carrier's default")
    parser.add_argument("--keep-logs", type=Path)
    args = parser.parse_args(argv)
    load_at_start = load_average()
    lines = []
    if args.only in (None, "bxml"):
        log(f"bxml: {args.contacts} contacts at {args.cps:g} calls/s through the dialer")
        b = bxml_run(args.contacts, args.cps, args.keep_logs)
        cpu = b["cpu_ms"]
        lines += [
            f"BXML (the dialer): {b['answered']} answered in {b['wall']:.0f} s",
            f"  answer -> first audio: p50 {b['first_p50']:.0f} ms, p99 {b['first_p99']:.0f} ms,"
            f" max {b['first_max']:.0f} ms",
            f"  requests on the non-create budget per answered call: "
            f"{b['requests_per_answer']:.2f} (BXML fetches per answered call: "
            f"{b['fetches_per_answer']:.2f})",
            f"  one prompt per call: {b['one_prompt_each']}; responses: {b['responses']}",
            "  CPU per answered call: "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(cpu.items()))
            + f"; total {sum(cpu.values()):.2f} ms",
            f"  ({b['pg_note']})",
        ]
    if args.only in (None, "rest"):
        for rate in (args.request_rate, None):
            label = f"{rate:g}/s (the carrier's default)" if rate else "unlimited"
            log(f"rest: {args.contacts} calls at {args.cps:g}/s, non-create limit {label}")
            r = rest_run(args.contacts, args.cps, rate)
            lines += [
                f"REST call control, non-create limit {label}: {r['answered']} answered,"
                f" {r['wall']:.0f} s",
                "  answer -> first audio: "
                + (
                    f"p50 {r['first_p50']:.0f} ms, p99 {r['first_p99']:.0f} ms"
                    if r["first_p50"] is not None
                    else "nobody heard anything"
                )
                + f"; answered calls that heard nothing: {r['silent']}",
                f"  requests per answered call: {r['requests_per_answer']:.2f}"
                f" ({r['rate_limited']} answered 429)",
            ]
    print(describe(None, load_at_start))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
