"""Callbacks: carrier events applied to attempts and contacts, orphans, settling."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import (
    Table,
    select,
)
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from dialer import metrics
from dialer.carrier.events import STATUS_EVENTS, CallEvent
from dialer.policy import rules
from dialer.script.source import label_of
from dialer.script.spec import OPT_OUT, Script
from dialer.state import media, suppression
from dialer.state.common import (
    GRACE,
    AttemptRow,
    ContactRow,
    Row,
    adopt,
    campaign_of,
    campaigns_of,
    count_finished,
    is_current,
    lock,
    lock_in,
    log_ids,
)
from dialer.store import db, dialects
from dialer.store.dialects.base import Queries
from dialer.store.models import (
    Attempt,
    AttemptStatus,
    Campaign,
    CampaignState,
    Contact,
    ContactStatus,
    Result,
)
from dialer.store.models import CallEvent as CallEventRow

log = logging.getLogger(__name__)

# Kept with the attempt, never moving it (dialer.state.media).
MEDIA_EVENTS = frozenset({"recording", "transcription"})


def apply_event(session: Session, event: CallEvent, received_at: datetime, now: datetime) -> str:
    """Apply one callback event; return what became of it (stored with the raw event).

    ``applied``: it moved the attempt. ``repeat``: its fact was already known.
    ``ignored``: not a status event. ``orphan``: no attempt matches its call id or tag
    (yet: an event can beat the create response here; ``record_created`` adopts it).
    """
    [disposition] = apply_events(session, [event], [received_at], now)
    assert disposition is not None  # only skip_locked defers
    return disposition


DEFERRED = None  # apply_events(skip_locked=True): the event was left for a later batch


def apply_events(
    session: Session,
    events: Sequence[CallEvent],
    received_ats: Sequence[datetime],
    now: datetime,
    *,
    skip_locked: bool = False,
) -> list[str | None]:
    """Apply a batch of callback events in arrival order; return each one's disposition.

    The rows end exactly as applying the events one at a time (``apply_event``, a batch
    of one) would leave them (a property test checks it), at a handful of statements per batch instead of ~8 per event: the batch's
    call ids and tag attempt ids are resolved in one query; its contacts, then its
    attempts, are locked in one ordered ``SELECT … FOR UPDATE`` each (id order, and
    contacts before attempts, as everywhere: campaign -> contact -> attempt, so two
    batches, or a batch and a dial, never deadlock); each event then goes through the
    same ``_apply`` as one alone, on the loaded rows; the ``call_event`` rows go in as
    one bulk insert; each campaign is read once.

    ``skip_locked``: contacts another transaction holds are skipped rather than waited
    for, and their events (with every later event of the batch about the same call or
    attempt, so each call's events keep their order) come back as ``DEFERRED``, applied
    and stored not at all: the caller applies them in a later batch. Concurrent
    consumers whose batches share contacts (a call's answer in one, its hangup in the
    next) then never queue behind each other's transactions.
    """
    if len(events) != len(received_ats):
        raise ValueError("one received_at per event")
    if not events:
        return []
    if session.new or session.dirty or session.deleted:
        session.flush()  # the rows are read below with Core, which does not autoflush
    call_ids = sorted({e.call_id for e in events if e.call_id})
    tagged = sorted({e.attempt_id for e in events if e.attempt_id is not None})
    a_table, c_table = Attempt.__table__, Contact.__table__
    queries = dialects.of(session)
    among = queries.among
    found = session.execute(
        select(a_table.c.id, a_table.c.contact_id, a_table.c.call_id).where(
            among(a_table.c.call_id, call_ids) | among(a_table.c.id, tagged)
        )
    ).all()
    contacts: dict[int, Row] = {}
    rows: dict[int, Row] = {}
    if found:
        contacts = {
            r.id: Row(dict(zip(_CONTACT_COLUMNS, r, strict=True)))
            for r in session.execute(
                select(*(c_table.c[name] for name in _CONTACT_COLUMNS))
                .where(among(c_table.c.id, sorted({contact_id for _, contact_id, _ in found})))
                .order_by(c_table.c.id)
                .with_for_update(skip_locked=skip_locked)
            )
        }
        mine = sorted({a for a, contact_id, _ in found if contact_id in contacts})
        if mine:
            rows = {
                r.id: Row(dict(zip(_ATTEMPT_COLUMNS, r, strict=True)))
                for r in session.execute(
                    select(*(a_table.c[name] for name in _ATTEMPT_COLUMNS))
                    .where(among(a_table.c.id, mine))
                    .order_by(a_table.c.id)
                    .with_for_update()
                )
            }
    # Attempts whose contact another transaction holds (skip_locked only), by id and call.
    busy = {a for a, contact_id, _ in found if contact_id not in contacts}
    busy_calls = {call for a, _, call in found if a in busy and call is not None}
    # As the rows are now, kept current as events adopt calls: a later event of the
    # batch finds its attempt by a call id an earlier one recorded, as it would alone.
    by_call = {a.call_id: a for a in rows.values() if a.call_id is not None}
    campaigns = campaigns_of(session, {a.campaign_id for a in rows.values()})
    stored: list[dict[str, object]] = []
    dispositions: list[str | None] = []
    for event, received_at in zip(events, received_ats, strict=True):
        if (event.call_id is not None and event.call_id in busy_calls) or (
            event.attempt_id is not None and event.attempt_id in busy
        ):
            # Its attempt is another transaction's now, or an earlier event about the
            # same call was deferred: later, in order.
            if event.call_id is not None:
                busy_calls.add(event.call_id)
            if event.attempt_id is not None:
                busy.add(event.attempt_id)
            dispositions.append(DEFERRED)
            continue
        attempt = by_call.get(event.call_id) if event.call_id else None
        if attempt is None and event.attempt_id is not None:
            attempt = rows.get(event.attempt_id)
        if attempt is None:
            disposition, attempt_id, applied_at = "orphan", None, None
            log.info("event %s for unknown call %s kept as orphan", event.event_type, event.call_id)
        elif event.call_id and attempt.call_id not in (None, event.call_id):
            disposition, attempt_id, applied_at = "ignored", attempt.id, None
            log.error(
                "event for call %s carries the tag of attempt %s, which has call %s",
                event.call_id,
                attempt.id,
                attempt.call_id,
                extra=log_ids(attempt),
            )
        else:
            contact = contacts[attempt.contact_id]
            disposition = _apply(session, contact, attempt, event, now, campaigns)
            attempt_id, applied_at = attempt.id, now
            if attempt.call_id is not None:
                by_call[attempt.call_id] = attempt
        dispositions.append(disposition)
        stored.append(_event_row(event, attempt_id, disposition, received_at, applied_at))
    _write_back(session, queries, Attempt, rows.values())
    _write_back(session, queries, Contact, contacts.values())
    if stored:
        queries.insert_events(session, stored)
    return dispositions


# What apply_events reads and may change of a contact and an attempt (what _apply,
# adopt, _finish and _revise touch).
_CONTACT_COLUMNS = (
    "id", "status", "attempts", "due_at", "ready_at", "reason", "zones", "last_attempt_id",
    "e164",
)  # fmt: skip
_ATTEMPT_COLUMNS = (
    "id", "contact_id", "campaign_id", "call_id", "status", "created_at", "lease_until",
    "answered_at", "timed_out_at", "hangup_cause", "ended_at", "result", "cause",
    "digits", "response", "recording_url", "transcript", "transcript_url",
)  # fmt: skip


# The columns apply_events may change, written back by _write_back.
_WRITTEN = {
    "contact": ("status", "attempts", "due_at", "ready_at", "reason"),
    "attempt": (
        "call_id", "status", "created_at", "lease_until", "answered_at", "timed_out_at",
        "hangup_cause", "ended_at", "result", "cause", "digits", "response",
        "recording_url", "transcript", "transcript_url",
    ),
}  # fmt: skip


def _write_back(
    session: Session,
    queries: Queries,
    model: type[Contact] | type[Attempt],
    rows: Iterable[Row],
) -> None:
    """UPDATE the changed rows by primary key (on PostgreSQL in one statement over
    arrays; elsewhere grouped by which columns changed, an executemany each)."""
    changed = [(row, diff) for row in rows if (diff := row.changes())]
    for row, _ in changed:
        if (obj := session.identity_map.get(identity_key(model, row.id))) is not None:
            session.expire(obj)  # a mapped copy in this session is stale now
    if not changed:
        return
    table = cast(Table, model.__table__)
    queries.write_back(
        session, table, _WRITTEN[table.name], [(vars(row), diff) for row, diff in changed]
    )


def _event_row(
    event: CallEvent,
    attempt_id: int | None,
    disposition: str,
    received_at: datetime,
    applied_at: datetime | None,
) -> dict[str, object]:
    return {
        "attempt_id": attempt_id,
        "call_id": event.call_id,
        "event_type": event.event_type,
        "event_time": event.time,
        "received_at": received_at,
        "applied_at": applied_at,
        "disposition": disposition,
        "payload": event.payload,
        "raw": event.raw,
    }


def _apply(
    session: Session,
    contact: ContactRow,
    attempt: AttemptRow,
    event: CallEvent,
    now: datetime,
    campaigns: dict[int, Campaign | None] | None = None,
) -> str:
    if event.event_type == "gather":
        return _gathered(session, contact, attempt, event, now, campaigns)
    if event.event_type in MEDIA_EVENTS:
        return media.apply(attempt, event)
    if event.event_type not in STATUS_EVENTS:
        return "ignored"
    if attempt.call_id is None and event.call_id:
        adopt(session, contact, attempt, event.call_id, now, campaigns)
    at = event.time or now
    if event.event_type == "answer":
        if attempt.answered_at is not None:
            return "repeat"
        attempt.answered_at = at
    elif event.event_type == "timeout":
        if attempt.timed_out_at is not None:
            return "repeat"
        attempt.timed_out_at = at
    else:  # hangup
        if attempt.hangup_cause is not None:
            return "repeat"
        attempt.hangup_cause = event.cause or "UNSPECIFIED"
        attempt.ended_at = at
    if attempt.status == AttemptStatus.CREATED and attempt.answered_at is not None:
        attempt.status = AttemptStatus.ANSWERED
        attempt.lease_until = now + GRACE
    if attempt.status in (AttemptStatus.CREATED, AttemptStatus.ANSWERED):
        if _unconfirmed(attempt):
            # Normal clearing with no answer seen: the answer may have been lost on the
            # way (a broker restart). Dialing again now could call someone who already
            # answered, so the sweep reads the call from the carrier first.
            attempt.lease_until = now
        elif attempt.hangup_cause is not None or attempt.timed_out_at is not None:
            _finish(session, contact, attempt, now, campaigns)
    elif attempt.status == AttemptStatus.ENDED:
        _revise(contact, attempt)
    return "applied"


def _gathered(
    session: Session,
    contact: ContactRow,
    attempt: AttemptRow,
    event: CallEvent,
    now: datetime,
    campaigns: dict[int, Campaign | None] | None,
) -> str:
    """The key the person pressed in answer to the call script (dialer.script): the
    attempt keeps it and its label, in this transaction; the label ``opt-out`` puts the
    number on the global do-not-call list, here too. A call has one gather: a second
    event about it is a repeat. It never changes how the call counts."""
    if attempt.digits is not None:
        return "repeat"
    campaign = campaign_of(session, attempt.campaign_id, campaigns)
    if campaign is None:
        return "ignored"
    # The keys are all a gather needs of the script (the batch reads no more of it).
    keys = tuple((str(k), str(label)) for k, label in campaign.keys or ())
    attempt.digits, attempt.response = label_of(Script(keys=keys), event.payload)
    label = attempt.response
    db.after_commit(session, lambda: metrics.response(label))
    if label == OPT_OUT and contact.e164:
        suppression.opt_out(session, contact.e164, now)
        log.info("opt-out by key on attempt %s", attempt.id, extra=log_ids(attempt))
    return "applied"


def _unconfirmed(attempt: AttemptRow) -> bool:
    return (
        attempt.hangup_cause == "NORMAL_CLEARING"
        and attempt.answered_at is None
        and attempt.timed_out_at is None
    )


def settle(session: Session, attempt_id: int, now: datetime) -> bool:
    """End a call whose hangup is known, once the carrier's record has been read (or
    could not be, for long): whatever facts are in by now decide the outcome."""
    locked = lock_in(session, attempt_id, AttemptStatus.CREATED, AttemptStatus.ANSWERED)
    if locked is None:
        return False
    contact, attempt = locked
    if attempt.hangup_cause is None and attempt.timed_out_at is None:
        return False
    _finish(session, contact, attempt, now)
    return True


def _outcome(attempt: AttemptRow) -> rules.Outcome:
    return rules.outcome(
        answered=attempt.answered_at is not None,
        timed_out=attempt.timed_out_at is not None,
        hangup_cause=attempt.hangup_cause,
    )


def _finish(
    session: Session,
    contact: ContactRow,
    attempt: AttemptRow,
    now: datetime,
    campaigns: dict[int, Campaign | None] | None = None,
) -> None:
    result = _outcome(attempt)
    attempt.status = AttemptStatus.ENDED
    attempt.result, attempt.cause = result.result, result.cause
    count_finished(session, AttemptStatus.ENDED, result.result)
    attempt.ended_at = attempt.ended_at or attempt.timed_out_at or now
    attempt.lease_until = None
    if not is_current(contact, attempt):
        return
    campaign = campaign_of(session, attempt.campaign_id, campaigns)
    assert campaign is not None
    step = rules.after_attempt(
        campaign,
        contact.attempts,
        result,
        now,
        cancelled=campaign.state == CampaignState.CANCELLED,
        zones=contact.zones,
    )
    contact.status, contact.due_at, contact.reason = step.status, step.due_at, step.reason
    contact.ready_at = step.ready_at


def _revise(contact: ContactRow, attempt: AttemptRow) -> None:
    """A late fact about an ended call: refresh its result; an answer upgrades the contact.

    Only ever forward: an answer that arrives after its hangup turns a scheduled retry (or
    an unanswered contact) into answered, and nothing turns answered back.
    """
    result = _outcome(attempt)
    attempt.result, attempt.cause = result.result, result.cause
    if (
        result.result is Result.ANSWERED
        and contact.last_attempt_id == attempt.id
        and contact.status
        in (ContactStatus.PENDING, ContactStatus.UNANSWERED, ContactStatus.CANCELLED)
    ):
        contact.status, contact.due_at, contact.reason = ContactStatus.ANSWERED, None, None


def apply_orphans(session: Session, contact: Contact, attempt: Attempt, now: datetime) -> None:
    if attempt.call_id is None:
        return
    orphans = session.scalars(
        select(CallEventRow)
        .where(CallEventRow.call_id == attempt.call_id, CallEventRow.disposition == "orphan")
        .order_by(CallEventRow.id)
        .with_for_update(skip_locked=True)
    ).all()
    for row in orphans:
        from dialer.carrier.events import parse

        row.attempt_id = attempt.id
        row.disposition = _apply(session, contact, attempt, parse(row.payload), now)
        row.applied_at = now


def adopt_orphans(session: Session, now: datetime, older_than: timedelta, limit: int = 500) -> int:
    """Sweep: apply orphan events whose call id has since been recorded on an attempt."""
    pairs = (
        session.execute(
            select(Attempt.id)
            .distinct()
            .join(CallEventRow, CallEventRow.call_id == Attempt.call_id)
            .where(
                CallEventRow.disposition == "orphan", CallEventRow.received_at < now - older_than
            )
            .limit(limit)
        )
        .scalars()
        .all()
    )
    for attempt_id in pairs:
        locked = lock(session, attempt_id)
        if locked:
            apply_orphans(session, *locked, now)
    return len(pairs)
