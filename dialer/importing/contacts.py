"""A contacts CSV into a campaign's contacts, in bulk, and the campaign's suppressions.

Every data row of a contacts file becomes a contact, the bad ones too (``invalid``,
``duplicate``, ``suppressed``, each with a reason), so nothing a user handed in is lost
(docs/interface.md, "campaign create"). The file is streamed and written with one ``COPY`` on
PostgreSQL (batched ``executemany`` on SQLite); the only thing held for the whole file is
the dedupe map, one entry per distinct good address.

On PostgreSQL the rows go as COPY text made here in chunks (copytext.py): a row that is a
NANP number in a common spelling with nothing to escape (nearly every row of a big file)
takes a fused path, one regex and one ``%`` template; every other row takes the general
path (``_Rows.classify``), which is also the whole of the SQLite import. Both give a row
the same contact (tests/importing/test_copy.py stores a mixed file both ways).

A file is refused whole (files.ContactFileError) before any row is written; after that,
a row that cannot be read (a field or record over files' bounds, a NUL byte) is an
``invalid`` contact with the reason, and the rest of the file goes on. Nothing here
commits: the caller owns the transaction, so an import that fails halfway (the database)
leaves nothing behind once the caller rolls back.
"""

from __future__ import annotations

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
from dialer.importing import copytext
from dialer.importing.files import (
    MAX_COLUMNS,
    CsvFile,
    check_file,
    check_header,
    find_phone_column,
)
from dialer.importing.numbers import common_nanp, normalize
from dialer.importing.seen import SeenAddresses
from dialer.policy.rules import zones_for
from dialer.store import dialects
from dialer.store.models import Campaign, Contact, ContactStatus, Suppression

PROGRESS_EVERY = 10_000  # also the rows of one COPY chunk (about a megabyte)
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
    lines = max(head.count(b"\n"), head.count(b"\r"))  # LF, CRLF or a lone CR
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
    with CsvFile(path) as opened:
        header = opened.header
        check_header(header, path)
        region = campaign.region or "US"
        phone_column = find_phone_column(
            header,
            campaign.phone_column or "phone",
            source=str(path),
            region=region,
            separator=opened.separator,
        )
        campaign.phone_column = phone_column
        campaign.columns = [c for c in header if c != phone_column]
        session.flush()
        queries = dialects.of(session)

        report = ImportReport()
        seen = SeenAddresses(expected_rows(path))
        rows = _Rows(header, phone_column, region, report, seen, row_check)
        due = clock.now()
        if queries.takes_copy_text:
            chunks = _copy_chunks(opened.records(), rows, campaign.id, due, progress)
            queries.copy_text(session, _CONTACT, _COLUMNS, chunks)
        else:
            items = _contact_rows(opened.records(), rows)
            if progress is not None:
                items = _reporting(items, progress)
            queries.bulk_insert(
                session, _CONTACT, _COLUMNS, _contact_values(campaign.id, items, due)
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


class _Rows:
    """The general path: one data row's contact, counted into the report."""

    def __init__(
        self,
        header: list[str],
        phone_column: str,
        region: str,
        report: ImportReport,
        seen: SeenAddresses,
        row_check: Callable[[dict[str, str]], str | None] | None,
    ) -> None:
        self.width = len(header)
        self.phone_at = header.index(phone_column)
        self.context_columns = [(i, c) for i, c in enumerate(header) if i != self.phone_at]
        self.region = region
        self.report = report
        self.seen = seen
        self.row_check = row_check

    def classify(self, fields: list[str] | str, row: int) -> _Row:
        """(row, phone, e164, status, reason, context, zones) of data row ``row``.
        ``zones`` is the recipient's time zones (rules.zones_for) for good rows.

        Good numbers come out ``pending``; suppression is applied afterwards, set-based,
        and so are the duplicates' reasons (``_name_first_rows``). ``fields`` is a str
        for a record that could not be read (files.CsvFile.records): why, the reason of
        an invalid contact with nothing else kept. A row with a NUL byte is invalid with
        its NULs kept as U+FFFD (PostgreSQL text cannot hold a NUL); a row with more
        fields than the header keeps the extra ones under their position, up to
        ``MAX_COLUMNS`` fields in all.
        """
        width, phone_at, report = self.width, self.phone_at, self.report
        if isinstance(fields, str):
            report.invalid += 1
            return row, "", None, ContactStatus.INVALID, fields, {}, None
        nul = any("\0" in f for f in fields)
        if nul:
            fields = [f.replace("\0", "\ufffd") for f in fields]
        if len(fields) == width and not nul:
            phone = fields[phone_at]
            context = {c: fields[i] for i, c in self.context_columns}
            address, reason = normalize(phone, self.region)
            if address is not None and self.row_check is not None:
                refused = self.row_check(context)
                if refused is not None:
                    address, reason = None, refused
        else:
            phone = fields[phone_at] if phone_at < len(fields) else ""
            context = {c: fields[i] for i, c in self.context_columns if i < len(fields)}
            # Extra fields have no column name; keep them under their position.
            for i in range(width, min(len(fields), MAX_COLUMNS)):
                context[f"#{i + 1}"] = fields[i]
            address = None
            if nul:
                reason = "the row has a NUL byte (kept as U+FFFD)"
            else:
                reason = f"row has {len(fields):,} fields, the header has {width}"
                if len(fields) > MAX_COLUMNS:
                    reason += f" (fields after the {MAX_COLUMNS:,}th are not kept)"
        if address is None:
            report.invalid += 1
            return row, phone, None, ContactStatus.INVALID, reason, context, None
        if not self.seen.add(address):
            report.duplicate += 1
            return row, phone, address, ContactStatus.DUPLICATE, None, context, None
        report.imported += 1
        zones = zones_for(address)
        report.zone_keys.add(zones)
        return row, phone, address, ContactStatus.PENDING, None, context, zones


def _contact_rows(records: Iterator[list[str] | str], rows: _Rows) -> Iterator[_Row]:
    """Every data row's contact, by the general path (SQLite)."""
    row = 0
    classify = rows.classify
    try:
        for fields in records:
            if not fields:
                continue  # a blank line is not a row (csv gives [] for it)
            row += 1
            yield classify(fields, row)
    finally:
        rows.report.rows = row


def _copy_chunks(
    records: Iterator[list[str] | str],
    rows: _Rows,
    campaign_id: int,
    due: datetime,
    progress: Callable[[int], None] | None,
) -> Iterator[str]:
    """Every data row's contact as a line of COPY text (in the order of _COLUMNS), in
    chunks of PROGRESS_EVERY rows; ``progress`` after each chunk is written.

    A row takes the fused path when it has the header's width, its phone is a NANP number
    in a common spelling that normalize accepts (numbers.common_nanp) and no field has a
    character JSON or COPY would escape: then it is ``pending`` or ``duplicate``, and its
    line is one ``%`` of a template. Any other row is ``_Rows.classify``'s.
    """
    report, seen, row_check, region = rows.report, rows.seen, rows.row_check, rows.region
    width, phone_at = rows.width, rows.phone_at
    names = [c for _, c in rows.context_columns]
    template = copytext.json_object_template(names)
    due_text = copytext.field(due)
    # The columns of _COLUMNS; %d the row, %s the phone, the ten digits, the context
    # values (header order, phone left out) and, for pending, the zones.
    pending = f"{campaign_id}\t%d\t%s\t+1%s\t{ContactStatus.PENDING}\t\\N\t{template}\t0\t{due_text}\t%s\n"
    duplicate = (
        f"{campaign_id}\t%d\t%s\t+1%s\t{ContactStatus.DUPLICATE}\t\\N\t{template}\t0\t\\N\t\\N\n"
    )
    needs_escaping = copytext.NEEDS_ESCAPING.search
    add_number = seen.add_number
    # Zones as COPY text by the number's first six digits (NPA-NXX), which is all
    # rules.zones_for reads of a NANP number; a dict for the import, not a bounded cache.
    zone_text: dict[str, str] = {}
    classify, line, dumps = rows.classify, copytext.line, _json_encoder()
    nanp = 10**10  # "+1" and ten digits as the seen map's key: 1 followed by them
    lines: list[str] = []
    append = lines.append
    row = imported = duplicates = 0
    try:
        for fields in records:
            if not fields:
                continue  # a blank line is not a row (csv gives [] for it)
            row += 1
            digits = refused = None
            if len(fields) == width and isinstance(fields, list):  # not a reason (a str)
                phone = fields[phone_at]
                digits = common_nanp(phone, region)
                if digits is not None and needs_escaping("".join(fields)) is not None:
                    digits = None
                if digits is not None and row_check is not None:
                    context = {c: fields[i] for i, c in rows.context_columns}
                    refused = row_check(context)
            if digits is None:
                append(line(_values(campaign_id, classify(fields, row), due, dumps)))
            elif refused is not None:
                # As classify would: a dialable number the check refuses is invalid.
                item = (row, phone, None, ContactStatus.INVALID, refused, context, None)
                report.invalid += 1
                append(line(_values(campaign_id, item, due, dumps)))
            else:
                fields = cast(list[str], fields)  # digits: a row of fields, not a reason
                del fields[phone_at]
                if add_number(nanp + int(digits)):
                    imported += 1
                    npa_nxx = digits[:6]
                    zones = zone_text.get(npa_nxx)
                    if zones is None:
                        key = zones_for("+1" + digits)
                        report.zone_keys.add(key)
                        zones = zone_text[npa_nxx] = copytext.field(key)
                    append(pending % (row, phone, digits, *fields, zones))
                else:
                    duplicates += 1
                    append(duplicate % (row, phone, digits, *fields))
            if row % PROGRESS_EVERY == 0:
                yield "".join(lines)
                lines.clear()
                if progress is not None:
                    progress(row)
        if lines:
            yield "".join(lines)
    finally:
        report.rows = row
        report.imported += imported
        report.duplicate += duplicates


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


def _json_encoder() -> Callable[[object], str]:
    return json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _values(
    campaign_id: int, item: _Row, due: datetime, dumps: Callable[[object], str]
) -> tuple[Any, ...]:
    """A contact as a tuple of _COLUMNS, its context as JSON text (as COPY takes it)."""
    row, phone, e164, status, reason, context, zones = item
    # A pending contact is due from now: the tick takes due contacts in due order.
    due_at = due if status == ContactStatus.PENDING else None
    return campaign_id, row, phone, e164, status, reason, dumps(context), 0, due_at, zones


def _contact_values(
    campaign_id: int, rows: Iterator[_Row], due: datetime
) -> Iterator[tuple[Any, ...]]:
    dumps = _json_encoder()
    for item in rows:
        yield _values(campaign_id, item, due, dumps)


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
