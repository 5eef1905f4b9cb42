"""Fleet-wide pacing: the share arithmetic, and GCRA slots in a real Redis."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from dialer.dev.fleet import RedisServer
from dialer.policy import pacing


def test_shares_follow_each_campaigns_cps() -> None:
    assert pacing.fair_shares(20, {1: 10, 2: 30}) == {1: 5, 2: 15}


def test_uncapped_campaigns_split_the_account_evenly() -> None:
    assert pacing.fair_shares(30, {1: None, 2: None, 3: None}) == {1: 10, 2: 10, 3: 10}


def test_what_a_capped_campaign_leaves_goes_to_the_others() -> None:
    shares = pacing.fair_shares(20, {1: 2, 2: None})
    assert shares[1] == pytest.approx(20 * 2 / 22)
    shares = pacing.fair_shares(20, {1: 5, 2: 5, 3: None})
    assert shares[1] == shares[2] == pytest.approx(20 * 5 / 30)
    assert sum(pacing.fair_shares(20, {1: 5, 2: 100}).values()) == pytest.approx(20)
    assert pacing.fair_shares(20, {1: 5, 2: 5}) == {1: 5, 2: 5}, "never above its own --cps"


def test_limits_take_every_rate_with_the_margin() -> None:
    limits = pacing.limits_for(
        account_cps=10, number_cps=1, from_number="+1919", campaign_id=7, campaign_cps=5
    )
    assert [lim.key for lim in limits] == [
        "dialer:pace:account",
        "dialer:pace:from:+1919",
        "dialer:pace:campaign:7",
    ]
    assert [lim.rate for lim in limits] == pytest.approx([9.9, 0.98, 4.95])
    assert (
        len(
            pacing.limits_for(
                account_cps=10, number_cps=1, from_number="+1", campaign_id=7, campaign_cps=None
            )
        )
        == 2
    )


def test_release_budget_counts_backlog_and_concurrency() -> None:
    assert pacing.release_budget(5, 2.0, backlog=0, room=None) == 10
    assert pacing.release_budget(5, 2.0, backlog=4, room=None) == 6
    assert pacing.release_budget(5, 2.0, backlog=0, room=3) == 3
    assert pacing.release_budget(5, 2.0, backlog=20, room=-2) == 0


def test_release_budget_counts_the_slots_from_the_next_free_one() -> None:
    assert pacing.release_budget(5, 2.0, backlog=0, room=None, wait=1.0) == 5
    # A small share: its next slot 1.5 s away is released now; one 2 s away or more is not.
    assert pacing.release_budget(0.1, 2.0, backlog=0, room=None, wait=1.5) == 1
    assert pacing.release_budget(0.1, 2.0, backlog=0, room=None, wait=2.0) == 0
    assert pacing.release_budget(0.1, 2.0, backlog=0, room=None, wait=9.0) == 0
    assert pacing.release_budget(0.1, 2.0, backlog=1, room=None, wait=0.0) == 0


def test_only_a_share_of_the_account_lets_a_late_call_keep_its_place() -> None:
    def limits(cps: float | None, share: float | None) -> list[pacing.Limit]:
        return pacing.limits_for(
            account_cps=10, number_cps=10, from_number="+1", campaign_id=3,
            campaign_cps=cps, share=share,
        )  # fmt: skip

    account, number, campaign = limits(2, 0.5)
    assert account.credit == number.credit == 0, "the carrier's limits stay strict"
    assert campaign.rate == pytest.approx(0.495), "the share sets the campaign's pace"
    assert campaign.credit == pytest.approx(pacing.CAMPAIGN_CREDIT / campaign.rate)
    assert limits(None, 0.5)[2].credit > 0, "no --cps: a split of the account too"
    assert limits(2, 2)[2].credit == 0, "capped at its own --cps: held to it strictly"
    assert limits(2, None)[2].credit == 0, "no share set: its own --cps, strictly"
    assert len(limits(None, None)) == 2


@pytest.fixture
def backend(redis_server: RedisServer) -> pacing.RedisBackend:
    client = redis.Redis.from_url(redis_server.url)
    client.delete(*(client.keys("dialer:pace:*") or ["x"]))
    return pacing.RedisBackend(client)


@pytest.mark.parametrize("backend_kind", ["redis", "local"])
def test_slots_from_many_threads_are_evenly_spaced(backend, backend_kind) -> None:
    b = backend if backend_kind == "redis" else pacing.LocalBackend()
    limits = [pacing.Limit("dialer:pace:t:account", 50.0), pacing.Limit("dialer:pace:t:c", 40.0)]
    slots: list[float] = []
    lock = threading.Lock()
    # The slots start 2 s from now (a hold, as after a 429), so every reservation is made
    # before its slot: a thread starved of CPU for a while (CI on two cores) cannot open
    # a gap the backend did not choose, and the spacing is the backend's alone.
    start = time.time() + 2.0
    b.hold(start)

    def take(n: int) -> None:
        for _ in range(n):
            r = b.reserve(limits, max_wait=10.0)
            assert r.reserved
            with lock:
                # The slot as the backend reserved it: the client's clock read after
                # the reply would add this thread's scheduling delay to it.
                slots.append(r.at)

    threads = [threading.Thread(target=take, args=(15,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort()
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert len(slots) == 60
    assert slots[0] == pytest.approx(start, abs=0.001)
    # The tightest rate (40/s) spaces every slot; a little slack for clock reads.
    assert min(gaps) > 1 / 40 - 0.004
    assert (slots[-1] - slots[0]) == pytest.approx(59 / 40, abs=0.02)


def test_a_slot_too_far_away_is_not_taken(backend) -> None:
    limits = [pacing.Limit("dialer:pace:t:slow", 1.0)]
    assert backend.reserve(limits, max_wait=0.5).reserved
    far = backend.reserve(limits, max_wait=0.5)
    assert not far.reserved and far.wait == pytest.approx(1.0, abs=0.05)
    near = backend.reserve(limits, max_wait=2.0)
    assert near.reserved and near.wait == pytest.approx(1.0, abs=0.05), "nothing was taken"


def test_hold_stops_every_sender_until_it_lifts(backend) -> None:
    backend.hold(time.time() + 0.8)
    r = backend.reserve([pacing.Limit("dialer:pace:t:h", 100.0)], max_wait=5.0)
    assert r.reserved and 0.7 < r.wait < 0.9


def test_a_thousand_shares_are_set_at_once_each_with_its_ttl(backend) -> None:
    shares = {cid: cid / 7 for cid in range(1, 1001)}
    backend.set_shares(shares)
    backend.set_shares({})  # nothing to set: no command
    client = backend._client
    assert [backend.share(cid) for cid in shares] == list(shares.values()), "exact, as repr"
    ttls = {client.ttl(f"dialer:pace:share:{cid}") for cid in (1, 500, 1000)}
    assert ttls <= set(range(1, pacing.SHARE_TTL + 1)), ttls


@pytest.mark.parametrize("backend_kind", ["redis", "local"])
def test_a_late_slot_keeps_its_place_within_the_keys_credit(backend, backend_kind) -> None:
    b = backend if backend_kind == "redis" else pacing.LocalBackend()
    kept = [pacing.Limit("dialer:pace:t:kept", 1.0, credit=0.5)]
    strict = [pacing.Limit("dialer:pace:t:strict", 1.0)]
    for limits in (kept, strict):
        assert b.reserve(limits, max_wait=5.0).wait == 0
    time.sleep(1.3)  # the second calls come 0.3 s after their slots
    for limits in (kept, strict):
        assert b.reserve(limits, max_wait=5.0).wait == 0
    # The strict schedule goes on from the late call; the kept one gives the lateness
    # back, up to half an interval: no two calls closer than that.
    assert b.reserve(kept, max_wait=5.0).wait == pytest.approx(0.5, abs=0.08)
    assert b.reserve(strict, max_wait=5.0).wait == pytest.approx(1.0, abs=0.08)
    fresh = [pacing.Limit("dialer:pace:t:fresh", 1.0, credit=0.5)]
    assert b.reserve(fresh, max_wait=5.0).wait == 0
    assert b.reserve(fresh, max_wait=5.0).wait == pytest.approx(0.5, abs=0.08)
    assert b.reserve(fresh, max_wait=5.0).wait == pytest.approx(1.5, abs=0.08)


@pytest.mark.parametrize("backend_kind", ["redis", "local"])
def test_waits_say_when_each_campaigns_next_slot_is_free(backend, backend_kind) -> None:
    b = backend if backend_kind == "redis" else pacing.LocalBackend()
    assert b.waits([]) == {}
    slow = pacing.limits_for(
        account_cps=100, number_cps=100, from_number="+1", campaign_id=1, campaign_cps=0.5
    )  # its own --cps: a strict pace
    assert b.reserve(slow, max_wait=1.0).reserved
    waits = b.waits([1, 2])
    assert waits[1] == pytest.approx(2 / pacing.PACE_MARGIN, abs=0.05), "its own pace"
    assert waits[2] == pytest.approx(1 / 99, abs=0.02), "the account's next slot"
    b.hold(time.time() + 0.5)
    assert b.waits([2])[2] == pytest.approx(0.5, abs=0.05), "a hold holds everyone"


@pytest.mark.parametrize("backend_kind", ["redis", "local"])
def test_a_lock_has_one_holder_until_unlocked_or_expired(backend, backend_kind) -> None:
    b = backend if backend_kind == "redis" else pacing.LocalBackend()
    token = b.try_lock("t", 0.3)
    assert token is not None and b.try_lock("t", 0.3) is None
    b.unlock("t", "another holder's token")
    assert b.try_lock("t", 0.3) is None, "only its holder unlocks it"
    b.unlock("t", token)
    assert (again := b.try_lock("t", 0.3)) is not None
    time.sleep(0.4)  # its holder was lost: the lease runs out
    assert b.try_lock("t", 0.3) is not None
    b.unlock("t", again)  # too late: harmless


@pytest.mark.parametrize("backend_kind", ["redis", "local"])
def test_shares_of_many_campaigns_in_one_read(backend, backend_kind) -> None:
    b = backend if backend_kind == "redis" else pacing.LocalBackend()
    b.set_shares({1: 0.5, 3: 2.0})
    assert b.shares([1, 2, 3]) == {1: 0.5, 2: None, 3: 2.0}
    assert b.shares([]) == {}


def test_shares_expire_without_a_tick(backend) -> None:
    backend.set_shares({5: 2.5})
    assert backend.share(5) == 2.5 and backend.share(6) is None


@pytest.mark.parametrize("kind", ["redis", "local"])
def test_a_late_send_goes_only_if_the_numbers_next_slot_is_not_booked(
    kind: str, redis_server: RedisServer
) -> None:
    if kind == "redis":
        client = redis.Redis(port=redis_server.port, db=9)
        client.flushdb()
        b: pacing.Backend = pacing.RedisBackend(client)
    else:
        b = pacing.LocalBackend()
    number = pacing.Limit(pacing.number_key("+19195550001"), 1.0)
    first = b.reserve([number], 2.0)
    # Nobody booked the next slot: the late send goes and the next is an interval later.
    assert b.late(number, first.at)
    after = b.number_waits(["+19195550001"])["+19195550001"]
    assert 0.75 < after <= 1.0  # an interval after the late send (less the time since)
    # The next slot is booked; a late send of the first slot must not go now.
    second = b.reserve([number], 2.0)
    assert second.reserved
    assert not b.late(number, first.at)
    assert b.late(number, second.at)


def test_number_waits_read_every_pool_number_at_once(backend: pacing.RedisBackend) -> None:
    numbers = ["+19195550001", "+19195550002"]
    backend.reserve([pacing.Limit(pacing.number_key(numbers[0]), 1.0)], 1.0)
    waits = backend.number_waits(numbers)
    assert 0.75 < waits[numbers[0]] <= 1.0
    assert waits[numbers[1]] == 0.0
