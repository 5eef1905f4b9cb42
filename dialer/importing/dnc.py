"""Do-not-call lists: numbers put on and taken off, global or per campaign.

A number on a list is never dialed: an import marks such contacts ``suppressed``
(``dialer.importing.contacts``), and the claim before each send checks the lists again.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, delete
from sqlalchemy.orm import Session

from dialer import clock
from dialer.importing.contacts import ANALYZE_AFTER
from dialer.importing.files import ContactFileError, check_file, find_phone_column, open_csv
from dialer.importing.numbers import normalize
from dialer.store import dialects
from dialer.store.models import Suppression

_SUPPRESSION_BATCH = 5_000
DNC_COLUMNS = ("phone", "number", "e164", "msisdn")


def _dnc_entries(
    path_or_numbers: str | Path | Iterable[str], phone_column: str | None, region: str
) -> Iterator[tuple[int, str]]:
    """(row number, raw value) for each entry of a DNC file or list of numbers."""
    if not isinstance(path_or_numbers, str | os.PathLike):
        for row, raw in enumerate(path_or_numbers, start=1):
            yield row, raw
        return
    path = Path(path_or_numbers)
    check_file(path)
    f, reader, header = open_csv(path)
    with f:
        if phone_column is not None:
            found = find_phone_column(header, phone_column, source=str(path), region=region)
            at = header.index(found)
        else:
            named = [i for i, c in enumerate(header) if c.casefold() in DNC_COLUMNS]
            at = named[0] if named else 0
            if not named and normalize(header[0], region)[0] is not None:
                # No recognisable header and the first line is a number: the file has no
                # header, and dropping that first number would call someone who opted out.
                yield 0, header[0]
        row = 0
        try:
            for fields in reader:
                if not fields:
                    continue
                row += 1
                yield row, fields[at] if at < len(fields) else ""
        except csv.Error as exc:
            raise ContactFileError(f"{path}: row {row + 1} is not valid CSV ({exc})") from None


def _normalized_batches(
    path_or_numbers: str | Path | Iterable[str],
    phone_column: str | None,
    region: str,
    rejected: list[str],
) -> Iterator[list[str]]:
    batch: list[str] = []
    for row, raw in _dnc_entries(path_or_numbers, phone_column, region):
        address, reason = normalize(raw, region)
        if address is None:
            label = "header line" if row == 0 else f"row {row}"
            rejected.append(f"{label}: {reason}")
            continue
        batch.append(address)
        if len(batch) >= _SUPPRESSION_BATCH:
            yield list(dict.fromkeys(batch))
            batch = []
    if batch:
        yield list(dict.fromkeys(batch))


def add_suppressions(
    session: Session,
    path_or_numbers: str | Path | Iterable[str],
    *,
    campaign_id: int | None = None,
    region: str = "US",
    phone_column: str | None = None,
) -> tuple[int, list[str]]:
    """Put numbers on the do-not-call list (global when ``campaign_id`` is None).

    ``path_or_numbers`` is a CSV file with a header (the phone column is ``phone_column``,
    else one named phone/number/e164/msisdn, else the first) or an iterable of numbers.
    Returns (how many were newly added, ``"row N: reason"`` for each entry refused).
    """
    queries = dialects.of(session)
    now = clock.now()
    added = 0
    rejected: list[str] = []
    for batch in _normalized_batches(path_or_numbers, phone_column, region, rejected):
        # No conflict target: the unique indexes are partial (global vs per campaign),
        # and a bare DO NOTHING skips a conflict with either.
        statement = (
            queries.insert_ignoring_conflicts(Suppression)
            .values([{"campaign_id": campaign_id, "e164": e, "added_at": now} for e in batch])
            .returning(Suppression.id)
        )
        # Counted from RETURNING: rowcount of a multi-row INSERT is -1 under psycopg.
        added += len(session.execute(statement).all())
    if added >= ANALYZE_AFTER:
        queries.analyze(session, "suppression")
    return added, rejected


def remove_suppressions(
    session: Session,
    path_or_numbers: str | Path | Iterable[str],
    *,
    campaign_id: int | None = None,
    region: str = "US",
    phone_column: str | None = None,
) -> int:
    """Take numbers off a do-not-call list (the global one when ``campaign_id`` is None).

    Contacts already ``suppressed`` stay so: their status is final.
    """
    scope = (
        Suppression.campaign_id.is_(None)
        if campaign_id is None
        else Suppression.campaign_id == campaign_id
    )
    removed = 0
    for batch in _normalized_batches(path_or_numbers, phone_column, region, []):
        result = cast(
            "CursorResult[Any]",
            session.execute(
                delete(Suppression)
                .where(scope, Suppression.e164.in_(batch))
                .execution_options(synchronize_session=False)
            ),
        )
        removed += result.rowcount
    return removed
