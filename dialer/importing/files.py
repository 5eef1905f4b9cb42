"""Contacts and do-not-call files: refused whole before anything is written, then read.

A file that is missing, empty, not UTF-8, has NUL bytes, has no header or repeats a column
is refused with a :class:`ContactFileError` saying why, before any row is inserted.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from dialer.importing.numbers import normalize


class ContactFileError(ValueError):
    """The file as a whole cannot be imported (raised before any row is inserted)."""


def check_file(path: Path) -> None:
    """Refuse a file that is missing, empty, not UTF-8 or has NUL bytes, before any insert.

    A cheap byte pass: a decoding error found while streaming would come after rows were
    already written, and PostgreSQL text cannot hold NUL (a NUL usually means UTF-16).
    """
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise ContactFileError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise ContactFileError(f"{path} is a directory, not a CSV file") from None
    except OSError as exc:
        raise ContactFileError(f"cannot read {path}: {exc.strerror}") from None
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    size = 0
    with f:
        while chunk := f.read(1 << 20):
            if size == 0 and chunk.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise ContactFileError(f"{path} is UTF-16; save it as UTF-8 CSV")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                at = line + exc.object.count(b"\n", 0, exc.start)
                raise ContactFileError(
                    f"{path} is not UTF-8 (byte 0x{exc.object[exc.start]:02x} on line {at}); "
                    "save it as UTF-8 CSV"
                ) from None
            nul = chunk.find(b"\0")
            if nul >= 0:
                at = line + chunk.count(b"\n", 0, nul)
                raise ContactFileError(f"{path} has a NUL byte on line {at}; is it a CSV file?")
            line += chunk.count(b"\n")
            size += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ContactFileError(f"{path} is not UTF-8 (it ends mid-character)") from None
    if size == 0:
        raise ContactFileError(f"{path} is empty")


def open_csv(path: Path) -> tuple[TextIO, Iterator[list[str]], list[str]]:
    """The open file, a csv reader positioned after the header, and the header."""
    f = path.open(encoding="utf-8-sig", newline="")
    reader = csv.reader(f)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        f.close()
        raise ContactFileError(f"{path}: the header is not valid CSV ({exc})") from None
    if header is None:
        f.close()
        raise ContactFileError(f"{path} is empty")
    header = [name.strip() for name in header]
    if not any(header):
        f.close()
        raise ContactFileError(f"{path} has no header row (its first line is blank)")
    return f, reader, header


def read_columns(path: str | Path) -> list[str]:
    """The header of a contacts file (names stripped of surrounding spaces)."""
    path = Path(path)
    check_file(path)
    f, _reader, header = open_csv(path)
    f.close()
    return header


def find_phone_column(
    columns: list[str], wanted: str, *, source: str = "the file", region: str = "US"
) -> str:
    """The header name ``wanted`` refers to: exact, else the one that matches ignoring case."""
    if wanted in columns:
        return wanted
    folded = [c for c in columns if c.casefold() == wanted.strip().casefold()]
    if len(folded) == 1:
        return folded[0]
    found = ", ".join(repr(c) for c in columns)
    hint = ""
    if columns and normalize(columns[0], region)[0] is not None:
        hint = " (the first line looks like data: the file needs a header row)"
    raise ContactFileError(
        f"no phone column {wanted!r} in {source}; the columns are: {found}{hint}. "
        "Name the phone column with --phone-column."
    )


def check_header(header: list[str], path: Path) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise ContactFileError(f"{path}: column {name!r} appears more than once")
        seen.add(name)
