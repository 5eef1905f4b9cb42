"""The import's compact set of seen addresses: exactly a set's answers, in a fraction
of its memory."""

from __future__ import annotations

import random

from dialer.importing.seen import SeenAddresses


def test_it_answers_as_a_set_would_through_growth_and_collisions() -> None:
    rng = random.Random(7)
    seen, reference = SeenAddresses(expected=10), set()
    # Runs of consecutive numbers (as files have), random ones, repeats, SIP URIs and
    # numbers beyond 64 bits all mixed, and ten times more than it was sized for.
    addresses = [f"+1212555{n:04d}" for n in range(3000)]
    addresses += [f"+{rng.randrange(10**10, 10**15)}" for _ in range(3000)]
    addresses += [f"sip:u{n}@example.com" for n in range(50)] + ["+99999999999999999999"]
    addresses += rng.choices(addresses, k=3000)
    rng.shuffle(addresses)
    for address in addresses:
        assert seen.add(address) == (address not in reference), address
        reference.add(address)
    assert len(seen) == len(reference)


def test_ten_million_numbers_fit_in_a_table_of_about_twelve_bytes_each() -> None:
    seen = SeenAddresses(expected=10_000_000)
    assert seen.nbytes <= 12 * 10_000_000
