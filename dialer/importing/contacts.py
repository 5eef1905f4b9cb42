"""A contacts CSV into a campaign's contacts, in bulk, and the campaign's suppressions.

Every data row of a contacts file becomes a contact, the bad ones too (``invalid``,
``duplicate``, ``suppressed``, each with a reason), so nothing a user handed in is lost
(docs/interface.md, "campaign create"). The file is streamed and written with one ``COPY`` on
PostgreSQL (batched ``executemany`` on SQLite); the only thing held for the whole file is
the dedupe map, one entry per distinct good address.

Nothing here commits: the caller owns the transaction, so a file that turns out bad halfway
through (a CSV error) leaves nothing behind once the caller rolls back.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, String, Table, func, literal, or_, select, update
from sqlalchemy import cast as cast_
from sqlalchemy.orm import Session

from dialer import clock
from dialer.importing.files import (
    ContactFileError,
    check_file,
    check_header,
    find_phone_column,
    open_csv,
)
from dialer.importing.numbers import normalize
from dialer.importing.seen import SeenAddresses
from dialer.policy.rules import zones_for
from dialer.store import dialects
from dialer.store.models import Campaign, Contact, ContactStatus, Suppression

PROGRESS_EVERY = 10_000
# After this many rows written in one go, refresh the planner's statistics in the same
# transaction (ANALYZE counts our own uncommitted rows). Without them PostgreSQL believes
# the campaign has ~1 contact and joins the suppression check as a nested loop, which is
# quadratic: 200,000 rows took 35 s of the import. Autovacuum would only catch up after
# commit, and the first dialing ticks want the statistics too.
ANALYZE_AFTER = 10_000

SUPPRESSED_REASON = "on the do-not-call list"

_CONTACT = cast(Table, Contact.__table__)


@dataclass
class ImportReport:
    rows: int = 0  # data rows read: imported + invalid + duplicate + suppressed
    imported: int = 0  # became ``pending``: to be dialed
    invalid: int = 0
    duplicate: int = 0
    suppressed: int = 0
    zone_keys: set[str | None] = field(
        default_factory=set, compare=False
    )  # rules.zones_for of good rows


def expected_rows(path: Path, sample: int = 1 << 16) -> int:
    """About how many rows ``path`` has, from its size and its first lines' length."""
    with path.open("rb") as f:
        head = f.read(sample)
    lines = head.count(b"\n")
    if not lines:
        return 1
    return int(path.stat().st_size / (len(head) / lines)) + 1


def import_contacts(
    session: Session,
    campaign: Campaign,
    path: str | Path,
    *,
    progress: Callable[[int], None] | None = None,
    row_check: Callable[[dict[str, str]], str | None] | None = None,
) -> ImportReport:
    """Read a contacts CSV into ``campaign``: one contact per data row, in file order.

    ``campaign`` must be flushed (it needs its id). Sets ``campaign.columns`` (the header
    without the phone column) and the campaign's counts; returns the same counts.
    ``row_check`` sees each dialable row's context and returns why it cannot be called
    (the row becomes ``invalid`` with that reason: a call script too long for it), or None.
    """
    path = Path(path)
    check_file(path)
    f, reader, header = open_csv(path)
    with f:
        check_header(header, path)
        region = campaign.region or "US"
        phone_column = find_phone_column(
            header, campaign.phone_column or "phone", source=str(path), region=region
        )
        campaign.phone_column = phone_column
        campaign.columns = [c for c in header if c != phone_column]
        session.flush()
        queries = dialects.of(session)

        report = ImportReport()
        seen = SeenAddresses(expected_rows(path))
        rows = _contact_rows(reader, header, phone_column, region, report, path, seen, row_check)
        if progress is not None:
            rows = _reporting(rows, progress)
        queries.bulk_insert(
            session, _CONTACT, _COLUMNS, _contact_values(campaign.id, rows, clock.now())
        )
        if progress is not None:
            progress(report.rows)

    if report.rows >= ANALYZE_AFTER:
        queries.analyze(session, "contact")
    if report.duplicate:
        _name_first_rows(session, campaign.id)
    report.suppressed = _suppress(session, campaign.id)
    report.imported -= report.suppressed
    campaign.rows = report.rows
    campaign.imported = report.imported
    campaign.invalid = report.invalid
    campaign.duplicate = report.duplicate
    campaign.suppressed = report.suppressed
    campaign.zone_keys = sorted(report.zone_keys, key=lambda k: k or "")
    session.flush()
    return report


_Row = tuple[int, str, str | None, str, str | None, dict[str, str], str | None]


def _contact_rows(
    reader: Iterator[list[str]],
    header: list[str],
    phone_column: str,
    region: str,
    report: ImportReport,
    path: Path,
    seen: SeenAddresses,
    row_check: Callable[[dict[str, str]], str | None] | None = None,
) -> Iterator[_Row]:
    """(row, phone, e164, status, reason, context, zones) per data row; counts into
    ``report``. ``zones`` is the recipient's time zones (rules.zones_for) for good rows.

    Good numbers come out ``pending``; suppression is applied afterwards, set-based, and
    so are the duplicates' reasons (``_name_first_rows``).
    """
    width = len(header)
    phone_at = header.index(phone_column)
    context_columns = [(i, c) for i, c in enumerate(header) if i != phone_at]
    add = seen.add
    pending, invalid, duplicate = (
        ContactStatus.PENDING,
        ContactStatus.INVALID,
        ContactStatus.DUPLICATE,
    )
    row = 0
    zone_keys = report.zone_keys
    try:
        for fields in reader:
            if not fields:
                continue  # a blank line is not a row (csv gives [] for it)
            row += 1
            if len(fields) == width:
                phone = fields[phone_at]
                context = {c: fields[i] for i, c in context_columns}
                address, reason = normalize(phone, region)
                if address is not None and row_check is not None:
                    refused = row_check(context)
                    if refused is not None:
                        address, reason = None, refused
            else:
                phone = fields[phone_at] if phone_at < len(fields) else ""
                context = {c: fields[i] for i, c in context_columns if i < len(fields)}
                # Extra fields have no column name; keep them under their position.
                for i in range(width, len(fields)):
                    context[f"#{i + 1}"] = fields[i]
                address = None
                reason = f"row has {len(fields)} fields, the header has {width}"
            if address is None:
                report.invalid += 1
                yield row, phone, None, invalid, reason, context, None
                continue
            if not add(address):
                report.duplicate += 1
                yield (row, phone, address, duplicate, None, context, None)
                continue
            report.imported += 1
            zones = zones_for(address)
            zone_keys.add(zones)
            yield row, phone, address, pending, None, context, zones
    except csv.Error as exc:
        raise ContactFileError(f"{path}: row {row + 1} is not valid CSV ({exc})") from None
    finally:
        report.rows = row


def _reporting(rows: Iterator[_Row], progress: Callable[[int], None]) -> Iterator[_Row]:
    for item in rows:
        yield item
        if item[0] % PROGRESS_EVERY == 0:
            progress(item[0])


# The columns an import writes; the rest of a new contact is NULL.
_COLUMNS = (
    "campaign_id",
    "row",
    "phone",
    "e164",
    "status",
    "reason",
    "context",
    "attempts",
    "due_at",
    "zones",
)


def _contact_values(
    campaign_id: int, rows: Iterator[_Row], due: datetime
) -> Iterator[tuple[Any, ...]]:
    """Each contact as a tuple of _COLUMNS, its context as JSON text (as COPY takes it)."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    for row, phone, e164, status, reason, context, zones in rows:
        # A pending contact is due from now: the tick takes due contacts in due order.
        yield (
            campaign_id,
            row,
            phone,
            e164,
            status,
            reason,
            dumps(context),
            0,
            due if status == ContactStatus.PENDING else None,
            zones,
        )


def _name_first_rows(session: Session, campaign_id: int) -> None:
    """Give each duplicate its reason, "same number as row N", N the number's first row
    (the import keeps which numbers it saw, not where: seen.py). One look-up per duplicate
    through the e164 index, so it costs what the duplicates do, not the file."""
    contact = _CONTACT
    first = contact.alias("first")
    first_row = (
        select(func.min(first.c.row))
        .where(first.c.campaign_id == campaign_id, first.c.e164 == contact.c.e164)
        .scalar_subquery()
    )
    session.execute(
        update(contact)
        .where(contact.c.campaign_id == campaign_id, contact.c.status == ContactStatus.DUPLICATE)
        .values(reason=literal("same number as row ") + cast_(first_row, String))
    )


def _suppress(session: Session, campaign_id: int) -> int:
    """Mark this campaign's pending contacts on a do-not-call list; how many were."""
    listed = select(Suppression.e164).where(
        or_(Suppression.campaign_id.is_(None), Suppression.campaign_id == campaign_id)
    )
    contact = _CONTACT
    result = cast(
        "CursorResult[Any]",
        session.execute(
            update(contact)
            .where(
                contact.c.campaign_id == campaign_id,
                contact.c.status == ContactStatus.PENDING,
                contact.c.e164.in_(listed),
            )
            .values(status=ContactStatus.SUPPRESSED, reason=SUPPRESSED_REASON)
        ),
    )
    return result.rowcount
