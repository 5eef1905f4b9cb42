"""Which pool number calls: local presence tiers, then the soonest slot, evenly."""

from __future__ import annotations

from collections import Counter

from dialer.policy.callerids import area_code, choose, region_of, tiers

RALEIGH, CHARLOTTE, NYC, ALBANY = "+19195550001", "+17045550002", "+12125550003", "+15185550004"
POOL = [RALEIGH, CHARLOTTE, NYC, ALBANY]


def test_area_code_and_region() -> None:
    assert area_code("+19195551212") == "919"
    assert area_code("+442071234567") is None
    # The geocoder names some states whole and others by city: both come back as codes.
    assert region_of("+19195551212") == region_of("+17045551212") == "NC"
    assert region_of("+12125551212") == region_of("+15185551212") == "NY"


def test_local_presence_prefers_area_code_then_state_then_any() -> None:
    assert tiers(POOL, "+19195559999", True) == [[RALEIGH], [CHARLOTTE], [NYC, ALBANY]]
    # No number in 984 (Raleigh's overlay): the state's numbers come first.
    assert tiers(POOL, "+19845559999", True) == [[RALEIGH, CHARLOTTE], [NYC, ALBANY]]
    # Nothing in common: the whole pool.
    assert tiers(POOL, "+13125559999", True) == [POOL]
    # Off: one tier.
    assert tiers(POOL, "+19195559999", False) == [POOL]


def test_choose_takes_the_soonest_within_the_first_tier() -> None:
    waits = {RALEIGH: 0.9, CHARLOTTE: 0.0, NYC: 0.0, ALBANY: 0.0}
    # Local presence: Raleigh, though it is the busiest.
    assert choose(POOL, "+19195559999", True, waits) == RALEIGH
    # Without: never the one that waits longest.
    assert choose(POOL, "+19195559999", False, waits) != RALEIGH
    assert choose(POOL, "+19195559999", False, {**waits, NYC: 0.1, ALBANY: 0.2}) == CHARLOTTE


def test_numbers_all_free_share_the_calls_evenly() -> None:
    picks = Counter(choose(POOL, "+13125559999", False, {}) for _ in range(400))
    assert set(picks) == set(POOL) and max(picks.values()) - min(picks.values()) <= 1
