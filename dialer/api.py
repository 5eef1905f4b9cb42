"""The Python API admin scripts use; the CLI is a thin layer over it.

    from dialer import api

    report = api.create_campaign("spring-renewals", "+19195551212", "contacts.csv",
                                 max_attempts=2, tag_fields=["account"])
    api.start(report["id"])
    print(api.status(report["id"])["contacts"])
    api.export(report["id"], "results.csv")

Every function opens and commits its own transaction and returns plain data (dicts,
lists), so a script never handles sessions. Errors are ``ApiError`` (bad input, unknown
campaign) or ``CampaignStateError`` (a control the campaign's state forbids; also
``dialer.state.common.CampaignStateError``),
each with a message that names what is wrong.
"""

from __future__ import annotations

import csv
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dialer import clock, logs
from dialer.errors import ApiError, CampaignStateError
from dialer.state import controls, starting
from dialer.store import campaign_status, db, dialects
from dialer.store import export as export_columns
from dialer.store.models import (
    Attempt,
    AttemptStatus,
    CallerId,
    Campaign,
    CampaignRun,
    CampaignState,
    Contact,
)

# The importing (phonenumbers, the CSV reader) and the calling rules are imported by the
# functions that use them: ``dialer campaign pause`` and ``cancel`` come through here.

log = logging.getLogger(__name__)

__all__ = [
    "ApiError",
    "CampaignStateError",
    "create_campaign",
    "start",
    "pause",
    "resume",
    "cancel",
    "update",
    "status",
    "export",
    "list_campaigns",
    "add_dnc",
    "remove_dnc",
    "EXPORT_COLUMNS",
]

EXPORT_COLUMNS = export_columns.COLUMNS  # then the context columns
RULE_FIELDS = controls.RULE_FIELDS  # what ``update`` (and `campaign update`) can change


def _check_options(
    *,
    region: str,
    cps: float | None,
    max_concurrent: int | None,
    max_attempts: int,
    retry_delay: int,
    call_timeout: int | None,
    window: str | None,
    days: str | None,
    timezone: str,
    schedule: str | None,
    tag_fields: list[str],
) -> None:
    from dialer.state import tags

    if not re.match(r"^[A-Z]{2}$", region):
        raise ApiError(f"--region must be a two-letter country code like US, got {region!r}")
    _check_rules(
        cps=cps,
        max_concurrent=max_concurrent,
        max_attempts=max_attempts,
        retry_delay=retry_delay,
        window=window,
        days=days,
        timezone=timezone,
        schedule=schedule,
    )
    if call_timeout is not None and not 1 <= call_timeout <= 300:
        raise ApiError(
            f"--call-timeout must be 1 to 300 seconds (the carrier's limit), got {call_timeout}"
        )
    for name in tag_fields:
        if name in tags.RESERVED_TAG_KEYS:
            raise ApiError(
                f"--tag-field {name!r} is reserved: the tag uses it for the attempt's identity"
            )


def _check_rules(
    *,
    cps: float | None = None,
    max_concurrent: int | None = None,
    max_attempts: int | None = None,
    retry_delay: int | None = None,
    window: str | None = None,
    days: str | None = None,
    timezone: str | None = None,
    schedule: str | None = None,
) -> None:
    """The rule options ``create`` and ``update`` share; each error names its option."""
    from dialer.policy import rules

    if cps is not None and not cps > 0:
        raise ApiError(f"--cps must be greater than 0, got {cps}")
    if max_concurrent is not None and max_concurrent < 1:
        raise ApiError(f"--max-concurrent must be at least 1, got {max_concurrent}")
    if max_attempts is not None and max_attempts < 1:
        raise ApiError(f"--max-attempts must be at least 1, got {max_attempts}")
    if retry_delay is not None and retry_delay < 0:
        raise ApiError(f"--retry-delay must be 0 or more seconds, got {retry_delay}")
    try:
        rules.Hours.parse(window, days)
        if timezone is not None:
            rules.zone(timezone)
        if schedule is not None:
            rules.check_schedule(schedule, timezone or "UTC")
    except rules.RuleError as exc:
        raise ApiError(str(exc)) from None


def create_campaign(
    name: str,
    from_number: str | Iterable[str] | None,
    contacts: str | Path | Iterable[Mapping[str, Any]],
    *,
    phone_column: str = "phone",
    region: str = "US",
    cps: float | None = None,
    max_concurrent: int | None = None,
    max_attempts: int = 3,
    retry_delay: int = 600,
    call_timeout: int | None = None,
    window: str | None = None,
    days: str | None = None,
    timezone: str = "UTC",
    schedule: str | None = None,
    dnc: Iterable[str | Path] = (),
    tag_fields: Iterable[str] = (),
    progress: Callable[[int], None] | None = None,
    say: str | None = None,
    play: str | None = None,
    voice: str | None = None,
    locale: str | None = None,
    gender: str | None = None,
    keys: str | Mapping[str, str] | None = None,
    goodbye: str | None = None,
    transfer_to: str | None = None,
    max_duration: int | None = None,
    from_file: str | Path | None = None,
    local_presence: bool = False,
    record: bool = False,
    record_format: str | None = None,
    record_max: int | None = None,
    transcribe: bool = False,
    sip_headers: Mapping[str, str] | Iterable[str] | None = None,
    callback_timeout: int | None = None,
) -> dict[str, Any]:
    """Create a draft campaign from a CSV file (or rows) and return the import report.

    ``from_number`` is one number, a comma-separated list or a list; ``from_file`` a CSV
    of numbers (column ``phone``, optional ``label``): together the caller-id pool
    (docs/interface.md, "Caller ids"). ``record`` … ``callback_timeout`` pass to every
    call (docs/interface.md, "Recording and carrier options").

    Every row becomes a contact, the bad ones too, with their status and reason. The
    call script (``say`` … ``max_duration``; docs/interface.md, "What an answered call
    hears") is checked against the file's columns; a row whose message would be too long
    for the carrier is ``invalid`` with the reason.
    """
    import tempfile

    from dialer.carrier import options
    from dialer.importing.callers import parse_pool
    from dialer.importing.contacts import import_contacts
    from dialer.importing.dnc import add_suppressions
    from dialer.importing.files import ContactFileError, read_columns
    from dialer.script import spec

    tag_fields = list(tag_fields)
    region = region.upper()
    if not re.match(r"^[A-Z]{2}$", region):
        raise ApiError(f"--region must be a two-letter country code like US, got {region!r}")
    pool = parse_pool(from_number, from_file, region=region)
    call_options = options.check(
        {
            "record": record,
            "record_format": record_format,
            "record_max": record_max,
            "transcribe": transcribe,
            "sip_headers": sip_headers,
            "callback_timeout": callback_timeout,
        }
    )
    _check_options(
        region=region,
        cps=cps,
        max_concurrent=max_concurrent,
        max_attempts=max_attempts,
        retry_delay=retry_delay,
        call_timeout=call_timeout,
        window=window,
        days=days,
        timezone=timezone,
        schedule=schedule,
        tag_fields=tag_fields,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = (
            Path(contacts)
            if isinstance(contacts, str | Path)
            else _rows_to_csv(contacts, Path(tmp) / "contacts.csv")
        )
        try:
            columns = read_columns(path)
        except ContactFileError as exc:
            raise ApiError(str(exc)) from None
        script_options: dict[str, Any] = {
            "say": say, "play": play, "voice": voice, "locale": locale, "gender": gender,
            "keys": keys, "goodbye": goodbye, "transfer_to": transfer_to,
            "max_duration": max_duration,
        }  # fmt: skip
        try:
            script = spec.build(**script_options, columns=[c for c in columns if c != phone_column])
        except spec.ScriptError as exc:
            raise ApiError(str(exc)) from None
        missing = [f for f in tag_fields if f not in columns or f == phone_column]
        if missing:
            raise ApiError(
                f"--tag-field names columns the file does not have as context: "
                f"{', '.join(missing)} (columns: {', '.join(columns)})"
            )
        with db.session_scope() as session:
            campaign = Campaign(
                name=name,
                from_number=pool[0].e164,
                from_count=len(pool),
                local_presence=local_presence or None,
                **{k: v if v is not False else None for k, v in call_options.items()},
                state=CampaignState.DRAFT,
                region=region,
                phone_column=phone_column,
                columns=[],
                tag_fields=tag_fields,
                cps=cps,
                max_concurrent=max_concurrent,
                max_attempts=max_attempts,
                retry_delay=retry_delay,
                call_timeout=call_timeout,
                window=window,
                days=days.lower() if days else None,
                timezone=timezone,
                schedule=schedule,
                created_at=clock.now(),
                **script.as_row(),
            )
            session.add(campaign)
            session.flush()
            session.add_all(
                CallerId(campaign_id=campaign.id, e164=e.e164, label=e.label, state="active")
                for e in pool
            )
            try:
                for dnc_file in dnc:
                    add_suppressions(session, dnc_file, campaign_id=campaign.id, region=region)
                report = import_contacts(
                    session, campaign, path, progress=progress, row_check=spec.row_check(script)
                )
            except ContactFileError as exc:
                raise ApiError(str(exc)) from None
            campaign_id = campaign.id
    return {
        "id": campaign_id,
        "rows": report.rows,
        "imported": report.imported,
        "invalid": report.invalid,
        "duplicate": report.duplicate,
        "suppressed": report.suppressed,
    }


def _rows_to_csv(rows: Iterable[Mapping[str, Any]], path: Path) -> Path:
    """Rows given as mappings go through the same streaming import as a file."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer: csv.DictWriter[str] | None = None
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(f, fieldnames=list(row.keys()), restval="")
                writer.writeheader()
            try:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
            except ValueError as exc:
                raise ApiError(f"every row must have the first row's keys: {exc}") from None
        if writer is None:
            raise ApiError("no rows given")
    return path


def _campaign(session: Session, campaign_id: int, *, lock: bool = False) -> Campaign:
    stmt = select(Campaign).where(Campaign.id == campaign_id)
    if lock:
        stmt = stmt.with_for_update()
    campaign = session.scalars(stmt).one_or_none()
    if campaign is None:
        raise ApiError(f"no campaign with id {campaign_id}")
    return campaign


def start(campaign_id: int) -> dict[str, Any]:
    """Start (or resume) a campaign; its first calls go out within a second."""
    _to_running(starting.start, campaign_id)
    _release_now(campaign_id)
    return status(campaign_id)


def resume(campaign_id: int) -> dict[str, Any]:
    _to_running(starting.resume, campaign_id)
    _release_now(campaign_id)
    return status(campaign_id)


def _to_running(transition: Callable[..., None], campaign_id: int) -> None:
    """``dialer.state.starting`` (what ``dialer campaign start`` runs without this module)
    over a pooled connection: one implementation of the transition."""
    engine = db.engine()
    conn = engine.raw_connection()
    try:
        driver = dialects.of_bind(engine).driver
        transition(conn.dbapi_connection, driver, campaign_id, clock.now())
    finally:
        conn.close()


def pause(campaign_id: int, wait: float = 30.0) -> dict[str, Any]:
    """Pause; when this returns, no new call is created for the campaign.

    Queued work is withdrawn in the same transaction; claims already made are waited
    for (at most ``wait`` seconds), since their requests may be on the wire.
    """
    with db.session_scope() as session:
        controls.pause(session, _campaign(session, campaign_id, lock=True), clock.now())
    _wait_for_sends(campaign_id, wait)
    return status(campaign_id)


def cancel(campaign_id: int, wait: float = 30.0) -> dict[str, Any]:
    """Cancel; pending contacts become ``cancelled`` and no new call is created."""
    with db.session_scope() as session:
        controls.cancel(session, _campaign(session, campaign_id, lock=True), clock.now())
    _wait_for_sends(campaign_id, wait)
    return status(campaign_id)


_UNSET: Any = object()


def update(
    campaign_id: int,
    *,
    window: str | None = _UNSET,
    days: str | None = _UNSET,
    timezone: str = _UNSET,
    cps: float | None = _UNSET,
    max_concurrent: int | None = _UNSET,
    max_attempts: int = _UNSET,
    retry_delay: int = _UNSET,
    schedule: str | None = _UNSET,
    **script_options: Any,
) -> dict[str, Any]:
    """Change a campaign's rules for the work not yet sent; calls already made stand.

    Pass only what changes; ``None`` removes an optional rule (the window, the days,
    the campaign's --cps or --max-concurrent, the schedule, a call script option).
    ``script_options``: ``say``, ``play``, ``voice``, ``locale``, ``gender``, ``keys``,
    ``goodbye``, ``transfer_to``, ``max_duration``; calls answered from then on hear the
    new script. Also ``record``, ``record_format``, ``record_max``, ``transcribe``,
    ``sip_headers``, ``callback_timeout`` and ``local_presence``: calls sent from then on
    carry them. Returns the status, with ``changed`` listing the fields that changed.
    """
    from dialer.carrier import options
    from dialer.script import spec

    call_options = {
        k: script_options.pop(k) for k in controls.CALL_OPTION_FIELDS if k in script_options
    }
    unknown = sorted(set(script_options) - set(spec.FIELDS))
    if unknown:
        raise ApiError(f"update: unknown option(s): {', '.join(unknown)}")
    if "local_presence" in call_options and not isinstance(
        call_options["local_presence"], bool | None
    ):
        raise ApiError("--local-presence must be true or false")
    # False and None both mean "off": stored as NULL, as create stores them.
    call_options = {k: None if v is False else v for k, v in options.check(call_options).items()}
    given: dict[str, Any] = {
        k: v
        for k, v in {
            "window": window,
            "days": days.lower() if isinstance(days, str) else days,
            "timezone": timezone,
            "cps": cps,
            "max_concurrent": max_concurrent,
            "max_attempts": max_attempts,
            "retry_delay": retry_delay,
            "schedule": schedule,
        }.items()
        if v is not _UNSET
    }
    for name in ("timezone", "max_attempts", "retry_delay"):
        if name in given and given[name] is None:
            raise ApiError(f"--{name.replace('_', '-')} cannot be removed, only changed")
    with db.session_scope() as session:
        campaign = _campaign(session, campaign_id, lock=True)
        # Window, days, zone and schedule are checked together, as they will stand.
        merged = {
            "window": campaign.window,
            "days": campaign.days,
            "timezone": campaign.timezone,
            "schedule": campaign.schedule,
        }
        merged |= {k: v for k, v in given.items() if k in merged}
        _check_rules(**({k: v for k, v in given.items() if k not in merged} | merged))
        if script_options:
            # Checked as it will stand, against the file's columns.
            current = spec.Script.of(campaign).as_row()
            wanted = current | script_options
            try:
                script = spec.build(**wanted, columns=campaign.columns or [])
            except spec.ScriptError as exc:
                raise ApiError(str(exc)) from None
            built = script.as_row()
            given |= {k: built[k] for k in script_options}
        given |= call_options
        changed = controls.update_rules(session, campaign, given, clock.now())
    if changed:
        log.info("campaign %s: rules changed: %s", campaign_id, ", ".join(changed))
        _release_now(campaign_id)
    return status(campaign_id) | {"changed": changed}


def _release_now(campaign_id: int) -> None:
    """Hand out the first work at once rather than at the next tick; if the broker is
    out of reach the tick does it later, so a failure here is only logged."""
    try:
        from dialer.worker import scheduling

        with logs.bound(campaign=campaign_id):
            scheduling.release(campaign_id, limit=scheduling.FIRST_RELEASE)
    except Exception as exc:
        log.warning(
            "could not release work now (%s); the next tick will",
            type(exc).__name__,
            extra={"campaign": campaign_id},
        )


def _wait_for_sends(campaign_id: int, wait: float) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with db.session_scope() as session:
            sending = session.scalar(
                select(func.count())
                .select_from(Attempt)
                .where(Attempt.campaign_id == campaign_id, Attempt.status == AttemptStatus.SENDING)
            )
        if not sending:
            return
        time.sleep(0.1)


def status(campaign_id: int, run: int | None = None) -> dict[str, Any]:
    """The campaign's state and its contacts counted by status (in the current run, or
    in run ``run`` when given), with who waits for a calling window and the next run.

    Read by ``dialer.store.campaign_status`` (what ``dialer campaign status`` runs without
    this module) over a pooled connection: counts from the tallies PostgreSQL keeps,
    O(statuses) however many contacts.
    """
    engine = db.engine()
    conn = engine.raw_connection()
    try:
        return campaign_status.read(
            conn.dbapi_connection, campaign_id, run, driver=dialects.of_bind(engine).driver
        )
    finally:
        conn.close()


def list_campaigns() -> list[dict[str, Any]]:
    with db.session_scope() as session:
        totals = dict(
            session.execute(
                select(Contact.campaign_id, func.count()).group_by(Contact.campaign_id)
            ).all()
        )
        return [
            {
                "id": c.id,
                "name": c.name,
                "state": c.state,
                "from": c.from_number,
                "total": totals.get(c.id, 0),
                "created_at": c.created_at.isoformat(),
            }
            for c in session.scalars(select(Campaign).order_by(Campaign.id))
        ]


def export(
    campaign_id: int, out: str | Path | IO[str], run: int | None = None, *, raw: bool = False
) -> int:
    """Write one CSV row per contact, in file order; return the number of rows.

    The current run by default; ``run`` picks a finished run of a recurring campaign.
    Columns: ``EXPORT_COLUMNS``, then the file's context columns (dialer.store.export).
    Formula-safe: a value from the file, the call or the carrier that starts with
    ``= + - @``, a tab or a CR has a ``'`` put before it, so a spreadsheet shows it
    rather than runs it (CWE-1236); ``raw=True`` writes every value as stored.
    """
    if isinstance(out, str | Path):
        with open(out, "w", newline="", encoding="utf-8") as f:
            return export(campaign_id, f, run, raw=raw)
    with db.session_scope() as session:
        campaign = _campaign(session, campaign_id)
        past_run = None
        if run is not None and run != campaign.run:
            past_run = session.scalar(
                select(CampaignRun.id).where(
                    CampaignRun.campaign_id == campaign_id, CampaignRun.number == run
                )
            )
            if past_run is None:
                raise ApiError(f"campaign {campaign_id} has no run {run}")
        return export_columns.write(session, campaign, out, past_run, raw=raw)


def add_dnc(
    path: str | Path, *, campaign_id: int | None = None, region: str = "US"
) -> dict[str, Any]:
    """Add a do-not-call file (global, or one campaign's); pending contacts on it are
    suppressed at once, and every call is checked again right before it is sent."""
    from dialer.importing.dnc import add_suppressions
    from dialer.importing.files import ContactFileError
    from dialer.state import suppression

    with db.session_scope() as session:
        if campaign_id is not None:
            _campaign(session, campaign_id)
        try:
            added, problems = add_suppressions(
                session, path, campaign_id=campaign_id, region=region
            )
        except ContactFileError as exc:
            raise ApiError(str(exc)) from None
        suppressed = suppression.suppress_listed(session, campaign_id)
    return {"added": added, "invalid": problems, "suppressed_contacts": suppressed}


def remove_dnc(
    path: str | Path, *, campaign_id: int | None = None, region: str = "US"
) -> dict[str, Any]:
    from dialer.importing.dnc import remove_suppressions
    from dialer.importing.files import ContactFileError

    with db.session_scope() as session:
        try:
            removed = remove_suppressions(session, path, campaign_id=campaign_id, region=region)
        except ContactFileError as exc:
            raise ApiError(str(exc)) from None
    return {"removed": removed}
