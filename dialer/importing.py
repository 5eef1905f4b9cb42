"""CSV → contacts: normalization, dedupe, do-not-call suppression, in bulk.

Every data row of a contacts file becomes a contact, the bad ones too (``invalid``,
``duplicate``, ``suppressed``, each with a reason), so nothing a user handed in is lost
(interface.md, "campaign create"). The file is streamed and written with one ``COPY`` on
PostgreSQL (batched ``executemany`` on SQLite); the only thing held for the whole file is
the dedupe map, one entry per distinct good address.

Nothing here commits: the caller owns the transaction, so a file that turns out bad halfway
through (a CSV error) leaves nothing behind once the caller rolls back.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, ValidationResult
from phonenumbers.phonemetadata import PhoneMetadata
from sqlalchemy import delete, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dialer import clock
from dialer.policy.rules import zones_for
from dialer.store.models import Campaign, Contact, ContactStatus, Suppression

PROGRESS_EVERY = 10_000
# After this many rows written in one go, refresh the planner's statistics in the same
# transaction (ANALYZE counts our own uncommitted rows). Without them PostgreSQL believes
# the campaign has ~1 contact and joins the suppression check as a nested loop, which is
# quadratic: 200,000 rows took 35 s of the import. Autovacuum would only catch up after
# commit, and the first dialing ticks want the statistics too.
ANALYZE_AFTER = 10_000
_SQLITE_BATCH = 5_000
_SUPPRESSION_BATCH = 5_000
MAX_ADDRESS = 255  # contact.e164 / suppression.e164 are String(255)

SUPPRESSED_REASON = "on the do-not-call list"
DNC_COLUMNS = ("phone", "number", "e164", "msisdn")


class ContactFileError(ValueError):
    """The file as a whole cannot be imported (raised before any row is inserted)."""


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


# --- normalization ------------------------------------------------------------------------

# sip:user@host[:port] (and sips:). The user part excludes ':' so a password form
# (user:secret@host) is refused rather than dialed with a secret in it.
_SIP = re.compile(
    r"(sips?):([^\s@:]+)@([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(\d{1,5}))?",
    re.IGNORECASE,
)
_TEL = re.compile(r"tel:", re.IGNORECASE)

# The fast path: NANP numbers typed the usual ways ("+1 919 555 1212", "(919) 555-1212",
# "1-919-555-1212"). Only the spelling is decided here; validity is still phonenumbers'
# verdict on the same PhoneNumber that ``parse`` would build. Anything else, and every
# number the fast path finds invalid, goes through ``parse`` so the answer and the reason
# are the slow path's own (tests/test_importing.py compares the two on many numbers).
_FAST_PUNCTUATION = str.maketrans("", "", " ()-.")
_NANP_SPELLING = re.compile(r"(\+1|1)?([2-9]\d{9})")
# Plain national spellings are only fast for regions whose national prefix is the bare
# "1" with no transform rule, so ``parse`` provably reads the same digits.
_NANP_FAST_REGIONS = frozenset(
    r
    for r in ("US", "CA")
    if (m := PhoneMetadata.metadata_for_region(r)) is not None
    and m.national_prefix_for_parsing == "1"
    and m.national_prefix_transform_rule is None
)
# ``is_valid_number`` on a +1 number finds its region by trying the NANP regions in order,
# US first; US has no leading-digits pattern, so a number that is valid for US is exactly
# one it would call valid. Checking US directly skips the search for the common case.
_US_SHORTCUT = (
    phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(1, ("",))[0] == "US"
    and (us := PhoneMetadata.metadata_for_region("US")) is not None
    and us.leading_digits is None
)


def _valid_nanp(national: int) -> bool:
    number = PhoneNumber(country_code=1, national_number=national)
    if _US_SHORTCUT and phonenumbers.is_valid_number_for_region(number, "US"):
        return True
    return phonenumbers.is_valid_number(number)


def normalize(raw: str, region: str) -> tuple[str | None, str | None]:
    """``(address, None)`` for a dialable number or SIP URI, else ``(None, reason)``.

    Numbers come back in E.164 (``+19195551212``), parsed with ``region`` as the default;
    SIP URIs come back as given with the scheme in lower case.
    """
    text = raw.strip()
    if not text:
        return None, "empty"
    if len(text) > MAX_ADDRESS:
        return None, "too long"
    head = text[:5].lower()
    if head.startswith(("sip:", "sips:")):
        return _normalize_sip(text)
    if _TEL.match(text):
        text = text[4:].strip()
        if not text:
            return None, "empty"
    fast = _NANP_SPELLING.fullmatch(text.translate(_FAST_PUNCTUATION))
    if fast is not None and (fast.group(1) == "+1" or region in _NANP_FAST_REGIONS):
        digits = fast.group(2)
        if _valid_nanp(int(digits)):
            return "+1" + digits, None
    return _normalize_slow(text, region)


def _normalize_sip(text: str) -> tuple[str | None, str | None]:
    match = _SIP.fullmatch(text)
    if match is None:
        return None, "not a valid SIP URI (expected sip:user@host[:port])"
    port = match.group(4)
    if port is not None and not 0 < int(port) < 65536:
        return None, f"not a valid SIP URI (port {port})"
    scheme = match.group(1)
    return scheme.lower() + text[len(scheme) :], None


def _normalize_slow(text: str, region: str) -> tuple[str | None, str | None]:
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        kind = exc.error_type
        if kind == NumberParseException.NOT_A_NUMBER:
            return None, "not a phone number"
        if kind == NumberParseException.TOO_LONG:
            return None, "too long"
        if kind in (NumberParseException.TOO_SHORT_NSN, NumberParseException.TOO_SHORT_AFTER_IDD):
            return None, "too short"
        if kind == NumberParseException.INVALID_COUNTRY_CODE:
            if text.startswith("+"):
                return None, "unknown country code"
            return None, f"not a valid number for region {region}"
        return None, "not a phone number"
    if number.extension:
        return None, f"has an extension ({number.extension}), which cannot be dialed"
    if phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible == ValidationResult.TOO_SHORT:
        return None, "too short"
    if possible == ValidationResult.TOO_LONG:
        return None, "too long"
    if possible == ValidationResult.IS_POSSIBLE_LOCAL_ONLY:
        return None, "too short (no area code?)"
    if possible == ValidationResult.INVALID_COUNTRY_CODE:
        return None, "unknown country code"
    national = not text.startswith("+") and number.country_code == (
        phonenumbers.country_code_for_region(region)
    )
    return None, f"not a valid number for region {region}" if national else "not a valid number"


def _dedupe_key(address: str) -> int | str:
    # An int is a third the size of the str in the dedupe map, which is what holds the
    # import's memory at 1M rows; SIP URIs stay strings (they never start with "+").
    return int(address[1:]) if address.startswith("+") else address


# --- reading files -------------------------------------------------------------------------


def _check_file(path: Path) -> None:
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


def _open_csv(path: Path) -> tuple[TextIO, Iterator[list[str]], list[str]]:
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
    _check_file(path)
    f, _reader, header = _open_csv(path)
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


def _check_header(header: list[str], path: Path) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise ContactFileError(f"{path}: column {name!r} appears more than once")
        seen.add(name)


# --- importing contacts --------------------------------------------------------------------


def import_contacts(
    session: Session,
    campaign: Campaign,
    path: str | Path,
    *,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Read a contacts CSV into ``campaign``: one contact per data row, in file order.

    ``campaign`` must be flushed (it needs its id). Sets ``campaign.columns`` (the header
    without the phone column) and the campaign's counts; returns the same counts.
    """
    path = Path(path)
    _check_file(path)
    f, reader, header = _open_csv(path)
    with f:
        _check_header(header, path)
        region = campaign.region or "US"
        phone_column = find_phone_column(
            header, campaign.phone_column or "phone", source=str(path), region=region
        )
        campaign.phone_column = phone_column
        campaign.columns = [c for c in header if c != phone_column]
        session.flush()

        report = ImportReport()
        rows = _contact_rows(reader, header, phone_column, region, report, path)
        if progress is not None:
            rows = _reporting(rows, progress)
        if session.connection().dialect.name == "postgresql":
            _copy_contacts(session, campaign.id, rows, clock.now())
        else:
            _insert_contacts(session, campaign.id, rows, clock.now())
        if progress is not None:
            progress(report.rows)

    if report.rows >= ANALYZE_AFTER and session.connection().dialect.name == "postgresql":
        _analyze(session, "contact")
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
) -> Iterator[_Row]:
    """(row, phone, e164, status, reason, context, zones) per data row; counts into
    ``report``. ``zones`` is the recipient's time zones (rules.zones_for) for good rows.

    Good numbers come out ``pending``; suppression is applied afterwards, set-based.
    """
    width = len(header)
    phone_at = header.index(phone_column)
    context_columns = [(i, c) for i, c in enumerate(header) if i != phone_at]
    first_row: dict[int | str, int] = {}  # dedupe key -> first row with that address
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
            key = _dedupe_key(address)
            first = first_row.setdefault(key, row)
            if first != row:
                report.duplicate += 1
                yield (row, phone, address, duplicate, f"same number as row {first}", context, None)
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


def _copy_contacts(session: Session, campaign_id: int, rows: Iterator[_Row], due: datetime) -> None:
    dbapi = session.connection().connection.dbapi_connection
    assert dbapi is not None
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    statement = (
        'COPY contact (campaign_id, "row", phone, e164, status, reason, context, attempts, '
        "due_at, zones) "
        "FROM STDIN"
    )
    with dbapi.cursor() as cursor, cursor.copy(statement) as copy:
        write = copy.write_row
        for row, phone, e164, status, reason, context, zones in rows:
            # A pending contact is due from now: the tick takes due contacts in due order.
            write(
                (
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
            )


def _insert_contacts(
    session: Session, campaign_id: int, rows: Iterator[_Row], due: datetime
) -> None:
    statement = insert(Contact.__table__)
    batch: list[dict[str, Any]] = []
    for row, phone, e164, status, reason, context, zones in rows:
        batch.append(
            {
                "campaign_id": campaign_id,
                "row": row,
                "phone": phone,
                "e164": e164,
                "status": status,
                "reason": reason,
                "context": context,
                "attempts": 0,
                "due_at": due if status == ContactStatus.PENDING else None,
                "last_attempt_id": None,
                "zones": zones,
                "ready_at": None,
            }
        )
        if len(batch) >= _SQLITE_BATCH:
            session.execute(statement, batch)
            batch = []
    if batch:
        session.execute(statement, batch)


def _analyze(session: Session, table: str) -> None:
    session.execute(text(f"ANALYZE {table}"))


def _suppress(session: Session, campaign_id: int) -> int:
    """Mark this campaign's pending contacts on a do-not-call list; how many were."""
    listed = select(Suppression.e164).where(
        or_(Suppression.campaign_id.is_(None), Suppression.campaign_id == campaign_id)
    )
    contact = Contact.__table__
    result = session.execute(
        update(contact)
        .where(
            contact.c.campaign_id == campaign_id,
            contact.c.status == ContactStatus.PENDING,
            contact.c.e164.in_(listed),
        )
        .values(status=ContactStatus.SUPPRESSED, reason=SUPPRESSED_REASON)
    )
    return result.rowcount  # type: ignore[attr-defined, no-any-return]


# --- do-not-call lists ---------------------------------------------------------------------


def _dnc_entries(
    path_or_numbers: str | Path | Iterable[str], phone_column: str | None, region: str
) -> Iterator[tuple[int, str]]:
    """(row number, raw value) for each entry of a DNC file or list of numbers."""
    if not isinstance(path_or_numbers, str | os.PathLike):
        for row, raw in enumerate(path_or_numbers, start=1):
            yield row, raw
        return
    path = Path(path_or_numbers)
    _check_file(path)
    f, reader, header = _open_csv(path)
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
    dialect = session.connection().dialect.name
    make_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = clock.now()
    added = 0
    rejected: list[str] = []
    for batch in _normalized_batches(path_or_numbers, phone_column, region, rejected):
        # No conflict target: the unique indexes are partial (global vs per campaign),
        # and a bare DO NOTHING skips a conflict with either.
        statement = (
            make_insert(Suppression)
            .values([{"campaign_id": campaign_id, "e164": e, "added_at": now} for e in batch])
            .on_conflict_do_nothing()
            .returning(Suppression.id)
        )
        # Counted from RETURNING: rowcount of a multi-row INSERT is -1 under psycopg.
        added += len(session.execute(statement).all())
    if added >= ANALYZE_AFTER and dialect == "postgresql":
        _analyze(session, "suppression")
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
        result = session.execute(
            delete(Suppression)
            .where(scope, Suppression.e164.in_(batch))
            .execution_options(synchronize_session=False)
        )
        removed += result.rowcount  # type: ignore[attr-defined]
    return removed
