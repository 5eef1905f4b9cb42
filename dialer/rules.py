"""Rules: what a call's outcome means, and when a contact is dialed again.

A reader asking "when is this number called again?" should find the whole answer here.
The state machine in ``dialer.attempts`` asks these functions and applies the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from dialer.models import Campaign, ContactStatus, Result

# Hangup causes (catapult-v1.md, "Callback events") -> (result, retryable, permanent).
# A permanent cause fails the contact; a retryable one dials again after --retry-delay
# while attempts remain (interface.md, "Retry policy"); CALL_REJECTED is neither.
_CAUSES: dict[str, tuple[Result, bool, bool]] = {
    "USER_BUSY": (Result.BUSY, True, False),
    "NO_ANSWER": (Result.NO_ANSWER, True, False),
    # The platform cancels an unanswered call itself at callTimeout.
    "ORIGINATOR_CANCEL": (Result.NO_ANSWER, True, False),
    "CALL_REJECTED": (Result.REJECTED, False, False),
    "UNALLOCATED_NUMBER": (Result.ERROR, False, True),
    "NORMAL_TEMPORARY_FAILURE": (Result.ERROR, True, False),
    "NORMAL_CIRCUIT_CONGESTION": (Result.ERROR, True, False),
    "SWITCH_CONGESTION": (Result.ERROR, True, False),
    "NORMAL_UNSPECIFIED": (Result.ERROR, True, False),
    "UNSPECIFIED": (Result.ERROR, True, False),
}


@dataclass(frozen=True)
class Outcome:
    result: Result
    cause: str | None
    retryable: bool
    permanent: bool = False


def outcome(*, answered: bool, timed_out: bool, hangup_cause: str | None) -> Outcome:
    """The outcome of a call from the facts its events established, in any order.

    It depends only on the set of facts, never on the order they arrived in, so a
    hangup before its answer, a timeout after its hangup, or an event twice all give the
    clean sequence's result. An answer wins over everything; a timeout means no answer.
    A hangup with NORMAL_CLEARING and no answer seen is counted as no answer, but only
    once the carrier's own record of the call confirms it (``dialer.attempts`` holds
    it until then); an answer that arrives later still upgrades the result.
    """
    cause = hangup_cause
    if answered:
        return Outcome(Result.ANSWERED, cause, retryable=False)
    if timed_out:
        return Outcome(Result.NO_ANSWER, cause, retryable=True)
    if cause is None or cause == "NORMAL_CLEARING":
        return Outcome(Result.NO_ANSWER, cause, retryable=True)
    # Anything not in the documented list is an internal error: retry it like one.
    result, retryable, permanent = _CAUSES.get(cause, (Result.ERROR, True, False))
    return Outcome(result, cause, retryable=retryable, permanent=permanent)


@dataclass(frozen=True)
class Next:
    """What becomes of a contact after an attempt: a final status, or a retry at ``due_at``."""

    status: ContactStatus
    due_at: datetime | None = None
    reason: str | None = None


def after_attempt(
    campaign: Campaign, calls_made: int, result: Outcome, now: datetime, *, cancelled: bool
) -> Next:
    """Decide a contact's next status once an attempt on it has ended.

    ``calls_made`` counts the calls the carrier created for this contact so far,
    including the one that just ended.
    """
    if result.result is Result.ANSWERED:
        return Next(ContactStatus.ANSWERED)
    if result.permanent:
        return Next(ContactStatus.FAILED, reason=f"carrier: {result.cause}")
    if cancelled:
        return Next(ContactStatus.CANCELLED, reason="campaign cancelled")
    if result.retryable and calls_made < campaign.max_attempts:
        return Next(ContactStatus.PENDING, due_at=retry_at(campaign, now))
    return Next(ContactStatus.UNANSWERED)


def retry_at(campaign: Campaign, now: datetime) -> datetime:
    """When a retry is due: --retry-delay seconds after the attempt ended."""
    return now + timedelta(seconds=campaign.retry_delay)


# Back-off for create requests that provably created nothing (500, 503, refused
# connections): not an attempt on the person, so it does not count against
# --max-attempts. Doubles per try, capped.
def resend_delay(sends: int) -> float:
    return min(2.0 * 2 ** max(sends - 1, 0), 120.0)
