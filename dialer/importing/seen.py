"""The set of addresses an import has seen, in about 12 bytes per address.

An import marks the second and later rows of a number ``duplicate``, so it remembers
every good address of the file until the end. A Python ``set`` or ``dict`` of ints costs
60-100 bytes an entry: 1 GB for a ten-million-row file, where the import's whole budget
is 300 MB (docs/design.md, "Work per call that does not grow with the campaign"). Numbers
are kept instead as 64-bit ints (the digits of their E.164 form) in one open-addressing
table, an ``array('q')`` sized from the file's expected rows, at most 70% full; the rare
addresses that are not numbers (SIP URIs) go to a plain set.

Only membership is kept, not the first row of each number: the duplicates' reasons
("same number as row N") are filled in afterwards by one statement (contacts.py).
"""

from __future__ import annotations

from array import array

_EMPTY = 0  # no E.164 number is "+0…"
_MIX = 0x9E3779B97F4A7C15  # Fibonacci hashing: spreads runs of consecutive numbers
_FULL = 0.7


class SeenAddresses:
    def __init__(self, expected: int = 0) -> None:
        self._others: set[str] = set()
        self._count = 0
        self._allocate(max(1024, int(expected / _FULL) + 1))

    def _allocate(self, capacity: int) -> None:
        self._table = array("q", bytes(8 * capacity))
        self._capacity = capacity
        self._limit = int(capacity * _FULL)

    def add(self, address: str) -> bool:
        """Remember ``address``; True if it was not seen before."""
        if not (address.startswith("+") and address[1:].isdigit()):
            return self._add_other(address)
        key = int(address[1:])
        if key == _EMPTY or key >= 1 << 63:
            return self._add_other(address)
        return self.add_number(key)

    def add_number(self, key: int) -> bool:
        """``add`` of the number whose E.164 digits are ``key`` (``add("+19195551212")`` is
        ``add_number(19195551212)``): for a caller that has the digits already.
        ``0 < key < 2**63``."""
        table, capacity = self._table, self._capacity
        i = key * _MIX % capacity
        while True:
            found = table[i]
            if found == key:
                return False
            if found == _EMPTY:
                table[i] = key
                self._count += 1
                if self._count > self._limit:
                    self._grow()
                return True
            i += 1
            if i == capacity:
                i = 0

    def _add_other(self, address: str) -> bool:
        if address in self._others:
            return False
        self._others.add(address)
        return True

    def _grow(self) -> None:
        old = self._table
        self._allocate(self._capacity * 2)
        table, capacity = self._table, self._capacity
        for key in old:
            if key != _EMPTY:
                i = key * _MIX % capacity
                while table[i] != _EMPTY:
                    i = i + 1 if i + 1 < capacity else 0
                table[i] = key

    def __len__(self) -> int:
        return self._count + len(self._others)

    @property
    def nbytes(self) -> int:
        """The table's size in bytes (the set of other addresses aside)."""
        return self._table.itemsize * self._capacity
