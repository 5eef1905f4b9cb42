"""The account's budget for every request but a create, held across the fleet.

The carrier limits each account to 1 request per second by default on every endpoint
other than create-call, answering 429 with ``X-RateLimit-Reset`` over it (docs/carrier.md,
"Rate limits"). The dialer's non-create requests are the call control it sends (hanging up
a call at ``--max-duration``) and the sweep's reads (a call and its events, lists of
calls). They share one fleet-wide schedule in Redis, ``DIALER_ACCOUNT_RPS`` requests per
second, the same GCRA reservation the creates use (dialer.policy.pacing), with its own hold
for the carrier's push-back:

- call control goes first: it marks that it is waiting (a flag that lives two seconds)
  and waits up to ``CONTROL_WAIT`` for its slot;
- a read takes a slot only while no call control waits, and waits at most ``READ_WAIT``;
  otherwise it is refused at once (``RequestsBusy``) and the sweep tries again later;
- a 429 holds every non-create request of the fleet until its reset time.

A call script itself costs no request: it is BXML the receiver serves (dialer.script).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dialer.policy.pacing import PACE_MARGIN, Backend, Limit

REQUESTS_KEY = "dialer:pace:requests"
REQUESTS_HOLD = "dialer:pace:requests:hold"
CONTROL_FLAG = "requests-control-waiting"
CONTROL_WAIT = 10.0  # seconds call control waits for its slot at most
READ_WAIT = 1.5  # seconds a read waits; a longer wait leaves it to a later sweep
CONTROL = "control"
READ = "read"


class RequestsBusy(Exception):
    """No request slot for now; the message says why."""


class RequestBudget:
    def __init__(self, pacer: Callable[[], Backend], rate: float) -> None:
        if not rate > 0:
            raise ValueError("rate must be greater than 0")
        self._pacer = pacer  # looked up when used: the worker builds its pacer lazily
        self._limit = Limit(REQUESTS_KEY, rate * PACE_MARGIN)

    def take(self, kind: str) -> float:
        """Wait for this request's slot; return the seconds waited. Raises RequestsBusy
        when a read would have to wait behind call control or too long."""
        pacer = self._pacer()
        control = kind == CONTROL
        if control:
            pacer.flag(CONTROL_FLAG, 2.0)
        elif pacer.flagged(CONTROL_FLAG):
            raise RequestsBusy("call control is waiting for the account's request budget")
        wait = CONTROL_WAIT if control else READ_WAIT
        slot = pacer.reserve([self._limit], wait, hold_key=REQUESTS_HOLD)
        if not slot.reserved:
            raise RequestsBusy(
                f"no slot in the account's request budget within {wait:g} s "
                f"(the next in {slot.wait:.1f} s)"
            )
        if slot.wait > 0:
            time.sleep(slot.wait)
        return slot.wait

    def pushed_back(self, until_epoch: float) -> None:
        """The carrier answered 429: no non-create request until ``until_epoch``."""
        self._pacer().hold(until_epoch, hold_key=REQUESTS_HOLD)
