"""Calls per minute and outcomes over time, and each campaign's current rate.

The database keeps no time series a page could read cheaply: attempts have no index by
time, and on a million-contact campaign counting them by minute on every refresh would
cost what the status is built to avoid. So the console samples what ``campaign status``
reads (the tallies, O(statuses) per campaign) for every running or paused campaign every
``INTERVAL`` seconds, in one thread, however many people watch, and keeps the
differences in per-minute buckets in memory: calls created, and contacts that reached
each final outcome. The current rate is the calls created over the last ``RATE_SPAN``
seconds of samples.

What it cannot know is what happened while no console ran: the chart begins when this
process first saw the campaign running (the page says so). Everything else on the pages
is read from the database on each request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

INTERVAL = 2.0  # seconds between samples
MINUTES = 60  # minutes of buckets kept per campaign
RATE_SPAN = 15.0  # seconds of samples the current rate is taken over
FORGET_AFTER = 24 * 3600.0  # a campaign not sampled for this long is dropped
OUTCOMES = ("answered", "unanswered", "failed", "cancelled", "suppressed")


@dataclass
class Series:
    """One campaign's samples: recent (monotonic time, calls) and per-minute buckets
    keyed by epoch minute."""

    first_seen: float  # epoch seconds
    last: tuple[float, int, dict[str, int]] | None = None  # (epoch, calls, contacts)
    recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))
    minutes: dict[int, dict[str, int]] = field(default_factory=dict)
    last_sampled: float = 0.0


class Activity:
    """The samples of every campaign this process watches; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._series: dict[int, Series] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ recording
    def record(self, status: dict[str, Any], at: float | None = None) -> None:
        """Add one status (``api.status``'s dict) of a campaign."""
        now = self._clock() if at is None else at
        cid = int(status["id"])
        calls = int(status.get("calls") or 0)
        contacts = {k: int(v) for k, v in (status.get("contacts") or {}).items()}
        with self._lock:
            series = self._series.get(cid)
            if series is None:
                series = self._series[cid] = Series(first_seen=now)
            if series.last is not None:
                then, calls_then, contacts_then = series.last
                if now <= then:
                    return
                bucket = series.minutes.setdefault(int(now // 60), {})
                made = calls - calls_then
                if made > 0:
                    bucket["calls"] = bucket.get("calls", 0) + made
                for name in OUTCOMES:
                    moved = contacts.get(name, 0) - contacts_then.get(name, 0)
                    if moved > 0:
                        bucket[name] = bucket.get(name, 0) + moved
                oldest = int(now // 60) - MINUTES
                for minute in [m for m in series.minutes if m <= oldest]:
                    del series.minutes[minute]
            series.last = (now, calls, contacts)
            series.recent.append((now, calls))
            series.last_sampled = now

    # ------------------------------------------------------------------ reading
    def knows(self, campaign_id: int) -> bool:
        with self._lock:
            return campaign_id in self._series

    def rate(self, campaign_id: int) -> float | None:
        """Calls created per second over the last ``RATE_SPAN`` seconds; None before two
        samples, or when the campaign is no longer sampled."""
        with self._lock:
            series = self._series.get(campaign_id)
            if series is None or len(series.recent) < 2:
                return None
            now = self._clock()
            t1, c1 = series.recent[-1]
            if now - t1 > 3 * INTERVAL + 1:
                return None  # not sampled lately: not running
            t0, c0 = next(
                ((t, c) for t, c in series.recent if t1 - t <= RATE_SPAN), series.recent[-2]
            )
            if t1 <= t0:
                t0, c0 = series.recent[-2]
            return max(c1 - c0, 0) / max(t1 - t0, 1e-6)

    def chart(self, campaign_id: int, minutes: int = 30) -> dict[str, Any]:
        """The last ``minutes`` minutes as a list of per-minute buckets (oldest first),
        and since when this process has been watching."""
        now = self._clock()
        current = int(now // 60)
        with self._lock:
            series = self._series.get(campaign_id)
            buckets = dict(series.minutes) if series else {}
            since = series.first_seen if series else None
        return {
            "since": since,
            "minutes": [
                {"minute": m, **buckets.get(m, {})}
                for m in range(current - minutes + 1, current + 1)
            ],
        }

    # ------------------------------------------------------------------ the sampler
    def sample_once(self, read: Callable[[], list[dict[str, Any]]]) -> int:
        """Read the watched campaigns' statuses and record them; forget old ones."""
        statuses = read()
        at = self._clock()
        for status in statuses:
            self.record(status, at)
        with self._lock:
            for cid in [c for c, s in self._series.items() if at - s.last_sampled > FORGET_AFTER]:
                del self._series[cid]
        return len(statuses)

    def start(self, read: Callable[[], list[dict[str, Any]]]) -> None:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.sample_once(read)
                except Exception as exc:  # the database away: the pages say so themselves
                    log.warning("console: sampling failed (%s)", type(exc).__name__)
                self._stop.wait(INTERVAL)

        self._thread = threading.Thread(target=run, name="console-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
