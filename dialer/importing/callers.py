"""A campaign's caller ids: ``--from`` (one number or a comma list) and ``--from-file``
(a CSV with a ``phone`` column and an optional ``label``), validated and normalised to
E.164 at create (docs/interface.md, "Caller ids"). Errors name the bad number or row."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dialer.errors import ApiError
from dialer.importing.files import ContactFileError, check_file, find_phone_column, open_csv
from dialer.importing.numbers import normalize

MAX_POOL = 1000  # numbers per campaign: a pool is read whole at every claim


@dataclass(frozen=True)
class CallerIdEntry:
    e164: str
    label: str | None = None


def parse_pool(
    from_numbers: str | Iterable[str] | None,
    from_file: str | Path | None = None,
    *,
    region: str = "US",
) -> list[CallerIdEntry]:
    """Every number of ``--from`` (a comma list, or a list) then of ``--from-file``, in
    order, duplicates dropped; ApiError naming the first bad one."""
    entries: list[CallerIdEntry] = []
    if isinstance(from_numbers, str):
        raw = [part.strip() for part in from_numbers.split(",")]
    else:
        raw = [str(part).strip() for part in (from_numbers or ())]
    for i, text in enumerate(raw, 1):
        if not text:
            raise ApiError(f"--from: number {i} of the list is empty")
        entries.append(CallerIdEntry(_number(text, region, f"--from: {text!r}")))
    if from_file is not None:
        entries.extend(_read_file(Path(from_file), region))
    if not entries:
        raise ApiError("--from or --from-file must give at least one number")
    seen: dict[str, CallerIdEntry] = {}
    for entry in entries:
        seen.setdefault(entry.e164, entry)
    if len(seen) > MAX_POOL:
        raise ApiError(f"a caller-id pool holds at most {MAX_POOL} numbers, got {len(seen)}")
    return list(seen.values())


def _number(text: str, region: str, where: str) -> str:
    e164, reason = normalize(text, region)
    if e164 is None or not e164.startswith("+"):
        raise ApiError(f"{where} is not a valid E.164 number ({reason or 'a SIP URI'})")
    return e164


def _read_file(path: Path, region: str) -> list[CallerIdEntry]:
    try:
        check_file(path)
        f, reader, header = open_csv(path)
    except ContactFileError as exc:
        raise ApiError(f"--from-file: {exc}") from None
    with f:
        try:
            column = find_phone_column(header, "phone", source=f"--from-file {path}")
        except ContactFileError as exc:
            raise ApiError(str(exc)) from None
        at = header.index(column)
        label_at = next((i for i, name in enumerate(header) if name.lower() == "label"), None)
        out = []
        line = 1
        try:
            for line, row in enumerate(reader, 2):
                if not any(cell.strip() for cell in row):
                    continue
                text = row[at].strip() if at < len(row) else ""
                where = f"--from-file {path}, line {line}: {text!r}"
                if not text:
                    raise ApiError(
                        f"--from-file {path}, line {line}: no number in column {column!r}"
                    )
                label = (
                    row[label_at].strip() if label_at is not None and label_at < len(row) else ""
                )
                out.append(CallerIdEntry(_number(text, region, where), label or None))
        except csv.Error as exc:  # a field or row over files.py's bounds
            raise ApiError(
                f"--from-file {path}: after line {line}, not valid CSV ({exc})"
            ) from None
    return out
