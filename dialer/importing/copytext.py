"""Rows as PostgreSQL ``COPY`` text, formatted here so a big import sends big chunks.

The text format (PostgreSQL's "COPY", "Text Format"): one line a row, fields separated by
a tab, ``\\N`` for NULL, and a backslash, newline, carriage return or tab inside a value
written as ``\\\\``, ``\\n``, ``\\r``, ``\\t``. Any other character goes as it is, non-ASCII
included. A NUL cannot be stored in a PostgreSQL text value at all: ``field`` refuses it
(the import makes a row with one invalid, its NULs replaced by U+FFFD, before it gets
here: contacts._Rows.classify).

Most rows of a contacts file have nothing to escape, in JSON or in COPY: for those the
context is filled into a template made once from the header (``json_object_template``),
instead of a dict and a JSON encoder per row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime

NULL = "\\N"

_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_COPY_SPECIAL = re.compile(r"[\\\n\r\t\0]")

# A character that a JSON string or COPY text would have to escape: a value free of them
# goes into either as it is.
NEEDS_ESCAPING = re.compile(r'["\\\x00-\x1f]')


def escape(text: str) -> str:
    """``text`` as a COPY text field (not NULL)."""
    if _COPY_SPECIAL.search(text) is None:
        return text
    if "\0" in text:
        raise ValueError(f"a NUL character cannot be stored in PostgreSQL text: {text!r}")
    return text.translate(_ESCAPES)


def field(value: object) -> str:
    """One value as a COPY text field: None, str, int or an aware datetime."""
    if value is None:
        return NULL
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"a naive datetime has no place in a timestamptz: {value!r}")
        return value.isoformat()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"no COPY text for a {type(value).__name__}: {value!r}")


def line(values: Sequence[object]) -> str:
    """A row as one COPY text line, newline included."""
    return "\t".join([field(v) for v in values]) + "\n"


def json_object_template(keys: Iterable[str]) -> str:
    """A ``%``-template for a JSON object of ``keys`` with string values, as a COPY text
    field: ``template % values`` is the object, for values that have nothing to escape
    (``NEEDS_ESCAPING`` finds nothing in them). Keys are escaped here, once."""
    parts = [escape(json.dumps(k, ensure_ascii=False)).replace("%", "%%") for k in keys]
    return "{" + ",".join(f'{k}:"%s"' for k in parts) + "}"
