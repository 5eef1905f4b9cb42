"""Contacts and do-not-call files: refused whole before anything is written, then read.

A whole file is refused with a :class:`ContactFileError` saying why, before any row is
inserted, when it is missing, empty, not UTF-8, UTF-16, has no header, a header with a NUL
byte, a repeated column, more than ``MAX_COLUMNS`` columns or a header line over
``MAX_ROW`` characters. Anything wrong with one data row of a contacts file is that
row's problem only: the import makes it an ``invalid`` contact with the reason
(contacts.py), and the rest of the file is imported. (A do-not-call or caller-id file
with a row that cannot be read is refused: half a do-not-call list would call someone
who opted out.) docs/interface.md ("What a contacts file may hold") has the
table of hostile inputs and what each one gets.

Why these rules:

- **Encoding.** UTF-8 only, with or without a BOM. A file that is not valid UTF-8 (a
  Windows-1252 or Latin-1 export: Excel's "CSV (Comma delimited)") is refused with the
  line and the byte, not decoded with a guess: the context is what the call script
  speaks to the person called, and a wrong guess ("ZoÃ«") would be read aloud to every
  contact and land in the export without anyone noticing. Excel's "CSV UTF-8" (and
  every spreadsheet's UTF-8 export) fixes the file in one step.
- **Separator.** Comma, semicolon (the CSV of locales whose decimal mark is a comma) or
  tab, chosen from the header line alone: the one of the three that occurs there most
  often outside quotes, a comma when none does or on a tie (``sniff_separator``). The
  header decides because every column name is plain text, where a data row's values
  may hold any of them; csv.Sniffer reads the data too and guesses letters and digits as
  separators on short files.
- **Line ends.** LF, CRLF and a lone CR (old Mac) alike: the file is read with
  ``newline=""`` and the csv module splits on each (Python docs, csv, footnote 1).
- **Bounds.** A field over ``MAX_FIELD`` characters (csv.field_size_limit) or a record over
  ``MAX_ROW`` characters (one physical line or several quoted ones) is not read further:
  the row is invalid, "a field over N characters" / "a row over N characters", and
  reading goes on after it. Memory stays bounded by those, whatever the file holds. ``MAX_COLUMNS`` bounds the header, found
  by reading at most ``MAX_COLUMNS`` separators of it: a header of a million columns is
  refused after reading its first few kilobytes.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from dialer.importing.numbers import normalize

MAX_COLUMNS = 1_000  # columns of a header: the context of every contact is a JSON object
MAX_FIELD = 131_072  # characters of one field (the csv module's own default limit)
MAX_ROW = 1 << 20  # characters of one record, its line ends included
SEPARATORS = (",", ";", "\t")  # in the order that breaks a tie
SEPARATOR_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}
_SHOWN_COLUMNS = 20  # an error lists at most this many of the header's columns


class ContactFileError(ValueError):
    """The file as a whole cannot be imported (raised before any row is inserted)."""


class RowTooLong(csv.Error):
    """A record over ``MAX_ROW`` characters (raised by the line source mid-record)."""


def check_file(path: Path) -> None:
    """Refuse a file that is missing, empty, UTF-16 or not UTF-8, before any insert.

    A cheap byte pass: a decoding error found while streaming would come after rows were
    already written. The error names the first bad byte and its line (LF, CRLF or CR).
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
                at = line + _line_ends(exc.object[: exc.start])
                raise ContactFileError(
                    f"{path} is not UTF-8 (byte 0x{exc.object[exc.start]:02x} on line {at}); "
                    f"it may be Windows-1252 or Latin-1 (the byte is at offset "
                    f'{size + exc.start:,}): save it as UTF-8 CSV (Excel: "CSV UTF-8")'
                ) from None
            line += _line_ends(chunk)
            size += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ContactFileError(f"{path} is not UTF-8 (it ends mid-character)") from None
    if size == 0:
        raise ContactFileError(f"{path} is empty")


def _line_ends(data: bytes) -> int:
    """Line ends in ``data``: LF, CRLF and a lone CR count one each."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


# What the header scan looks at: quotes, the candidate separators, line ends.
_HEADER_SPECIAL = re.compile(r'["\r\n,;\t]')


def sniff_separator(f: TextIO, source: object) -> str:
    """The separator of the file open as ``f`` (at its start): the one of ``SEPARATORS``
    the header line holds most often outside quotes, the first of them on a tie.

    Reads only the header line, and of that at most ``MAX_COLUMNS`` separators or
    ``MAX_ROW`` characters: a longer or wider header is refused here. Leaves ``f`` at
    an unknown position (the caller seeks back).
    """
    counts = dict.fromkeys(SEPARATORS, 0)
    in_quotes = False
    previous = "\n"  # the character before the current one: the file's start is a field's
    closed_at = -2  # where the last closing quote was (a doubled quote reopens)
    offset = 0
    while chunk := f.read(1 << 16):
        for match in _HEADER_SPECIAL.finditer(chunk):
            at = match.start()
            char = match.group()
            before = chunk[at - 1] if at else previous
            if char == '"':
                if in_quotes:
                    in_quotes, closed_at = False, offset + at
                elif before in ",;\t\r\n" or closed_at == offset + at - 1:
                    in_quotes = True
            elif in_quotes:
                continue
            elif char in "\r\n":
                return max(SEPARATORS, key=counts.__getitem__)
            else:
                counts[char] += 1
                if counts[char] >= MAX_COLUMNS:
                    raise ContactFileError(
                        f"{source}: the header has more than {MAX_COLUMNS:,} columns "
                        f"({SEPARATOR_NAMES[char]}-separated); a contacts file may have "
                        f"at most {MAX_COLUMNS:,}"
                    )
        offset += len(chunk)
        previous = chunk[-1]
        if offset > MAX_ROW:
            raise ContactFileError(
                f"{source}: the header line is over {MAX_ROW:,} characters; "
                "is the file a CSV file with a header row?"
            )
    return max(SEPARATORS, key=counts.__getitem__)


class _Lines:
    """The file's physical lines for csv.reader, at most ``MAX_ROW`` characters a record.

    ``used`` counts the characters of the record being read and ``quotes`` its double
    quotes; the reader of records sets both back to 0 after each record. A record that
    would pass ``MAX_ROW`` raises RowTooLong after skipping the rest of its physical
    line, so no line is held whole: csv.reader passes the exception on and starts afresh
    at the next line when asked again. ``skip_rest`` first skips the lines a record that
    failed inside a quoted field still spans.
    """

    __slots__ = ("_readline", "used", "quotes")

    def __init__(self, f: TextIO) -> None:
        self._readline = f.readline
        self.used = 0
        self.quotes = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._readline(MAX_ROW - self.used + 1)
        if not line:
            raise StopIteration
        self.used += len(line)
        self.quotes += line.count('"')
        if self.used > MAX_ROW:
            rest = line
            while rest and rest[-1] not in "\r\n":
                rest = self._readline(1 << 16)
                self.quotes += rest.count('"')
            raise RowTooLong(f"a row over {MAX_ROW:,} characters (not stored)")
        return line

    def skip_rest(self) -> None:
        """After a record failed part-way: skip to its end, the line where its quotes
        balance (an odd count means a quoted field is still open), so the lines left of
        a long quoted field are not read as records of their own. A quote that never
        closes takes the rest of the file, as it would without the error."""
        quotes = self.quotes
        while quotes % 2:
            line = self._readline(1 << 16)
            if not line:
                break
            quotes += line.count('"')
        self.used = self.quotes = 0


class CsvFile:
    """A CSV file open for reading: its ``header`` (names stripped of surrounding
    spaces), its ``separator``, and its data records (``rows`` or ``records``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open(encoding="utf-8-sig", newline="")
        try:
            self.separator = sniff_separator(self.file, path)
            self.file.seek(0)
            self._lines = _Lines(self.file)
            csv.field_size_limit(MAX_FIELD)  # the default: set so the bound is ours
            self._reader = csv.reader(self._lines, delimiter=self.separator)
            self.header = self._read_header()
        except BaseException:
            self.file.close()
            raise

    def _read_header(self) -> list[str]:
        path = self.path
        try:
            header = next(self._reader, None)
        except csv.Error as exc:
            raise ContactFileError(f"{path}: the header is not valid CSV ({exc})") from None
        self._lines.used = self._lines.quotes = 0
        if header is None:
            raise ContactFileError(f"{path} is empty")
        if any("\0" in name for name in header):
            raise ContactFileError(
                f"{path}: the header has a NUL byte; is the file UTF-16 or not a CSV file? "
                "Save it as UTF-8 CSV"
            )
        if len(header) > MAX_COLUMNS:
            raise ContactFileError(
                f"{path}: the header has {len(header):,} columns; a contacts file may "
                f"have at most {MAX_COLUMNS:,}"
            )
        header = [name.strip() for name in header]
        if not any(header):
            raise ContactFileError(f"{path} has no header row (its first line is blank)")
        return header

    def rows(self) -> Iterator[list[str]]:
        """The data records as the csv module reads them ([] for a blank line); a record
        that cannot be read raises csv.Error (for files refused whole on a bad row)."""
        lines = self._lines
        for fields in self._reader:
            lines.used = lines.quotes = 0
            yield fields

    def records(self) -> Iterator[list[str] | str]:
        """The data records, each the list of its fields ([] for a blank line) or, for a
        record that cannot be read, why (a str): the reading goes on at the next line."""
        lines, reader = self._lines, self._reader
        while True:
            try:
                for fields in reader:
                    lines.used = lines.quotes = 0
                    yield fields
                return
            except csv.Error as exc:
                lines.skip_rest()
                yield _unreadable(exc)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> CsvFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unreadable(exc: csv.Error) -> str:
    if isinstance(exc, RowTooLong):
        return str(exc)
    if "field limit" in str(exc):
        return f"a field over {MAX_FIELD:,} characters (the row is not stored)"
    return f"not valid CSV ({exc})"


def open_csv(path: Path) -> tuple[TextIO, Iterator[list[str]], list[str]]:
    """The open file, its data rows (``CsvFile.rows``) and the header."""
    opened = CsvFile(path)
    return opened.file, opened.rows(), opened.header


def read_columns(path: str | Path) -> list[str]:
    """The header of a contacts file (names stripped of surrounding spaces)."""
    path = Path(path)
    check_file(path)
    with CsvFile(path) as opened:
        return opened.header


def find_phone_column(
    columns: list[str],
    wanted: str,
    *,
    source: str = "the file",
    region: str = "US",
    separator: str | None = None,
) -> str:
    """The header name ``wanted`` refers to: exact, else the one that matches ignoring case.

    Else a ContactFileError naming what was wanted, the columns found (the first
    ``_SHOWN_COLUMNS`` of them) and, with ``separator``, how the header was split.
    """
    if wanted in columns:
        return wanted
    folded = [c for c in columns if c.casefold() == wanted.strip().casefold()]
    if len(folded) == 1:
        return folded[0]
    found = ", ".join(repr(c[:80]) for c in columns[:_SHOWN_COLUMNS])
    if len(columns) > _SHOWN_COLUMNS:
        found += f", … ({len(columns):,} columns)"
    how = f" ({SEPARATOR_NAMES[separator]}-separated)" if separator in SEPARATOR_NAMES else ""
    hint = ""
    if columns and normalize(columns[0], region)[0] is not None:
        hint = " (the first line looks like data: the file needs a header row)"
    elif len(columns) == 1 and re.search(r"[|:^~]", columns[0]):
        hint = " (the separators read are comma, semicolon and tab)"
    raise ContactFileError(
        f"no phone column {wanted!r} in {source}; the columns{how} are: {found}{hint}. "
        "Name the phone column with --phone-column."
    )


def check_header(header: list[str], path: Path) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise ContactFileError(f"{path}: column {name!r} appears more than once")
        seen.add(name)
