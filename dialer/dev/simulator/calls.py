"""A simulated call, what it has to send, and the clock that moves calls along."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dialer.dev.simulator.bxml import Verb
from dialer.dev.simulator.protocol import iso, without_userinfo

logger = logging.getLogger(__name__)


@dataclass
class Outgoing:
    """One request to send for a call: an event to its callbackUrl (``url`` None), or a
    BXML fetch of a Gather's or Redirect's requestUrl (``url`` set, always GET)."""

    name: str
    payload: dict
    attempts: int = 0
    url: str | None = None
    # Replies to fetches with the same id may carry the call's next BXML; the first 2xx
    # one wins (duplicates share the id).
    fetch: int | None = None
    timeout_ms: int | None = None


@dataclass
class GatherRun:
    """A gather in progress or done, started by a BXML <Gather> or by REST."""

    id: str
    mode: str  # "bxml" or "rest"
    max_digits: int
    inter_digit_timeout: float
    terminating: str
    tag: str | None
    prompt: list[dict]  # audio records (bxml.Sound.record), played in order
    request_url: str | None = None
    request_timeout_ms: int = 30000
    state: str = "started"
    reason: str | None = None
    digits: str = ""
    created_at: float = field(default_factory=time.time)
    completed_at: float | None = None
    barged: bool = False
    terminator: str | None = None  # the terminating digit pressed, if one was

    def resource(self, call_uri: str) -> dict:
        """As ``GET …/calls/{id}/gather/{gatherId}`` shows it."""
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "createdTime": iso(self.created_at),
            "call": call_uri,
        }
        if self.state == "completed":
            out.update(reason=self.reason, digits=self.digits)
            out["completedTime"] = iso(self.completed_at or self.created_at)
        if self.tag is not None:
            out["tag"] = self.tag
        return out


CALL_OPTIONS = (
    "recordingEnabled", "recordingMaxDuration", "recordingFileFormat", "transcriptionEnabled",
    "sipHeaders", "callbackTimeout",
)  # fmt: skip


@dataclass
class Call:
    id: str
    src: str
    dst: str
    tag: str | None
    outcome: str
    created_at: float
    uri: str
    call_timeout: int
    callback_url: str | None
    callback_method: str
    callback_timeout: int
    fallback_url: str | None
    request: dict
    rng: random.Random
    generation: int
    person: str = "press"
    person_rng: random.Random = field(default_factory=random.Random)
    ambiguous: bool = False
    state: str = "started"
    active_at: float | None = None
    ended_at: float | None = None
    ended: bool = False
    cancelled: bool = False
    log: list[dict] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)
    refused: int = 0  # callback requests the receiver answered with a 4xx
    outbox: deque[Outgoing] = field(default_factory=deque)
    sending: bool = False
    held: list[Outgoing] | None = None
    # -- what the person hears, and what the call's script is doing (script.py) --
    script: deque[Verb] = field(default_factory=deque)
    stepping: bool = False  # a verb of the script is playing or pausing
    step_token: int = 0
    awaiting: int | None = None  # the fetch whose reply is the call's next BXML
    bxml_error: str | None = None
    skipped_verbs: list[str] = field(default_factory=list)
    gather: GatherRun | None = None
    gather_runs: dict[str, GatherRun] = field(default_factory=dict)
    playing: int | None = None  # the REST /audio playing, by token
    play_token: int = 0
    playing_event: tuple[str, str | None] = ("speak", None)  # its event name and tag
    idle_armed: bool = False
    idle_token: int = 0
    audio: list[dict] = field(default_factory=list)
    gathers: list[dict] = field(default_factory=list)
    pressed: str | None = None
    transferred_to: str | None = None
    whisper: list[dict] = field(default_factory=list)
    hung_up_by: str | None = None
    answer_sent_at: float | None = None  # monotonic, the answer's first send
    first_audio_at: float | None = None  # monotonic
    bxml_fetches: int = 0
    control_requests: int = 0

    @property
    def first_audio_ms(self) -> float | None:
        if self.answer_sent_at is None or self.first_audio_at is None:
            return None
        return round((self.first_audio_at - self.answer_sent_at) * 1000, 3)

    def record(self) -> dict:
        return {
            "id": self.id,
            "from": self.src,
            "to": self.dst,
            "tag": self.tag,
            "outcome": self.outcome,
            "created_at": self.created_at,
            "state": self.state,
            "callback_url": without_userinfo(self.callback_url) if self.callback_url else None,
            "method": self.callback_method,
            "events": list(self.delivered),
            "undelivered": list(self.undelivered),
            "refused": self.refused,
            "ambiguous": self.ambiguous,
            "person": self.person,
            "audio": [dict(a) for a in self.audio],
            "gathers": [dict(g) for g in self.gathers],
            "pressed": self.pressed,
            "transferred_to": self.transferred_to,
            "whisper": [dict(w) for w in self.whisper],
            "hung_up_by": self.hung_up_by or "none",
            "first_audio_ms": self.first_audio_ms,
            "bxml_fetches": self.bxml_fetches,
            "bxml_error": self.bxml_error,
            "skipped_verbs": list(self.skipped_verbs),
            "control_requests": self.control_requests,
            # The create request's recording and carrier options, as sent.
            "options": {k: self.request[k] for k in CALL_OPTIONS if k in self.request},
        }

    def resource(self) -> dict:
        """The call as ``GET …/calls/{id}`` shows it (docs/carrier.md, "Read calls")."""
        out: dict[str, Any] = {
            "id": self.id,
            "direction": "out",
            "from": self.src,
            "to": self.dst,
            "state": self.state,
            "startTime": iso(self.created_at),
        }
        if self.active_at is not None:
            out["activeTime"] = iso(self.active_at)
        if self.ended_at is not None:
            out["endTime"] = iso(self.ended_at)
        talked = (self.ended_at - self.active_at) if self.active_at and self.ended_at else 0.0
        # Billed by the started minute, as carriers do.
        out["chargeableDuration"] = 60 * math.ceil(talked / 60) if talked > 0 else 0
        out["callTimeout"] = self.call_timeout
        if self.callback_url:
            out["callbackUrl"] = without_userinfo(self.callback_url)
        out["callbackHttpMethod"] = self.callback_method
        out["callbackTimeout"] = self.callback_timeout
        if self.fallback_url:
            out["fallbackUrl"] = without_userinfo(self.fallback_url)
        for name in ("bridgeId", "conferenceId", "sipHeaders", "tag"):
            if name in self.request:
                out[name] = self.request[name]
        out["recordingEnabled"] = self.request.get("recordingEnabled", False)
        out["transcriptionEnabled"] = self.request.get("transcriptionEnabled", False)
        out["events"] = f"{self.uri}/events"
        return out


class Scheduler:
    """Runs short functions at monotonic due times on one thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False

    def at(self, due: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), fn))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        break
                    self._cond.wait(delay)
                if self._stopped:
                    return
                now = time.monotonic()
                due = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            # Run outside the condition: the functions take the simulator's lock, which
            # in turn schedules; holding both here could deadlock.
            for fn in due:
                try:
                    fn()
                except Exception:
                    logger.exception("simulator scheduler task failed")
