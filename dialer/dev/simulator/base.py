"""The state every part of the simulator shares, and how an event leaves a call.

``Simulator`` (core.py) is this class plus three mixins: ``DeliveryMixin`` (callbacks
out, BXML replies in), ``ScriptMixin`` (what the person hears and does) and
``ControlMixin`` (REST call control and the request limit). They share one lock: every
method here and in the mixins whose name starts with ``_`` and that takes a ``call``
runs under ``self._lock`` unless it says otherwise.
"""

from __future__ import annotations

import itertools
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from dialer.dev.simulator.calls import Call, GatherRun, Outgoing, Scheduler
from dialer.dev.simulator.config import SimConfig
from dialer.dev.simulator.protocol import ID_CHARS, iso, not_found


class SimBase:
    SENDERS = 8

    _config: SimConfig
    _lock: threading.Lock
    _stopping: threading.Event
    _scheduler: Scheduler
    _send_queue: queue.Queue[Call | None]
    _id_rng: random.Random
    _calls: dict[str, Call]
    _generation: int

    def _clear(self) -> None:
        # Under self._lock, or before any thread runs.
        self._calls = {}
        self._calls_to: dict[str, int] = {}
        self._window: deque[float] = deque()
        self._number_windows: dict[str, deque[float]] = {}
        self._created = 0
        self._refusals: dict[str, int] = {}
        self._requests: dict[str, int] = {}
        self._request_window: deque[float] = deque()
        self._rate_limited = 0
        self._fetch_ids = itertools.count(1)
        self._fault_rng = random.Random(self._config.seed)
        self._generation = getattr(self, "_generation", 0) + 1

    # -- hooks the mixins fill in ---------------------------------------------------------

    def _settle(self, call: Call) -> None:
        """Arm or disarm the person's hang-up, by whether anything is going on."""
        raise NotImplementedError  # script.py

    def _hang_up(self, call: Call, who: str) -> None:
        raise NotImplementedError  # script.py

    def _hear(self, call: Call, sound: dict, prompt: bool = False) -> None:
        raise NotImplementedError  # script.py

    def _start_gather(self, call: Call, run: GatherRun) -> None:
        raise NotImplementedError  # script.py

    def _transfer(self, call: Call, to: str, whisper: list[dict]) -> None:
        raise NotImplementedError  # script.py

    def _bxml_reply(
        self, call: Call, item: Outgoing, ok: bool, body: bytes, url: str, problem: str
    ) -> None:
        """The first delivery attempt of a BXML fetch is done; run what came back."""
        raise NotImplementedError  # script.py

    # -- helpers ------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        # Ids must differ between runs, whatever the seed: not from a seeded generator.
        return prefix + "".join(self._id_rng.choices(ID_CHARS, k=25))

    def _get(self, call_id: str) -> Call:
        call = self._calls.get(call_id)
        if call is None:
            raise not_found("call-not-found", "callId", call_id)
        return call

    def _later(
        self,
        call: Call,
        delay: float,
        fn: Callable[[], None],
        when: Callable[[], bool] = lambda: True,
    ) -> None:
        """Run ``fn`` under the lock after ``delay`` seconds, if the call is still up, was
        not reset away meanwhile, and ``when()`` (checked then) holds."""

        def run() -> None:
            with self._lock:
                if call.generation == self._generation and not call.ended and when():
                    fn()

        self._scheduler.at(time.monotonic() + delay, run)

    # -- events -------------------------------------------------------------------------

    def _occur(self, call: Call, name: str, extra: dict) -> None:
        """The call's ``answer``, ``timeout`` or ``hangup`` happens now; its callback is
        queued."""
        config = self._config
        now = time.time()
        if name == "answer":
            call.state, call.active_at = "active", now
        elif name == "hangup":
            call.state = "rejected" if extra.get("cause") == "CALL_REJECTED" else "completed"
            call.ended_at, call.ended = now, True
        payload: dict[str, Any] = {
            "eventType": name,
            "from": call.src,
            "to": call.dst,
            "callId": call.id,
            "callUri": call.uri,
        }
        if name in ("answer", "hangup"):
            payload["callState"] = call.state
        payload.update(extra)
        payload["time"] = iso(now)
        # tag is documented on answer only; older SDKs expect it everywhere.
        if call.tag is not None and (name == "answer" or config.tag_on_all_events):
            payload["tag"] = call.tag
        if name != "answer":
            self._emit(call, name, payload)
            if name == "hangup":
                self._plan_media(call)
            return
        # A BXML call (callbackHttpMethod GET) takes its script from the answer's reply.
        fetch = next(self._fetch_ids) if call.callback_method == "GET" else None
        queued = self._emit(call, name, payload, fetch=fetch)
        call.awaiting = fetch if queued else None
        self._settle(call)

    def _plan_media(self, call: Call) -> None:
        """A recorded call that was answered: its ``recording`` event after the hangup,
        then (transcriptionEnabled) its ``transcription`` (docs/carrier.md, "The events
        these produce")."""
        if call.active_at is None or str(call.request.get("recordingEnabled")).lower() != "true":
            return
        config = self._config
        rid = f"r-{call.id}"
        base = call.uri.split("/calls/", 1)[0]
        started, ended = call.active_at, call.ended_at or time.time()
        fmt = call.request.get("recordingFileFormat", "wav")
        recording = {
            "eventType": "recording",
            "callId": call.id,
            "recordingId": rid,
            "recordingUri": f"{base}/recordings/{rid}",
            "state": "complete",
            "startTime": iso(started),
            "endTime": iso(ended),
            "media": f"{base.rsplit('/users/', 1)[0]}/users/media/{rid}.{fmt}",
        }
        generation = call.generation
        now = time.monotonic()

        def emit(name: str, payload: dict) -> Callable[[], None]:
            def occur() -> None:
                with self._lock:
                    if call.generation == generation == self._generation:
                        self._emit(call, name, dict(payload, time=iso(time.time())))

            return occur

        self._scheduler.at(now + config.recording_delay, emit("recording", recording))
        if str(call.request.get("transcriptionEnabled")).lower() == "true":
            text = f"Simulated transcript of call {call.id} to {call.dst}."
            transcription = {
                "eventType": "transcription",
                "callId": call.id,
                "transcriptionId": f"t-{call.id}",
                "recordingId": rid,
                "state": "completed",
                "text": text,
                "textSize": len(text),
                "textUrl": f"{base}/recordings/{rid}/transcriptions/t-{call.id}",
            }
            later = config.recording_delay + config.transcription_delay
            self._scheduler.at(now + later, emit("transcription", transcription))

    def _emit(
        self,
        call: Call,
        name: str,
        payload: dict,
        *,
        url: str | None = None,
        fetch: int | None = None,
        timeout_ms: int | None = None,
    ) -> bool:
        """Log an event and queue its delivery: to the call's callbackUrl, or (``url``)
        to a verb's requestUrl. True if it went into the outbox now (not dropped, not
        held back for reordering)."""
        config = self._config
        event_id = self._new_id("ev-")
        call.log.append({"id": event_id, "time": payload["time"], "name": name, "data": payload})
        if call.outcome == "silent" or not (url or call.callback_url):
            return False
        copies = 1
        if config.duplicate_callbacks and call.rng.random() < config.duplicate_callbacks:
            copies = 2
        items = [
            Outgoing(name, payload, url=url, fetch=fetch, timeout_ms=timeout_ms)
            for _ in range(copies)
        ]
        if call.held is None:
            self._enqueue(call, items)
            return True
        call.held.extend(items)
        if call.ended:  # hangup is always the last event: release the lot, shuffled
            held, call.held = call.held, None
            shuffled = held[:]
            call.rng.shuffle(shuffled)
            if len(shuffled) > 1 and all(a is b for a, b in zip(shuffled, held, strict=True)):
                shuffled.reverse()
            self._enqueue(call, shuffled)
        return False

    def _enqueue(self, call: Call, items: list[Outgoing]) -> None:
        # One sender at a time drains a call's outbox, keeping its order.
        call.outbox.extend(items)
        if not call.sending:
            call.sending = True
            self._send_queue.put(call)
