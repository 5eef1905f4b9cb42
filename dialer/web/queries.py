"""What the console reads that ``dialer.api`` has no function for. Read-only, and each
statement bounded by an index, so a page costs the same on a million contacts as on ten:

- the list of campaigns (ids of one page, counts by state): the ``campaign`` table;
- statuses of many campaigns: ``dialer.store.campaign_status``'s reader, what ``campaign
  status`` uses (the tallies; O(statuses) each), over a few connections at once;
- the import report: the counts kept on the campaign, and the rows that will not be
  dialed, in file order (``uq_contact_campaign_row``: the walk stops at the page's 20;
  the page keeps them until their count changes);
- recent carrier errors and push-backs: attempts in the statuses that carry them
  (``ix_attempt_campaign_status``), newest first;
- the do-not-call list: by number (``uq_suppression_*``) or the newest entries;
- a contact's story: contacts by number (``ix_contact_e164``), their attempts
  (``ix_attempt_contact``), each attempt's callbacks (``ix_call_event_attempt``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import case, func, select

from dialer import clock, settings
from dialer.errors import ApiError
from dialer.store import campaign_status, db
from dialer.store.models import (
    Attempt,
    AttemptStatus,
    CallEvent,
    Campaign,
    CampaignState,
    Contact,
    ContactStatus,
    Suppression,
)
from dialer.store.tally import call_tally, contact_tally

# Campaigns that want watching first, then drafts, then the finished ones, newest first.
_STATE_ORDER = case(
    {CampaignState.RUNNING: 0, CampaignState.PAUSED: 1, CampaignState.DRAFT: 2},
    value=Campaign.state,
    else_=3,
)
NOT_DIALED = (ContactStatus.INVALID, ContactStatus.DUPLICATE, ContactStatus.SUPPRESSED)


def campaign_page(
    state: str | None, name: str | None, offset: int, limit: int
) -> tuple[list[int], int, dict[str, int]]:
    """(ids of one page, how many match, campaigns by state)."""
    where = []
    if state:
        where.append(Campaign.state == state)
    if name:
        escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(Campaign.name.ilike(f"%{escaped}%", escape="\\"))
    with db.session_scope() as session:
        ids = list(
            session.scalars(
                select(Campaign.id)
                .where(*where)
                .order_by(_STATE_ORDER, Campaign.id.desc())
                .offset(offset)
                .limit(limit)
            )
        )
        matching = session.scalar(select(func.count()).select_from(Campaign).where(*where)) or 0
        by_state = {
            str(s): int(n)
            for s, n in session.execute(
                select(Campaign.state, func.count()).group_by(Campaign.state)
            )
        }
    return ids, int(matching), by_state


class StatusReaders:
    """``api.status`` of many campaigns at once, read as ``dialer campaign status``
    reads (``campaign_status.Reader``: one autocommit connection, one round trip a
    campaign), over ``threads`` connections kept by the threads of a small pool: a page's
    wait is the round trips', not the CPU's. ``close`` ends the threads and connections."""

    def __init__(self, threads: int = 8) -> None:
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._readers: list[campaign_status.Reader] = []
        self._lock = threading.Lock()

    def read(self, ids: list[int]) -> list[dict[str, Any]]:
        """Each campaign's status, in order; a campaign deleted meanwhile is left out."""
        if not ids:
            return []
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="console-status")
            pool = self._pool
        n = min(self.threads, len(ids))
        found: dict[int, dict[str, Any]] = {}
        for part in pool.map(self._read_many, [ids[i::n] for i in range(n)]):
            found.update(part)
        return [found[cid] for cid in ids if cid in found]

    def _read_many(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        url = settings.get().database_url
        reader: campaign_status.Reader | None = getattr(self._local, "reader", None)
        if reader is None or reader.url != url:
            if reader is not None:
                reader.close()
            reader = self._local.reader = campaign_status.Reader(url)
            with self._lock:
                self._readers.append(reader)
        out = {}
        for cid in ids:
            try:
                out[cid] = reader.status(cid)
            except ApiError:
                continue
        return out

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            readers, self._readers = self._readers, []
        if pool is not None:
            pool.shutdown(wait=True)
        for reader in readers:
            reader.close()


def active_ids() -> list[int]:
    """Campaigns whose counts can move: running or paused (their dialing calls end)."""
    with db.session_scope() as session:
        return list(
            session.scalars(
                select(Campaign.id).where(
                    Campaign.state.in_([CampaignState.RUNNING, CampaignState.PAUSED])
                )
            )
        )


def counts(ids: list[int]) -> list[dict[str, Any]]:
    """What the activity sampler needs of many campaigns, in three statements whatever
    their number: ``{id, state, run, started_at, calls, contacts}``. On PostgreSQL the sums of the
    tallies ``campaign status`` reads; on SQLite (the demo: small) the rows counted."""
    if not ids:
        return []
    with db.session_scope() as session:
        campaigns = session.execute(
            select(Campaign.id, Campaign.state, Campaign.run, Campaign.started_at).where(
                Campaign.id.in_(ids)
            )
        ).all()
        if session.get_bind().dialect.name == "postgresql":
            by_status = session.execute(
                select(
                    contact_tally.c.campaign_id, contact_tally.c.status, func.sum(contact_tally.c.n)
                )
                .where(contact_tally.c.campaign_id.in_(ids))
                .group_by(contact_tally.c.campaign_id, contact_tally.c.status)
            ).all()
            calls = session.execute(
                select(call_tally.c.campaign_id, func.sum(call_tally.c.n))
                .where(call_tally.c.campaign_id.in_(ids))
                .group_by(call_tally.c.campaign_id)
            ).all()
        else:
            by_status = session.execute(
                select(Contact.campaign_id, Contact.status, func.count())
                .where(Contact.campaign_id.in_(ids))
                .group_by(Contact.campaign_id, Contact.status)
            ).all()
            calls = session.execute(
                select(Attempt.campaign_id, func.count())
                .where(Attempt.campaign_id.in_(ids), Attempt.call_id.is_not(None))
                .group_by(Attempt.campaign_id)
            ).all()
    out: dict[int, dict[str, Any]] = {
        cid: {
            "id": cid,
            "state": state,
            "run": run,
            "started_at": started,
            "calls": 0,
            "contacts": {},
        }
        for cid, state, run, started in campaigns
    }
    for cid, status, n in by_status:
        if cid in out:
            out[cid]["contacts"][status] = out[cid]["contacts"].get(status, 0) + int(n or 0)
    for cid, n in calls:
        if cid in out:
            out[cid]["calls"] = int(n or 0)
    return list(out.values())


def import_report(campaign_id: int) -> dict[str, Any] | None:
    """The counts the import left on the campaign, and its options as given."""
    with db.session_scope() as session:
        c = session.get(Campaign, campaign_id)
        if c is None:
            return None
        return {
            "rows": c.rows,
            "imported": c.imported,
            "invalid": c.invalid,
            "duplicate": c.duplicate,
            "suppressed": c.suppressed,
            "columns": list(c.columns or []),
            "phone_column": c.phone_column,
            "region": c.region,
            "tag_fields": list(c.tag_fields or []),
        }


def not_dialed(campaign_id: int, limit: int | None = 50) -> list[dict[str, Any]]:
    """Rows of the file that will not be dialed (invalid, duplicate, suppressed), in file
    order, with their reasons; ``limit`` None: all of them."""
    stmt = (
        select(Contact.row, Contact.phone, Contact.status, Contact.reason)
        .where(Contact.campaign_id == campaign_id, Contact.status.in_(NOT_DIALED))
        .order_by(Contact.row)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    with db.session_scope() as session:
        return [
            {"row": r, "phone": p, "status": s, "reason": why}
            for r, p, s, why in session.execute(stmt)
        ]


def iter_not_dialed(campaign_id: int) -> Iterator[tuple[int, str, str, str | None]]:
    """Every row that will not be dialed, streamed (the downloadable report)."""
    with db.session_scope() as session:
        rows = session.execute(
            select(Contact.row, Contact.phone, Contact.status, Contact.reason)
            .where(Contact.campaign_id == campaign_id, Contact.status.in_(NOT_DIALED))
            .order_by(Contact.row)
            .execution_options(yield_per=5000)
        )
        for row in rows:
            yield row[0], row[1], row[2], row[3]


# Attempts that carry a carrier error: refused for good (failed), ambiguous (unknown),
# or pushed back and queued again (queued, with the error and a not-before time).
_ERROR_STATUSES = (AttemptStatus.FAILED, AttemptStatus.UNKNOWN, AttemptStatus.QUEUED)


def carrier_trouble(campaign_id: int, limit: int = 10) -> dict[str, Any]:
    """The newest attempts with a carrier error, and the push-backs in force now."""
    now = clock.now()
    with db.session_scope() as session:
        recent = (
            select(
                Attempt.id,
                Attempt.status,
                Attempt.call_id,
                Attempt.cause,
                Attempt.error,
                Attempt.not_before,
                Attempt.ended_at,
                Attempt.queued_at,
                Attempt.contact_id,
            )
            .where(
                Attempt.campaign_id == campaign_id,
                Attempt.status.in_(_ERROR_STATUSES),
                Attempt.error.is_not(None),
            )
            # Newest first, but found through ix_attempt_campaign_status and sorted: the
            # primary key read backwards (the planner's other choice) would walk every
            # attempt of every campaign since this one's last error.
            .order_by((Attempt.id + 0).desc())
            .limit(limit)
            .subquery()
        )
        rows = session.execute(
            select(
                recent.c.id,
                recent.c.status,
                recent.c.call_id,
                recent.c.cause,
                recent.c.error,
                recent.c.not_before,
                recent.c.ended_at,
                recent.c.queued_at,
                Contact.e164,
            )
            .join(Contact, Contact.id == recent.c.contact_id)
            .order_by(recent.c.id.desc())
        ).all()
        held, until = session.execute(
            select(func.count(), func.max(Attempt.not_before)).where(
                Attempt.campaign_id == campaign_id,
                Attempt.status == AttemptStatus.QUEUED,
                Attempt.not_before > now,
            )
        ).one()
    errors = [
        {
            "attempt": aid,
            "status": status,
            "call_id": call_id,
            "cause": cause,
            "error": error,
            "pushed_back_until": not_before if not_before and not_before > now else None,
            "at": ended or queued,
            "number": e164,
        }
        for aid, status, call_id, cause, error, not_before, ended, queued, e164 in rows
    ]
    return {"errors": errors, "held": int(held or 0), "held_until": until}


# ------------------------------------------------------------------ do-not-call


def dnc_find(e164: str) -> list[dict[str, Any]]:
    """Every list the number is on: the global one and campaigns' own."""
    with db.session_scope() as session:
        return [
            {"e164": e, "campaign_id": cid, "campaign": name, "added_at": added}
            for e, cid, name, added in session.execute(
                select(
                    Suppression.e164, Suppression.campaign_id, Campaign.name, Suppression.added_at
                )
                .outerjoin(Campaign, Campaign.id == Suppression.campaign_id)
                .where(Suppression.e164 == e164)
                .order_by(Suppression.campaign_id.nulls_first())
            )
        ]


def dnc_recent(limit: int = 50) -> list[dict[str, Any]]:
    with db.session_scope() as session:
        return [
            {"e164": e, "campaign_id": cid, "campaign": name, "added_at": added}
            for e, cid, name, added in session.execute(
                select(
                    Suppression.e164, Suppression.campaign_id, Campaign.name, Suppression.added_at
                )
                .outerjoin(Campaign, Campaign.id == Suppression.campaign_id)
                .order_by(Suppression.id.desc())
                .limit(limit)
            )
        ]


# ------------------------------------------------------------------ a contact's story

# Columns another part of the dialer may add to contacts and attempts (a call script's
# response and digits, a recording): shown when the models have them.
_OPTIONAL = ("response", "digits", "from_number", "recording_url", "transcript")


def _optional(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _OPTIONAL if getattr(row, name, None) is not None}


def contact_story(e164: str | None, call_id: str | None, limit: int = 20) -> list[dict[str, Any]]:
    """The contacts with this number (or the one a call id belongs to), newest first,
    each with its attempts and each attempt's callbacks as received."""
    with db.session_scope() as session:
        stmt = select(Contact, Campaign.name).join(Campaign, Campaign.id == Contact.campaign_id)
        if call_id:
            owner = session.scalar(select(Attempt.contact_id).where(Attempt.call_id == call_id))
            if owner is None:
                return []
            stmt = stmt.where(Contact.id == owner)
        elif e164:
            stmt = stmt.where(Contact.e164 == e164)
        else:
            return []
        contacts = session.execute(stmt.order_by(Contact.id.desc()).limit(limit)).all()
        story = []
        for contact, campaign_name in contacts:
            attempts = session.scalars(
                select(Attempt).where(Attempt.contact_id == contact.id).order_by(Attempt.id)
            ).all()
            events: dict[int, list[CallEvent]] = {a.id: [] for a in attempts}
            if attempts:
                for event in session.scalars(
                    select(CallEvent)
                    .where(CallEvent.attempt_id.in_(list(events)))
                    .order_by(CallEvent.id)
                ):
                    events[event.attempt_id or 0].append(event)
            story.append(
                {
                    "campaign_id": contact.campaign_id,
                    "campaign": campaign_name,
                    "contact_id": contact.id,
                    "row": contact.row,
                    "phone": contact.phone,
                    "e164": contact.e164,
                    "status": contact.status,
                    "reason": contact.reason,
                    "attempts_made": contact.attempts,
                    "due_at": contact.due_at,
                    "context": dict(contact.context or {}),
                    "extra": _optional(contact),
                    "attempts": [
                        {
                            "number": a.number,
                            "run": a.run,
                            "status": a.status,
                            "call_id": a.call_id,
                            "queued_at": a.queued_at,
                            "created_at": a.created_at,
                            "answered_at": a.answered_at,
                            "ended_at": a.ended_at,
                            "result": a.result,
                            "cause": a.cause or a.hangup_cause,
                            "error": a.error,
                            "extra": _optional(a),
                            "events": [
                                {
                                    "type": e.event_type,
                                    "time": e.event_time or e.received_at,
                                    "disposition": e.disposition,
                                    "detail": _event_detail(e.payload),
                                }
                                for e in events[a.id]
                            ],
                        }
                        for a in attempts
                    ],
                }
            )
        return story


# What of a callback's payload the story shows (never its tag's secrets: there are none,
# but the payload is the carrier's text, so it is shown escaped like everything else).
_EVENT_FIELDS = ("cause", "digits", "state", "status", "recordingUri", "text", "transcription")


def _event_detail(payload: Any) -> str:
    if not isinstance(payload, dict):
        return ""
    return ", ".join(f"{k}={payload[k]}" for k in _EVENT_FIELDS if payload.get(k) not in (None, ""))
