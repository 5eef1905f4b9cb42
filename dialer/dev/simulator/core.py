"""The simulator itself: its life cycle, the calls API, and what tests read back."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import queue
import random
import socket
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from dialer.dev.simulator.calls import Call, Scheduler
from dialer.dev.simulator.config import HANGUP_CAUSE, OUTCOMES, SimConfig, check_config
from dialer.dev.simulator.control import ControlMixin
from dialer.dev.simulator.delivery import DeliveryMixin
from dialer.dev.simulator.people import choose_person
from dialer.dev.simulator.protocol import ApiError, error, invalid, validate_create
from dialer.dev.simulator.script import ScriptMixin
from dialer.dev.simulator.server import Server


class Simulator(ScriptMixin, ControlMixin, DeliveryMixin):
    """The simulated carrier: an HTTP server, an event scheduler and callback senders."""

    def __init__(self, config: SimConfig | None = None):
        self._config = config or SimConfig()
        check_config(self._config)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._scheduler = Scheduler()
        self._send_queue = queue.Queue()
        self._id_rng = random.Random()  # ids must differ between runs, whatever the seed
        self._server: Server | None = None
        self._threads: list[threading.Thread] = []
        self.url = ""
        self._clear()

    @property
    def config(self) -> SimConfig:
        return self._config

    # -- life cycle ---------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None or self._stopping.is_set():
            raise RuntimeError("a simulator starts once; make a new one to start again")
        self._server = Server((host, port), self)
        bound_port = self._server.server_address[1]
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
        shown = f"[{shown}]" if ":" in shown else shown
        self.url = f"http://{shown}:{bound_port}"
        threads = [
            threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="sim-http",
                daemon=True,
            ),
            threading.Thread(target=self._scheduler.run, name="sim-scheduler", daemon=True),
        ]
        threads += [
            threading.Thread(target=self._sender, name=f"sim-sender-{i}", daemon=True)
            for i in range(self.SENDERS)
        ]
        for thread in threads:
            thread.start()
        self._threads = threads
        return self.url

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        # Keep-alive connections park their handler threads in a read: end those reads.
        with server.connections_lock:
            connections = dict(server.connections)
        for sock in connections.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        self._scheduler.stop()
        for _ in range(self.SENDERS):
            self._send_queue.put(None)
        # A sender inside a callback to a receiver that does not answer finishes when
        # that callback's timeout expires; it is a daemon thread, so it never blocks exit.
        deadline = time.monotonic() + 2.0
        for thread in [*self._threads, *connections]:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._server = None

    def __enter__(self) -> Simulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def configure(self, **changes: Any) -> None:
        with self._lock:
            config = dataclasses.replace(self._config, **changes)
            check_config(config)
            self._config = config
            if "seed" in changes:
                self._fault_rng = random.Random(config.seed)

    def calls(self) -> list[dict]:
        with self._lock:
            return [call.record() for call in self._calls.values()]

    def stats(self) -> dict:
        """Calls created; requests refused, by ``status category/code``; requests by
        endpoint kind; 429s of the request limit; BXML fetches and call-control requests;
        answer → first audio, in milliseconds."""
        with self._lock:
            first = sorted(ms for c in self._calls.values() if (ms := c.first_audio_ms) is not None)
            return {
                "created": self._created,
                "refused": dict(self._refusals),
                "requests": dict(self._requests),
                "rate_limited": self._rate_limited,
                "bxml_fetches": sum(c.bxml_fetches for c in self._calls.values()),
                "control_requests": sum(c.control_requests for c in self._calls.values()),
                "first_audio_ms": _summary(first),
            }

    def _count_refusal(self, exc: ApiError) -> None:
        body = exc.body if isinstance(exc.body, dict) else {}
        key = f"{exc.status} {body.get('category', '-')}/{body.get('code', '-')}"
        with self._lock:
            self._refusals[key] = self._refusals.get(key, 0) + 1

    def reset(self) -> None:
        with self._lock:
            for call in self._calls.values():
                call.cancelled = True
                call.outbox.clear()
            self._clear()

    # -- the calls API --------------------------------------------------------------------

    def _admit(self, config: SimConfig, src: str, now: float) -> bool:
        """Sliding-window rate limits over ``rate_window`` (docs/carrier.md, default limits)."""
        checks = []
        if config.rate is not None:
            checks.append((self._window, config.rate))
        if config.number_rate is not None:
            checks.append((self._number_windows.setdefault(src, deque()), config.number_rate))
        for window, rate in checks:
            while window and window[0] <= now - config.rate_window:
                window.popleft()
            if len(window) >= max(1, int(rate * config.rate_window + 1e-9)):
                return False
        return True

    def _create(self, body: Any, base: str) -> dict:
        request = validate_create(body)
        with self._lock:
            config = self._config
            if config.numbers is not None and request["from"] not in config.numbers:
                raise ApiError(
                    401,
                    error(
                        "authentication",
                        "number-access-denied",
                        "from: the number is not on this account",
                        [{"name": "from", "value": request["from"]}],
                    ),
                )
            if request["from"] in config.refused_numbers:
                raise ApiError(
                    403,
                    error(
                        "forbidden",
                        "number-access-denied",
                        "from: the account may not call from this number",
                        [{"name": "from", "value": request["from"]}],
                    ),
                )
            now = time.monotonic()
            rng = self._fault_rng
            if not self._admit(config, request["from"], now) or (
                config.fault_rate_limit and rng.random() < config.fault_rate_limit
            ):
                raise ApiError(
                    403, error("limit", "call-rate-limit", "the call rate limit was exceeded")
                )
            if config.fault_429 and rng.random() < config.fault_429:
                reset_ms = str(int(time.time() * 1000) + 1000)
                raise ApiError(
                    429,
                    error(
                        "too-many-requests",
                        "too-many-requests",
                        "too many requests",
                        [{"name": "rateLimitResetTime", "value": reset_ms}],
                    ),
                    {"X-RateLimit-Reset": reset_ms},
                )
            if config.fault_500 and rng.random() < config.fault_500:
                raise ApiError(
                    500, error("internal-server-error", "internal-error", "internal error")
                )
            if config.fault_503 and rng.random() < config.fault_503:
                raise ApiError(503, error("unavailable", "call-unavailable", "service unavailable"))
            if config.credit is not None and self._created >= config.credit:
                raise ApiError(
                    403,
                    error("credit", "insufficient-available-balance", "insufficient balance"),
                )
            if request["to"].startswith(tuple(config.refused_prefixes)):
                raise ApiError(
                    403,
                    error(
                        "forbidden",
                        "invalid-call-to-number",
                        "to: this number cannot be called",
                        [{"name": "to", "value": request["to"]}],
                    ),
                )
            ambiguous = bool(config.fault_ambiguous and rng.random() < config.fault_ambiguous)
            call = self._new_call(config, request, base, now, ambiguous)
            style = config.location_style
            if style == "mixed":
                style = "relative" if self._created % 2 else "absolute"
            path = f"/v1/users/{config.user_id}/calls/{call.id}"
        return {"ambiguous": ambiguous, "location": path if style == "relative" else base + path}

    def _new_call(
        self, config: SimConfig, request: dict, base: str, now: float, ambiguous: bool
    ) -> Call:
        # Under self._lock.
        dst = request["to"]
        nth = self._calls_to.get(dst, 0)
        self._calls_to[dst] = nth + 1
        # Seeded by (seed, to, n-th call to it) so a re-run dials the same outcomes and
        # meets the same people whatever order the calls arrive in.
        rng = random.Random(f"{config.seed}|{dst}|{nth}")
        person_rng = random.Random(f"{config.seed}|{dst}|{nth}|person")
        sequence = config.outcome_by_number.get(dst)
        if sequence:
            outcome = sequence[min(nth, len(sequence) - 1)]
        else:
            names = [n for n in OUTCOMES if config.outcomes.get(n, 0) > 0]
            outcome = rng.choices(names, [config.outcomes[n] for n in names])[0]
        call_id = self._new_id("c-")
        call = Call(
            id=call_id,
            src=request["from"],
            dst=dst,
            tag=request.get("tag"),
            outcome=outcome,
            created_at=time.time(),
            uri=f"{base}/v1/users/{config.user_id}/calls/{call_id}",
            call_timeout=request.get("callTimeout", 60),
            callback_url=request.get("callbackUrl"),
            callback_method=request.get("callbackHttpMethod", "POST").upper(),
            callback_timeout=request.get("callbackTimeout", 10000),
            fallback_url=request.get("fallbackUrl"),
            request=request,
            rng=rng,
            generation=self._generation,
            person=choose_person(person_rng, config),
            person_rng=person_rng,
            ambiguous=ambiguous,
        )
        if config.reorder_callbacks and rng.random() < config.reorder_callbacks:
            call.held = []
        self._calls[call_id] = call
        self._created += 1
        self._window.append(now)
        self._number_windows.setdefault(call.src, deque()).append(now)

        # An answered call's hangup is not planned: its person hangs up once the call
        # goes quiet (script.py, _settle), or the dialer does.
        plan: list[tuple[float, str, dict]] = []
        if outcome == "answered":
            plan = [(config.answer_delay, "answer", {})]
        elif outcome == "no-answer":
            wait = config.no_answer_delay
            wait = call.call_timeout if wait is None else wait
            plan = [(wait, "timeout", {}), (wait, "hangup", {"cause": "NO_ANSWER"})]
        elif outcome in HANGUP_CAUSE:
            plan = [(config.answer_delay, "hangup", {"cause": HANGUP_CAUSE[outcome]})]
        for delay, name, extra in plan:
            self._scheduler.at(now + delay, self._planned(call, name, extra))
        return call

    def _planned(self, call: Call, name: str, extra: dict) -> Callable[[], None]:
        def occur() -> None:
            with self._lock:
                if call.generation == self._generation and not call.ended:
                    self._occur(call, name, extra)

        return occur

    def _resource(self, call_id: str) -> dict:
        with self._lock:
            return self._get(call_id).resource()

    def _events(self, call_id: str) -> list[dict]:
        with self._lock:
            return [dict(event) for event in self._get(call_id).log]

    def _list(self, query: dict[str, list[str]], base: str, path: str) -> tuple[list, dict]:
        def one(name: str, default: str | None = None) -> str | None:
            values = query.get(name)
            return values[-1] if values else default

        def number(name: str, default: int, low: int, high: int | None) -> int:
            raw = one(name, str(default))
            try:
                value = int(raw or "")
            except ValueError:
                raise invalid(name, raw, "must be a whole number") from None
            if value < low or (high is not None and value > high):
                raise invalid(name, raw, f"must be between {low} and {high or 'any'}")
            return value

        page = number("page", 0, 0, None)
        size = number("size", 25, 1, 1000)
        order = one("sortOrder", "desc")
        if order not in ("asc", "desc"):
            raise invalid("sortOrder", order, "must be asc or desc")
        src, dst = one("from"), one("to")
        with self._lock:
            matching = [
                call
                for call in self._calls.values()
                if (src is None or call.src == src) and (dst is None or call.dst == dst)
            ]
            # Creation order breaks ties between equal start times.
            if order == "desc":
                matching.reverse()
            matching.sort(key=lambda c: c.created_at, reverse=order == "desc")
            chunk = [c.resource() for c in matching[page * size : (page + 1) * size]]
            more = len(matching) > (page + 1) * size
        headers = {}
        if more:
            params = {k: v for k, v in (("from", src), ("to", dst)) if v is not None}
            params.update(page=str(page + 1), size=str(size), sortOrder=order)
            headers["Link"] = f'<{base}{path}?{urlencode(params)}>; rel="next"'
        return chunk, headers


def _summary(values: list[float]) -> dict:
    """Count, p50, p99 and max of sorted ``values`` (None when there are none)."""
    if not values:
        return {"count": 0, "p50": None, "p99": None, "max": None}

    def rank(q: float) -> float:
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]

    return {
        "count": len(values),
        "p50": round(statistics.median(values), 3),
        "p99": round(rank(0.99), 3),
        "max": values[-1],
    }
