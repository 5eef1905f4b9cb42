"""Fleet-wide pacing: calls per second held across every worker, in Redis.

Celery's ``rate_limit`` is per worker (docs/field-notes.md, "Fleet-wide rate limits"), so the
limit lives in Redis and is taken at the moment of sending. Each limit (the account,
the ``from`` number, the campaign) is a GCRA schedule with no burst: a send reserves
the next free slot on every key at once, so calls come evenly spaced at the tightest
rate and no one-second window holds more than the rate plus one. The script reads the
clock from Redis (``TIME``), so workers on machines with skewed clocks agree.

Why a dozen lines of Lua and not a library: ``limits`` and ``pyrate-limiter`` answer
"allowed now?" rather than "when is my slot?", so a worker would poll Redis until it
got one; a GCRA reservation tells a worker exactly how long to wait, reserves several
keys atomically, and never spins.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

# KEYS: the limit keys, then the hold key. ARGV: max wait (s), then each key's interval
# (s), then each key's credit (s: how late a slot may be taken and keep its place).
# Returns {reserved (0|1), wait seconds as a string, the slot in epoch seconds as a string}.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS - 1
local slot = math.max(now, tonumber(redis.call('GET', KEYS[#KEYS]) or '0'))
local tats = {}
for i = 1, n do
  tats[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tats[i] > slot then slot = tats[i] end
end
local wait = slot - now
if wait > tonumber(ARGV[1]) then return {0, tostring(wait), string.format('%.6f', slot)} end
for i = 1, n do
  local nxt = math.max(tats[i], slot - tonumber(ARGV[n + i + 1])) + tonumber(ARGV[i + 1])
  redis.call('SET', KEYS[i], tostring(nxt), 'PX', math.ceil((nxt - now) * 1000) + 60000)
end
return {1, tostring(wait), string.format('%.6f', slot)}
"""

# KEYS: the hold key, then the limit keys. Returns, per limit key, seconds until a slot
# on it and on the hold is free (0: now), as strings.
_WAITS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local base = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
local out = {}
for i = 2, #KEYS do
  out[i - 1] = tostring(math.max(base, tonumber(redis.call('GET', KEYS[i]) or '0')) - now)
end
return out
"""

# KEYS[1]: a number's key. ARGV[1]: the slot taken on it (epoch s), ARGV[2]: its interval.
# A send that comes late goes only if no later slot of the number was reserved since
# (its TAT is still slot + interval), and then pushes the number's next slot to an
# interval after now. Returns 1 (go), 0 (take a new slot).
# Lua's tostring keeps 14 significant digits: an epoch time is stored to ~0.1 ms, so
# "booked since" allows 1 ms (a booked slot is a whole interval later).
_LATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval = tonumber(ARGV[2])
if tat > tonumber(ARGV[1]) + interval + 0.001 then return 0 end
local nxt = math.max(tat, now + interval)
redis.call('SET', KEYS[1], tostring(nxt), 'PX', math.ceil((nxt - now) * 1000) + 60000)
return 1
"""

# KEYS[1]: the hold key. ARGV[1]: epoch seconds until which nobody sends.
_HOLD = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local untl = tonumber(ARGV[1])
if untl > cur then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  redis.call('SET', KEYS[1], tostring(untl), 'PX', math.max(1, math.ceil((untl - now) * 1000)))
end
return 1
"""

# KEYS[1]: a lock. ARGV[1]: the holder's token. Deletes the lock only if still theirs.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: the campaigns' share keys. ARGV: the TTL (s), then each key's rate.
_SET_SHARES = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""

# Every rate is paced 1% under its setting. The carrier averages over a sliding window
# (docs/carrier.md: 10 s); calls sent exactly at the limit can put one call too many in
# a window through a few milliseconds of send jitter, and that call gets a 403.
PACE_MARGIN = 0.99
# A ``from`` number is paced 2% under its setting, and a send more than NUMBER_LATE
# seconds past its slot checks that no later call of the number was booked before it
# goes (``late``): two calls from one number are then always more than a second apart
# at 1 call/s, even on a loaded machine (the tests count each number's busiest second).
NUMBER_MARGIN = 0.98
NUMBER_LATE = 0.01
SHARE_TTL = 5  # seconds a campaign's share of the account lives without a tick renewing it


# How late a call may come and keep its place in its campaign's share of the account,
# in intervals of the share. With 1,000 campaigns a share is a fraction of a call per
# second, its slots seconds apart: a call a busy worker sent 100 ms late put every later
# slot 100 ms later, and the larger shares, with more slots, lost more. The cost: after
# a pause a share's next call may come half an interval early, once. The account and
# number limits are the carrier's, and a campaign's own --cps the user's: no credit.
CAMPAIGN_CREDIT = 0.5


@dataclass(frozen=True)
class Limit:
    key: str
    rate: float  # calls per second
    credit: float = 0.0  # seconds a slot taken late keeps its place (see CAMPAIGN_CREDIT)


@dataclass(frozen=True)
class Reservation:
    reserved: bool
    wait: float  # seconds until the slot (reserved), or until one could be had (not)
    at: float = 0.0  # the slot, epoch seconds on the backend's clock (Redis's TIME)


class Backend(Protocol):
    def reserve(self, limits: list[Limit], max_wait: float, hold_key: str = ...) -> Reservation: ...
    def hold(self, until_epoch: float, hold_key: str = ...) -> None: ...
    def late(self, limit: Limit, slot_at: float) -> bool: ...
    def flag(self, name: str, seconds: float) -> None: ...
    def flagged(self, name: str) -> bool: ...
    def set_shares(self, shares: dict[int, float]) -> None: ...
    def share(self, campaign_id: int) -> float | None: ...
    def shares(self, campaign_ids: list[int]) -> dict[int, float | None]: ...
    def waits(self, campaign_ids: list[int]) -> dict[int, float]: ...
    def number_waits(self, numbers: list[str]) -> dict[str, float]: ...
    def try_lock(self, name: str, seconds: float) -> str | None: ...
    def unlock(self, name: str, token: str) -> None: ...


def limits_for(
    *,
    account_cps: float,
    number_cps: float,
    from_number: str,
    campaign_id: int,
    campaign_cps: float | None,
    share: float | None = None,
) -> list[Limit]:
    """Every rate that applies to one call; the tightest one sets the pace.

    The campaign's limit is its ``share`` of the account when a tick set one (see
    ``fair_shares``), else its own --cps (``campaign_cps``), else there is none. A share
    below the campaign's own --cps is the account's, split: a late call keeps its place
    in it (CAMPAIGN_CREDIT), the account's own limit staying strict. A campaign paced at
    its own --cps is held to it strictly, as the account is.
    """
    limits = [
        Limit(ACCOUNT_KEY, account_cps * PACE_MARGIN),
        Limit(number_key(from_number), number_cps * NUMBER_MARGIN),
    ]
    pace = share or campaign_cps
    if pace:
        rate = pace * PACE_MARGIN
        split = share is not None and (campaign_cps is None or share < campaign_cps)
        credit = CAMPAIGN_CREDIT / rate if split else 0.0
        limits.append(Limit(campaign_key(campaign_id), rate, credit))
    return limits


def campaign_key(campaign_id: int) -> str:
    return f"dialer:pace:campaign:{campaign_id}"


def number_key(from_number: str) -> str:
    """A ``from`` number's pace, shared by every campaign that calls from it."""
    return f"dialer:pace:from:{from_number}"


def fair_shares(account_cps: float, campaigns: dict[int, float | None]) -> dict[int, float]:
    """Each running campaign's share of the account's rate, in proportion to its --cps.

    A campaign without --cps weighs as much as the whole account. A share never exceeds
    the campaign's own --cps, and what a capped campaign leaves is shared among the
    others (water-filling), so the account is used fully and no campaign starves.
    """
    shares: dict[int, float] = {}
    left = dict(campaigns)
    budget = account_cps
    while left:
        total = sum(cps or account_cps for cps in left.values())
        capped = {
            cid: cps for cid, cps in left.items() if cps is not None and budget * cps / total >= cps
        }
        if not capped:
            for cid, cps in left.items():
                shares[cid] = budget * (cps or account_cps) / total
            break
        for cid, cps in capped.items():
            shares[cid] = cps
            budget -= cps
            del left[cid]
        if budget <= 0:
            for cid in left:
                shares[cid] = 0.0
            break
    return shares


class RedisBackend:
    def __init__(self, client: Any) -> None:
        self._client = client
        self._reserve = client.register_script(_RESERVE)
        self._hold = client.register_script(_HOLD)
        self._set_shares = client.register_script(_SET_SHARES)
        self._waits = client.register_script(_WAITS)
        self._unlock = client.register_script(_UNLOCK)
        self._late = client.register_script(_LATE)

    def reserve(
        self, limits: list[Limit], max_wait: float, hold_key: str = "dialer:pace:hold"
    ) -> Reservation:
        keys = [lim.key for lim in limits] + [hold_key]
        args = [max_wait, *(1.0 / lim.rate for lim in limits), *(lim.credit for lim in limits)]
        reserved, wait, at = self._reserve(keys=keys, args=args)
        return Reservation(bool(int(reserved)), max(0.0, float(wait)), float(at))

    def hold(self, until_epoch: float, hold_key: str = "dialer:pace:hold") -> None:
        self._hold(keys=[hold_key], args=[until_epoch])

    def late(self, limit: Limit, slot_at: float) -> bool:
        """A send past its slot ``slot_at`` on ``limit``: True (go now; the limit's next
        slot moves to an interval after now) if no later slot was booked since."""
        return bool(int(self._late(keys=[limit.key], args=[slot_at, 1.0 / limit.rate])))

    def flag(self, name: str, seconds: float) -> None:
        """A marker that lives ``seconds`` (set again: it lives on)."""
        self._client.set(f"dialer:flag:{name}", 1, px=max(1, int(seconds * 1000)))

    def flagged(self, name: str) -> bool:
        return bool(self._client.exists(f"dialer:flag:{name}"))

    def set_shares(self, shares: dict[int, float]) -> None:
        """Every share in one command: a pipeline of a SET each cost the tick 85 µs of
        CPU per running campaign (redis-py encodes and parses each), most of a
        1,000-campaign tick."""
        if shares:
            keys = [f"dialer:pace:share:{cid}" for cid in shares]
            self._set_shares(keys=keys, args=[SHARE_TTL, *map(repr, shares.values())])

    def share(self, campaign_id: int) -> float | None:
        raw = self._client.get(f"dialer:pace:share:{campaign_id}")
        return float(raw) if raw is not None else None

    def shares(self, campaign_ids: list[int]) -> dict[int, float | None]:
        """``share`` of each, in one round trip (a batch may hold many campaigns' calls)."""
        if not campaign_ids:
            return {}
        raws = self._client.mget([f"dialer:pace:share:{cid}" for cid in campaign_ids])
        return {
            cid: float(raw) if raw is not None else None
            for cid, raw in zip(campaign_ids, raws, strict=True)
        }

    def waits(self, campaign_ids: list[int]) -> dict[int, float]:
        """Seconds until each campaign's next slot (its own pace, the account's, a hold)
        is free: one call for every campaign of a tick."""
        if not campaign_ids:
            return {}
        keys = [HOLD_KEY, ACCOUNT_KEY, *map(campaign_key, campaign_ids)]
        account, *each = (float(w) for w in self._waits(keys=keys))
        return {cid: max(account, w) for cid, w in zip(campaign_ids, each, strict=True)}

    def number_waits(self, numbers: list[str]) -> dict[str, float]:
        """Seconds until each ``from`` number's next slot is free (a hold included): one
        call for a caller-id pool's every number (dialer.policy.callerids)."""
        if not numbers:
            return {}
        waits = self._waits(keys=[HOLD_KEY, *map(number_key, numbers)])
        return {n: float(w) for n, w in zip(numbers, waits, strict=True)}

    def try_lock(self, name: str, seconds: float) -> str | None:
        """A lock nobody holds, for ``seconds`` at most: its token, or None."""
        token = uuid.uuid4().hex
        taken = self._client.set(f"dialer:lock:{name}", token, nx=True, px=int(seconds * 1000))
        return token if taken else None

    def unlock(self, name: str, token: str) -> None:
        self._unlock(keys=[f"dialer:lock:{name}"], args=[token])


HOLD_KEY = "dialer:pace:hold"
ACCOUNT_KEY = "dialer:pace:account"


class LocalBackend:
    """The same schedule in one process, for ``dialer demo`` (no Redis there)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}
        self._holds: dict[str, float] = {}
        self._shares: dict[int, tuple[float, float]] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._flags: dict[str, float] = {}

    @property
    def _hold_until(self) -> float:
        return self._holds.get(HOLD_KEY, 0.0)

    def reserve(
        self, limits: list[Limit], max_wait: float, hold_key: str = "dialer:pace:hold"
    ) -> Reservation:
        with self._lock:
            now = time.time()
            held = self._holds.get(hold_key, 0.0)
            slot = max([now, held] + [self._tat.get(lim.key, 0.0) for lim in limits])
            wait = slot - now
            if wait > max_wait:
                return Reservation(False, wait, slot)
            for lim in limits:
                tat = max(self._tat.get(lim.key, 0.0), slot - lim.credit)
                self._tat[lim.key] = tat + 1.0 / lim.rate
            return Reservation(True, wait, slot)

    def hold(self, until_epoch: float, hold_key: str = "dialer:pace:hold") -> None:
        with self._lock:
            self._holds[hold_key] = max(self._holds.get(hold_key, 0.0), until_epoch)

    def late(self, limit: Limit, slot_at: float) -> bool:
        with self._lock:
            interval = 1.0 / limit.rate
            tat = self._tat.get(limit.key, 0.0)
            if tat > slot_at + interval + 0.001:
                return False
            self._tat[limit.key] = max(tat, time.time() + interval)
            return True

    def flag(self, name: str, seconds: float) -> None:
        with self._lock:
            self._flags[name] = time.time() + seconds

    def flagged(self, name: str) -> bool:
        with self._lock:
            return self._flags.get(name, 0.0) > time.time()

    def set_shares(self, shares: dict[int, float]) -> None:
        with self._lock:
            expires = time.time() + SHARE_TTL
            self._shares.update({cid: (rate, expires) for cid, rate in shares.items()})

    def share(self, campaign_id: int) -> float | None:
        with self._lock:
            rate, expires = self._shares.get(campaign_id, (None, 0.0))
            return rate if expires > time.time() else None

    def shares(self, campaign_ids: list[int]) -> dict[int, float | None]:
        return {cid: self.share(cid) for cid in campaign_ids}

    def waits(self, campaign_ids: list[int]) -> dict[int, float]:
        with self._lock:
            now = time.time()
            base = max(now, self._hold_until, self._tat.get(ACCOUNT_KEY, 0.0))
            return {
                cid: max(base, self._tat.get(campaign_key(cid), 0.0)) - now for cid in campaign_ids
            }

    def number_waits(self, numbers: list[str]) -> dict[str, float]:
        with self._lock:
            now = time.time()
            base = max(now, self._hold_until)
            return {n: max(base, self._tat.get(number_key(n), 0.0)) - now for n in numbers}

    def try_lock(self, name: str, seconds: float) -> str | None:
        with self._lock:
            now = time.time()
            if self._locks.get(name, ("", 0.0))[1] > now:
                return None
            token = uuid.uuid4().hex
            self._locks[name] = (token, now + seconds)
            return token

    def unlock(self, name: str, token: str) -> None:
        with self._lock:
            if self._locks.get(name, ("", 0.0))[0] == token:
                del self._locks[name]


def release_budget(
    rate: float, horizon: float, backlog: int, room: int | None, wait: float = 0.0
) -> int:
    """How many attempts to hand the workers now: the slots at ``rate`` within the next
    ``horizon`` seconds, the first free in ``wait`` seconds, less what is already queued,
    within the concurrency ``room`` left (None: no cap).

    Releasing only what can be sent soon keeps the broker queue and worker memory flat
    however large the campaign is. Counting from the next free slot keeps a slow pace
    (a small share of the account: a slot every few seconds) from being released long
    before its slot, to be claimed, given back and claimed again by the workers.
    """
    if wait >= horizon:
        return 0
    budget = max(0, math.ceil(rate * (horizon - max(0.0, wait))) - backlog)
    if room is not None:
        budget = min(budget, max(0, room))
    return budget
