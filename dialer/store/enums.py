"""The statuses of campaigns, contacts and attempts, and call results.

Plain ``StrEnum``s with no dependency, so code that only reads or reports a status
(``dialer.policy.rules``, ``dialer.store.campaign_status`` and with it ``dialer campaign
status``) need not import SQLAlchemy and the models. ``dialer.store.models`` re-exports every name here.
"""

from __future__ import annotations

from enum import StrEnum


class CampaignState(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class ContactStatus(StrEnum):
    PENDING = "pending"
    DIALING = "dialing"
    ANSWERED = "answered"
    UNANSWERED = "unanswered"
    FAILED = "failed"
    INVALID = "invalid"
    DUPLICATE = "duplicate"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"


FINAL_CONTACT = frozenset(ContactStatus) - {ContactStatus.PENDING, ContactStatus.DIALING}


class AttemptStatus(StrEnum):
    QUEUED = "queued"  # released to the workers, not yet claimed
    SENDING = "sending"  # claimed under a lease; the create request may be in flight
    UNKNOWN = "unknown"  # the create request's outcome is ambiguous: reconcile, never resend
    CREATED = "created"  # the carrier returned a call id; ringing
    ANSWERED = "answered"  # talking
    ENDED = "ended"  # final: the call is over, ``result`` says how
    FAILED = "failed"  # final: the carrier refused the request, no call exists
    WITHDRAWN = "withdrawn"  # final: never sent (paused, cancelled, or reconciled as not created)


FINAL_ATTEMPT = frozenset({AttemptStatus.ENDED, AttemptStatus.FAILED, AttemptStatus.WITHDRAWN})
# Attempts that hold (or may hold) a live call: what --max-concurrent counts.
LIVE_ATTEMPT = frozenset(
    {AttemptStatus.SENDING, AttemptStatus.UNKNOWN, AttemptStatus.CREATED, AttemptStatus.ANSWERED}
)


class Result(StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    REJECTED = "rejected"
    ERROR = "error"
