"""Which pool number a call goes out from (docs/design.md, "Caller-id pools").

Among the campaign's active numbers, the one whose pace slot is soonest; with
``--local-presence``, first those sharing the callee's NANP area code, then those in the
same region or state (phonenumbers' geocoding data), then any, the soonest within the
first tier that has a number. The slots come from one Redis read for all candidates
(``pacing.Backend.number_waits``); ties go to the number least recently chosen here, so
calls spread evenly over numbers that are all free.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence

_turn = itertools.count()


def area_code(e164: str) -> str | None:
    """The NANP area code of a +1 number (``+19195551212`` -> ``919``), else None."""
    return e164[2:5] if e164.startswith("+1") and len(e164) == 12 else None


@functools.lru_cache(maxsize=65536)
def region_of(e164: str) -> str | None:
    """The region or state a number belongs to (``North Carolina``), from phonenumbers'
    geocoder; None when it does not say. Cached: pools and area codes are few."""
    import phonenumbers
    from phonenumbers import geocoder

    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    where = geocoder.description_for_number(number, "en")
    if not where:
        return None
    # The data says "New York, NY" for some area codes and "North Carolina" for others:
    # the state's postal code either way.
    last = where.rsplit(",", 1)[-1].strip()
    return _STATES.get(last, last) or None


# US states and Canadian provinces as the geocoder names them whole -> postal codes.
_STATES = {
    "Alabama": "AL",
    "Alaska": "AK",
    "Arizona": "AZ",
    "Arkansas": "AR",
    "California": "CA",
    "Colorado": "CO",
    "Connecticut": "CT",
    "Delaware": "DE",
    "Florida": "FL",
    "Georgia": "GA",
    "Hawaii": "HI",
    "Idaho": "ID",
    "Illinois": "IL",
    "Indiana": "IN",
    "Iowa": "IA",
    "Kansas": "KS",
    "Kentucky": "KY",
    "Louisiana": "LA",
    "Maine": "ME",
    "Maryland": "MD",
    "Massachusetts": "MA",
    "Michigan": "MI",
    "Minnesota": "MN",
    "Mississippi": "MS",
    "Missouri": "MO",
    "Montana": "MT",
    "Nebraska": "NE",
    "Nevada": "NV",
    "New Hampshire": "NH",
    "New Jersey": "NJ",
    "New Mexico": "NM",
    "New York": "NY",
    "North Carolina": "NC",
    "North Dakota": "ND",
    "Ohio": "OH",
    "Oklahoma": "OK",
    "Oregon": "OR",
    "Pennsylvania": "PA",
    "Rhode Island": "RI",
    "South Carolina": "SC",
    "South Dakota": "SD",
    "Tennessee": "TN",
    "Texas": "TX",
    "Utah": "UT",
    "Vermont": "VT",
    "Virginia": "VA",
    "Washington": "WA",
    "West Virginia": "WV",
    "Wisconsin": "WI",
    "Wyoming": "WY",
    "Washington D.C.": "DC",
    "Washington DC": "DC",
    "Alberta": "AB",
    "British Columbia": "BC",
    "Manitoba": "MB",
    "New Brunswick": "NB",
    "Newfoundland and Labrador": "NL",
    "Nova Scotia": "NS",
    "Ontario": "ON",
    "Prince Edward Island": "PE",
    "Quebec": "QC",
    "Saskatchewan": "SK",
}


def tiers(pool: Sequence[str], to: str, local_presence: bool) -> list[list[str]]:
    """The pool in preference order: [same area code], [same region], [any]; empty tiers
    left out. Without local presence, one tier: the whole pool."""
    if not local_presence or not to.startswith("+"):
        return [list(pool)]
    code = area_code(to)
    same_area = [n for n in pool if code is not None and area_code(n) == code]
    rest = [n for n in pool if n not in same_area]
    where = region_of(to) if rest else None
    same_region = [n for n in rest if where is not None and region_of(n) == where]
    others = [n for n in rest if n not in same_region]
    return [t for t in (same_area, same_region, others) if t]


def choose(pool: Sequence[str], to: str, local_presence: bool, waits: Mapping[str, float]) -> str:
    """The number to call ``to`` from: in the first tier, the one free soonest (``waits``:
    seconds until each number's slot), ties to the one chosen least recently."""
    first = tiers(pool, to, local_presence)[0]
    soonest = min(waits.get(n, 0.0) for n in first)
    # Within a few ms counts as a tie: rotate among them, from a process-wide turn.
    tied = [n for n in first if waits.get(n, 0.0) - soonest < 0.002]
    return tied[next(_turn) % len(tied)]
