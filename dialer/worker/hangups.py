"""The hang-up task (every ``dialer.worker.app.HANGUP_SECONDS``): end calls still up ``--max-duration``
seconds after their answer, with the carrier's call control (``POST /calls/{id}``
``{"state": "completed"}``), which goes first in the account's non-create budget
(dialer.policy.requests). One task at a time across the fleet (a lock in Redis); safe to
run twice, or never (the next run finds the same calls)."""

from __future__ import annotations

import logging
from datetime import datetime

from dialer import clock
from dialer.carrier.errors import Action, CarrierError
from dialer.state import duration
from dialer.store import db
from dialer.worker import clients

log = logging.getLogger(__name__)

LOCK_SECONDS = 60.0


def hang_up_overdue(now: datetime) -> int:
    """Ask the carrier to end each call past its limit; how many it asked."""
    pacer = clients.pacer()
    token = pacer.try_lock("hangups", LOCK_SECONDS)
    if token is None:
        return 0
    try:
        with db.session_scope() as session:
            due = duration.calls_to_end(session, now)
        asked: list[int] = []
        for attempt_id, call_id in due:
            try:
                clients.carrier().hang_up(call_id)
            except CarrierError as exc:
                if exc.action is Action.RATE_LIMITED:
                    break  # the next run asks again
                if exc.status not in (403, 404):  # 403/404: the call is over already
                    log.warning(
                        "could not hang up call %s at --max-duration: %s",
                        call_id,
                        exc,
                        extra={"attempt": attempt_id},
                    )
                    continue
            asked.append(attempt_id)
        if asked:
            with db.session_scope() as session:
                duration.hangup_sent(session, asked, clock.now())
            log.info("hung up %d call(s) at their --max-duration", len(asked))
        return len(asked)
    finally:
        pacer.unlock("hangups", token)
