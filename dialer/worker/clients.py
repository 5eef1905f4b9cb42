"""The worker process's carrier client and pacer, built once and shared by its threads,
and the publishing of dial messages.

Both clients hold connection pools (HTTP to the carrier, Redis for the pace), so a
process builds each once, on first use (or at worker start, ``dialer.worker.app``), and
forgets them only when the settings change (``reset_clients``).
"""

from __future__ import annotations

import threading

from dialer import settings
from dialer.carrier.client import CatapultClient
from dialer.policy import pacing
from dialer.policy.requests import RequestBudget

# Attempts per dial message, at most. Claim, record and the task's own handling are
# per batch; 50 rather than 20 took the workers from 1.50 to 1.31 ms CPU per call and
# 670 to 900 calls/s unpaced (throughput.py), and MAX_RELEASE still makes 40 batches
# for the threads to share. A paced campaign's batches hold at most MAX_WAIT of work
# (dialer.worker.dialing.batch_size).
DIAL_BATCH = 50
# Due times live in the database; countdowns are short, because Redis redelivers
# long-ETA tasks (docs/field-notes.md, "Celery on Redis").
MAX_COUNTDOWN = 30.0

_lock = threading.Lock()
_client: CatapultClient | None = None
_pacer: pacing.Backend | None = None


def carrier() -> CatapultClient:
    global _client
    with _lock:
        if _client is None:
            s = settings.get()
            # The account's non-create budget, over this process's pacer (built when
            # first used: not here, under this lock).
            budget = RequestBudget(pacer, s.account_rps)
            _client = CatapultClient.from_settings(s, budget=budget)
        return _client


def pacer() -> pacing.Backend:
    global _pacer
    with _lock:
        if _pacer is None:
            url = settings.get().redis_url
            if url.startswith("memory://"):
                _pacer = pacing.LocalBackend()
            else:
                import redis

                _pacer = pacing.RedisBackend(redis.Redis.from_url(url))
        return _pacer


def reset_clients() -> None:
    """Forget the process's carrier client and pacer (after a settings change)."""
    global _client, _pacer
    with _lock:
        if _client is not None:
            _client.close()
        _client, _pacer = None, None


def publish_dial(attempt_id: int, countdown: float | None = None) -> None:
    publish_dials([attempt_id], countdown)


def publish_dials(
    attempt_ids: list[int], countdown: float | None = None, size: int = DIAL_BATCH
) -> None:
    """Publish dial batches of at most ``size`` ids (short countdowns only)."""
    # The task module imports the modules that publish: looked up here, not at import.
    from dialer.worker.tasks import dial_batch

    later = min(countdown, MAX_COUNTDOWN) if countdown else None
    for i in range(0, len(attempt_ids), size):
        dial_batch.apply_async((attempt_ids[i : i + size],), countdown=later)
