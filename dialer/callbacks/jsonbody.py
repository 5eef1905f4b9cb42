"""A callback body's JSON, decoded with the bounds json itself does not set.

Python's json takes things the rest of the dialer cannot, and each would otherwise
be answered 200 and then fail where nobody answers for it (docs/operations.md,
"What the receiver answers"):

- **nesting**: the C decoder recurses once per level, so ``[[[…]]]`` a few thousand
  deep raises RecursionError (not a ValueError: it was a 500), and an event nested a
  few hundred deep decodes here but recurses again in every walk of it afterwards (the
  NUL check, the worker's decode, PostgreSQL's jsonb). The carrier's events are flat
  objects; ``MAX_DEPTH`` levels is far more than any has.
- **duplicate keys**: json keeps the last, other parsers the first; an event that says
  ``hangup`` to one reader and ``answer`` to another is refused (RFC 8259, section 4:
  names SHOULD be unique).
- **NaN, Infinity**: json accepts them; they are not JSON, and jsonb refuses them.
- **numbers** jsonb cannot hold (``1e999999``, 20,000 digits after the point) or that
  cost quadratic time to convert: a number literal is at most ``MAX_NUMBER`` characters,
  its exponent at most ``MAX_EXPONENT``, its value finite.

The checks cost nothing measurable on the carrier's events (the hooks run per object
and per number, a few per event; the depth walk only when the text has more brackets
than the bound).
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32  # levels of arrays and objects
MAX_NUMBER = 40  # characters of one number literal
MAX_EXPONENT = 400  # |e| in 1.5e-7: jsonb's numeric keeps 16,383 digits after the point


class BadJson(ValueError):
    """Text json would decode that the receiver refuses; the message says why (a 400)."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # Not named: the answer echoes nothing of a body.
        raise BadJson("an object has a duplicate key")
    return obj


def _constant(name: str) -> Any:
    raise BadJson(f"{name} is not a JSON number")


def _int(literal: str) -> int:
    if len(literal) > MAX_NUMBER:
        raise BadJson(f"number over {MAX_NUMBER} characters")
    return int(literal)


def _float(literal: str) -> float:
    if len(literal) > MAX_NUMBER:
        raise BadJson(f"number over {MAX_NUMBER} characters")
    exponent = literal.lower().partition("e")[2]
    value = float(literal)
    if (exponent and abs(int(exponent)) > MAX_EXPONENT) or not math.isfinite(value):
        raise BadJson("number out of range")
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_constant=_constant, parse_int=_int, parse_float=_float
)


def loads(body: bytes, text: str | None) -> Any:
    """The value of a body (``text``: the body decoded as UTF-8, without a BOM, when it
    is); json's own errors (ValueError, UnicodeDecodeError) or BadJson."""
    if text is None:
        # As json.loads does for bytes: UTF-8 (with a BOM), -16 or -32.
        text = body.decode(json.detect_encoding(body), "surrogatepass")
        if text.startswith("\ufeff"):
            text = text[1:]
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise BadJson(f"JSON nested over {MAX_DEPTH} levels") from None
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise BadJson(f"JSON nested over {MAX_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (a loop, not recursion: it may
    be a few hundred deep), stopping once past the bound."""
    deepest = 0
    level: list[Any] = [value]
    while level:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            break
        deepest += 1
        if deepest > MAX_DEPTH:
            break
        level = [item for c in containers for item in (c.values() if isinstance(c, dict) else c)]
    return deepest
