"""Calling hours, time zones and schedules, on a fixed clock (no database, no sleeping).

Every instant is written in UTC, with the local time it means beside it, so a reader
can check the arithmetic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from dialer.policy import rules
from dialer.store.models import ContactStatus, Result

NEW_YORK = "+12125551234"
LOS_ANGELES = "+13105551234"
HONOLULU = "+18085551234"
BOISE_OR_LA = "+12083012345"  # phonenumbers: America/Boise and America/Los_Angeles


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def campaign(**kw: object) -> SimpleNamespace:
    base = dict(
        window="09:00-17:00",
        days="mon-fri",
        timezone="UTC",
        retry_delay=600,
        max_attempts=3,
        schedule=None,
    )
    return SimpleNamespace(**(base | kw))


def opens(number: str, at: datetime, **kw: object) -> datetime | None:
    c = campaign(**kw)
    hours = rules.Hours.parse(c.window, c.days)
    return rules.next_opening(hours, rules.contact_zones(c, rules.zones_for(number)), at)


def is_open(number: str, at: datetime, **kw: object) -> bool:
    return opens(number, at, **kw) == at


# ------------------------------------------------------------------------ parsing


def test_days_accept_ranges_lists_and_wrapping_ranges() -> None:
    assert rules.parse_days("mon-fri") == {0, 1, 2, 3, 4}
    assert rules.parse_days("sat,sun") == {5, 6}
    assert rules.parse_days("mon,wed-fri") == {0, 2, 3, 4}
    assert rules.parse_days("fri-mon") == {4, 5, 6, 0}
    assert rules.parse_days("SUN") == {6}


@pytest.mark.parametrize(
    ("window", "days", "message"),
    [
        ("9-5", None, "--window must look like 09:00-17:30"),
        ("09:00-24:30", None, "--window must look like"),
        ("10:00-10:00", None, "empty"),
        (None, "mon-fry", "--days must be day names"),
        (None, "mon--fri", "--days must be day names"),
    ],
)
def test_bad_rules_name_the_option(window: str | None, days: str | None, message: str) -> None:
    with pytest.raises(rules.RuleError, match=message):
        rules.Hours.parse(window, days)


def test_no_window_and_no_days_means_any_time() -> None:
    assert rules.Hours.parse(None, None) is None
    assert is_open(NEW_YORK, utc(2026, 11, 29, 8, 0), window=None, days=None)  # Sun 03:00


def test_zones_come_from_the_number_and_unknown_falls_back() -> None:
    assert rules.zones_for(NEW_YORK) == "America/New_York"
    assert rules.zones_for(HONOLULU) == "Pacific/Honolulu"
    assert rules.zones_for(BOISE_OR_LA) == "America/Boise America/Los_Angeles"
    assert rules.zones_for("sip:someone@example.com") is None
    c = campaign(timezone="Europe/Paris")
    assert [z.key for z in rules.contact_zones(c, None)] == ["Europe/Paris"]


def test_schedules_must_have_five_valid_fields() -> None:
    rules.check_schedule("0 10 * * mon-fri", "America/New_York")
    with pytest.raises(rules.RuleError, match="five-field"):
        rules.check_schedule("0 0 10 * * *", "UTC")
    with pytest.raises(rules.RuleError, match="not a valid cron"):
        rules.check_schedule("61 10 * * *", "UTC")


# ------------------------------------------------------------------- window edges

# Friday 27 November 2026: New York UTC-5, Los Angeles UTC-8, Honolulu UTC-10.


@pytest.mark.parametrize(
    ("number", "first_open", "first_shut"),
    [
        (NEW_YORK, utc(2026, 11, 27, 14, 0), utc(2026, 11, 27, 22, 0)),
        (LOS_ANGELES, utc(2026, 11, 27, 17, 0), utc(2026, 11, 28, 1, 0)),
        (HONOLULU, utc(2026, 11, 27, 19, 0), utc(2026, 11, 28, 3, 0)),
    ],
)
def test_window_edges_in_the_recipients_own_time(
    number: str, first_open: datetime, first_shut: datetime
) -> None:
    second = timedelta(seconds=1)
    assert not is_open(number, first_open - second)
    assert opens(number, first_open - second) == first_open
    assert is_open(number, first_open)
    assert is_open(number, first_shut - second)
    assert not is_open(number, first_shut)
    # Friday's window shut: the next is Monday's, at the same local time.
    assert opens(number, first_shut) == first_open + timedelta(days=3)


def test_a_number_in_several_zones_waits_until_the_window_holds_in_all() -> None:
    # Boise UTC-7, Los Angeles UTC-8: 09:00-17:00 in both is 17:00-24:00 UTC.
    assert not is_open(BOISE_OR_LA, utc(2026, 11, 27, 16, 30))  # Boise 09:30, LA 08:30
    assert opens(BOISE_OR_LA, utc(2026, 11, 27, 16, 30)) == utc(2026, 11, 27, 17, 0)
    assert is_open(BOISE_OR_LA, utc(2026, 11, 27, 23, 59))  # Boise 16:59, LA 15:59
    assert not is_open(BOISE_OR_LA, utc(2026, 11, 28, 0, 0))  # Boise 17:00
    assert opens(BOISE_OR_LA, utc(2026, 11, 28, 0, 0)) == utc(2026, 11, 30, 17, 0)


def test_zones_that_never_overlap_give_no_opening() -> None:
    hours = rules.Hours.parse("09:00-10:00", None)
    far = rules.contact_zones(campaign(), "Pacific/Kiritimati Pacific/Pago_Pago")  # 25 h apart
    assert rules.next_opening(hours, far, utc(2026, 11, 27, 0, 0)) is None
    due = rules.when_due(
        campaign(window="09:00-10:00", days=None),
        far[0].key + " Pacific/Pago_Pago",
        utc(2026, 11, 27),
    )
    assert due.never and due.due_at == utc(2026, 11, 28)


def test_a_window_past_midnight_belongs_to_the_day_it_starts() -> None:
    kw = dict(window="22:00-02:00", days="fri", timezone="UTC")
    sip = "sip:a@example.com"  # the campaign's zone: UTC
    assert is_open(sip, utc(2026, 11, 27, 23, 0), **kw)  # Fri 23:00
    assert is_open(sip, utc(2026, 11, 28, 1, 59), **kw)  # Sat 01:59, Friday's window
    assert not is_open(sip, utc(2026, 11, 28, 2, 0), **kw)
    assert not is_open(sip, utc(2026, 11, 28, 23, 0), **kw)  # Saturday's own: not allowed
    assert opens(sip, utc(2026, 11, 28, 2, 0), **kw) == utc(2026, 12, 4, 22, 0)


# ------------------------------------------------------------------------ DST days


def test_spring_forward_moves_the_opening_an_hour_earlier_in_utc() -> None:
    # Sunday 8 March 2026, 02:00 EST -> 03:00 EDT. Honolulu keeps no DST.
    kw = dict(days="mon-sun")
    assert opens(NEW_YORK, utc(2026, 3, 7, 12, 0), **kw) == utc(2026, 3, 7, 14, 0)  # EST
    assert opens(NEW_YORK, utc(2026, 3, 7, 22, 0), **kw) == utc(2026, 3, 8, 13, 0)  # EDT
    assert opens(HONOLULU, utc(2026, 3, 8, 4, 0), **kw) == utc(2026, 3, 8, 19, 0)
    assert not is_open(NEW_YORK, utc(2026, 3, 8, 21, 0), **kw)  # 17:00 EDT: shut


def test_fall_back_moves_the_opening_an_hour_later_in_utc() -> None:
    # Sunday 1 November 2026, 02:00 EDT -> 01:00 EST.
    kw = dict(days="mon-sun")
    assert opens(NEW_YORK, utc(2026, 10, 31, 12, 0), **kw) == utc(2026, 10, 31, 13, 0)  # EDT
    assert opens(NEW_YORK, utc(2026, 10, 31, 22, 0), **kw) == utc(2026, 11, 1, 14, 0)  # EST
    assert is_open(NEW_YORK, utc(2026, 11, 1, 21, 59), **kw)  # 16:59 EST


def test_a_window_starting_inside_the_spring_gap_opens_at_the_jump() -> None:
    # 02:30 never shows on 8 March in New York: the clocks go 01:59:59 -> 03:00.
    kw = dict(window="02:30-04:00", days=None)
    assert opens(NEW_YORK, utc(2026, 3, 8, 6, 0), **kw) == utc(2026, 3, 8, 7, 0)
    # On the fall-back day 02:30 shows once (EST), an hour later in UTC than on the day before.
    assert opens(NEW_YORK, utc(2026, 10, 31, 12, 0), **kw) == utc(2026, 11, 1, 7, 30)


# ------------------------------------------------------------------------- retries


def test_a_retry_that_would_land_after_hours_moves_to_the_next_opening() -> None:
    c = campaign(retry_delay=3600, timezone="America/New_York")
    busy = rules.outcome(answered=False, timed_out=False, hangup_cause="USER_BUSY")
    ended = utc(2026, 11, 27, 21, 30)  # Friday 16:30 in New York; ready at 17:30
    step = rules.after_attempt(c, 1, busy, ended, cancelled=False, zones="America/New_York")
    assert step.status is ContactStatus.PENDING
    assert step.due_at == utc(2026, 11, 30, 14, 0)  # Monday 09:00
    assert step.ready_at == utc(2026, 11, 27, 22, 30)
    # Inside the window, the retry is simply --retry-delay later.
    early = rules.after_attempt(c, 1, busy, utc(2026, 11, 27, 15), cancelled=False, zones=None)
    assert early.due_at == utc(2026, 11, 27, 16) and early.ready_at is None
    assert busy.result is Result.BUSY


# ----------------------------------------------------------------------- schedules


def test_schedule_occurrences_follow_the_campaign_zone_across_dst() -> None:
    expr, tz = "0 10 * * *", "America/New_York"
    assert rules.next_run(expr, tz, utc(2026, 3, 7, 16, 0)) == utc(2026, 3, 8, 14, 0)  # EDT
    assert rules.next_run(expr, tz, utc(2026, 3, 6, 16, 0)) == utc(2026, 3, 7, 15, 0)  # EST
    # The latest occurrence at or before a moment, for a run started late.
    assert rules.last_run(expr, tz, utc(2026, 3, 10, 12, 0)) == utc(2026, 3, 9, 14, 0)
    assert rules.last_run(expr, tz, utc(2026, 3, 9, 14, 0)) == utc(2026, 3, 9, 14, 0)
