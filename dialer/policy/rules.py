"""Rules: what a call's outcome means, and when a contact is dialed again.

A reader asking "when is this number called again?" should find the whole answer here.
The state machine in ``dialer.state`` asks these functions and applies the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from dialer.store.enums import ContactStatus, Result

# Importable without SQLAlchemy or phonenumbers (``dialer campaign status`` uses the
# calling hours): a campaign is only read through its attributes, and phonenumbers is
# imported by the one function that needs it.
if TYPE_CHECKING:
    from dialer.store.models import Campaign

# Hangup causes (docs/carrier.md, "Callback events") -> (result, retryable, permanent).
# A permanent cause fails the contact; a retryable one dials again after --retry-delay
# while attempts remain (docs/interface.md, "Retry policy"); CALL_REJECTED is neither.
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
    once the carrier's own record of the call confirms it (``dialer.state.events`` holds
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
    ready_at: datetime | None = None  # set when the calling window pushed due_at later
    reason: str | None = None


def after_attempt(
    campaign: Campaign,
    calls_made: int,
    result: Outcome,
    now: datetime,
    *,
    cancelled: bool,
    zones: str | None = None,
) -> Next:
    """Decide a contact's next status once an attempt on it has ended.

    ``calls_made`` counts the calls the carrier created for this contact so far,
    including the one that just ended; ``zones`` is the contact's time-zone key.
    """
    if result.result is Result.ANSWERED:
        return Next(ContactStatus.ANSWERED)
    if result.permanent:
        return Next(ContactStatus.FAILED, reason=f"carrier: {result.cause}")
    if cancelled:
        return Next(ContactStatus.CANCELLED, reason="campaign cancelled")
    if result.retryable and calls_made < campaign.max_attempts:
        due = when_due(campaign, zones, retry_at(campaign, now))
        return Next(ContactStatus.PENDING, due_at=due.due_at, ready_at=due.ready_at)
    return Next(ContactStatus.UNANSWERED)


def retry_at(campaign: Campaign, now: datetime) -> datetime:
    """When a retry is ready: --retry-delay seconds after the attempt ended (and then
    not before the recipient's next calling window opens: ``when_due``)."""
    return now + timedelta(seconds=campaign.retry_delay)


# Back-off for create requests that provably created nothing (500, 503, refused
# connections): not an attempt on the person, so it does not count against
# --max-attempts. Doubles per try, capped.
def resend_delay(sends: int) -> float:
    return min(2.0 * 2 ** max(sends - 1, 0), 120.0)


# ------------------------------------------------------------------ calling hours
#
# --window HH:MM-HH:MM and --days hold in the recipient's own time: the zones
# phonenumbers gives for the number, all of them at once when there are several, and
# the campaign's --timezone when there are none (SIP URIs, unknown prefixes). A window
# whose end is before its start runs past midnight and belongs to the day it starts.

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)$")
_LOOKAHEAD_DAYS = 15  # a weekly pattern repeats in 7; DST shifts need a few more


class RuleError(ValueError):
    """A window, day list, time zone or schedule that cannot be understood."""


@dataclass(frozen=True)
class Hours:
    """When calls may be made, in local time: minutes of the day and ISO weekdays (0=mon)."""

    start: int
    end: int
    days: frozenset[int]

    @classmethod
    def parse(cls, window: str | None, days: str | None) -> Hours | None:
        """None when neither is set: any time is calling time."""
        if not window and not days:
            return None
        start, end = 0, 24 * 60
        if window:
            m = _WINDOW.match(window.strip())
            if m is None or (m.group(3) == "24" and m.group(4) != "00"):
                raise RuleError(f"--window must look like 09:00-17:30, got {window!r}")
            start = int(m.group(1)) * 60 + int(m.group(2))
            end = int(m.group(3)) * 60 + int(m.group(4))
            if start == end:
                raise RuleError(f"--window {window!r} is empty: start and end are the same")
        return cls(start, end, parse_days(days) if days else frozenset(range(7)))

    def open_local(self, local: datetime) -> bool:
        """Whether a local wall-clock time is inside the calling hours."""
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        # Past midnight: the evening part on an allowed day, or the morning after one.
        return (day in self.days and minute >= self.start) or (
            (day - 1) % 7 in self.days and minute < self.end
        )


def parse_days(days: str) -> frozenset[int]:
    """``mon-fri``, ``sat,sun``, ``mon,wed-fri``, ``fri-mon`` (wrapping) -> weekday numbers."""
    out: set[int] = set()
    for part in days.lower().replace(" ", "").split(","):
        names = part.split("-")
        if not 1 <= len(names) <= 2 or any(n not in DAY_NAMES for n in names):
            raise RuleError(
                f"--days must be day names (mon..sun) joined by , and -, "
                f"like mon-fri or sat,sun; got {days!r}"
            )
        first = DAY_NAMES.index(names[0])
        last = DAY_NAMES.index(names[-1])
        out.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return frozenset(out)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise RuleError(
            f"--timezone must be an IANA zone like America/New_York, got {name!r}"
        ) from None


def _lookup_zones(digits: str) -> str | None:
    import phonenumbers
    from phonenumbers import timezone as phone_timezone

    try:
        number = phonenumbers.parse(digits)
    except phonenumbers.NumberParseException:
        return None
    names = sorted(set(phone_timezone.time_zones_for_number(number)) - {"Etc/Unknown"})
    return " ".join(names) or None


_zone_key = lru_cache(maxsize=4096)(_lookup_zones)


def zones_for(address: str) -> str | None:
    """The time zones of a number as a key (names sorted, space-separated); None when
    phonenumbers does not know them (or a SIP URI): the campaign's --timezone applies.

    NANP time zones are decided by the first seven digits (+1 NPA NXX), so those are
    cached by prefix; a million US numbers cost a few thousand look-ups.
    """
    if not address.startswith("+"):
        return None
    if address.startswith("+1") and len(address) == 12:
        return _zone_key(address[:8] + "0000")
    return _lookup_zones(address)


def _zones(key: str | None, fallback: str) -> tuple[ZoneInfo, ...]:
    return tuple(ZoneInfo(n) for n in (key.split() if key else [fallback]))


def is_open(hours: Hours | None, zones: Iterable[ZoneInfo], at: datetime) -> bool:
    """Whether ``at`` is inside the calling hours in every one of ``zones``."""
    return hours is None or all(hours.open_local(at.astimezone(z)) for z in zones)


def next_opening(hours: Hours | None, zones: Iterable[ZoneInfo], at: datetime) -> datetime | None:
    """The first moment at or after ``at`` when the hours hold in every zone; None if
    they never do (zones so far apart that no local window overlaps)."""
    zones = tuple(zones)
    if is_open(hours, zones, at):
        return at
    assert hours is not None
    start = time(hours.start // 60, hours.start % 60)
    candidates = []
    for z in zones:
        today = at.astimezone(z).date()
        for offset in range(-1, _LOOKAHEAD_DAYS):
            day = today + timedelta(days=offset)
            if day.weekday() not in hours.days:
                continue
            opening = _instant(datetime.combine(day, start), z)
            if opening > at:
                candidates.append(opening)
    # Where the windows of several zones overlap, the overlap opens at one zone's start.
    for opening in sorted(candidates):
        if is_open(hours, zones, opening):
            return opening
    return None


def _instant(wall: datetime, z: ZoneInfo) -> datetime:
    """The first moment a zone's clocks show ``wall`` or later, in UTC.

    On a fall-back day a wall time happens twice: the first is taken (fold=0). On a
    spring-forward day a wall time inside the gap never shows: the clocks jump past it,
    so the window opens at the jump, found by bisection between the two readings.
    """
    utc = wall.replace(tzinfo=z).astimezone(UTC)
    if utc.astimezone(z).replace(tzinfo=None) == wall:
        return utc
    lo, hi = wall.replace(tzinfo=z, fold=1).astimezone(UTC), utc
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(z).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0)  # transitions fall on whole seconds


@dataclass(frozen=True)
class Due:
    due_at: datetime  # when the contact may be released to the workers
    ready_at: datetime | None  # when it was ready, if the window pushed it later
    never: bool = False  # the window never holds in all its zones: look again in a day


def when_due(campaign: Campaign, zones: str | None, ready: datetime) -> Due:
    """When a contact that is ready at ``ready`` may be dialed under the campaign's hours."""
    hours = campaign_hours(campaign)
    if hours is None:
        return Due(ready, None)
    opening = next_opening(hours, _zones(zones, campaign.timezone or "UTC"), ready)
    if opening is None:
        return Due(ready + timedelta(days=1), ready, never=True)
    return Due(opening, ready if opening > ready else None)


def campaign_hours(campaign: Campaign) -> Hours | None:
    return _hours(campaign.window, campaign.days)


@lru_cache(maxsize=256)
def _hours(window: str | None, days: str | None) -> Hours | None:
    return Hours.parse(window, days)


def contact_zones(campaign: Campaign, zones: str | None) -> tuple[ZoneInfo, ...]:
    return _zones(zones, campaign.timezone or "UTC")


# ----------------------------------------------------------------- recurring runs
#
# --schedule is a five-field cron expression in the campaign's --timezone (cronsim:
# small, maintained, and follows cron's own rules on DST days).


def check_schedule(expr: str, tz: str) -> None:
    if len(expr.split()) != 5:
        raise RuleError(f"--schedule must be a five-field cron expression, got {expr!r}")
    try:
        CronSim(expr, datetime.now(zone(tz)))
    except CronSimError as exc:
        raise RuleError(f"--schedule {expr!r} is not a valid cron expression: {exc}") from None


def next_run(expr: str, tz: str, after: datetime) -> datetime:
    """The first occurrence strictly after ``after``, in UTC."""
    local = after.astimezone(zone(tz)).replace(microsecond=0)
    return next(iter(CronSim(expr, local))).astimezone(UTC)


def last_run(expr: str, tz: str, at: datetime) -> datetime:
    """The latest occurrence at or before ``at``, in UTC."""
    local = (at.astimezone(zone(tz)) + timedelta(seconds=1)).replace(microsecond=0)
    return next(iter(CronSim(expr, local, reverse=True))).astimezone(UTC)
