"""``campaign export``: one CSV row per contact, in file order, streamed.

The columns are docs/interface.md's ("campaign export"): the contact and the outcome of its
last attempt, what the person answered to the call script (``response``, ``digits``),
the number that called (``from``: the attempt's pool number), the call's recording URL
and transcript (``recording_url``, ``transcript``), then the file's own context columns.
"""

from __future__ import annotations

import csv
from typing import IO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dialer.store.models import Attempt, Campaign, Contact, RunContact

COLUMNS = [
    "contact_id",
    "phone",
    "e164",
    "status",
    "attempts",
    "call_id",
    "result",
    "cause",
    "reason",
    "response",
    "digits",
    "from",
    "recording_url",
    "transcript",
]


def write(session: Session, campaign: Campaign, out: IO[str], past_run: int | None) -> int:
    """Write the export of ``campaign`` (its current run, or the run whose id is
    ``past_run``) to ``out``; return the number of rows."""
    context = list(campaign.columns or [])
    headers = COLUMNS + [c if c not in COLUMNS else f"context.{c}" for c in context]
    writer = csv.writer(out)
    writer.writerow(headers)
    outcome = (Attempt.call_id, Attempt.result, Attempt.cause, Attempt.hangup_cause)
    script = (
        Attempt.response,
        Attempt.digits,
        Attempt.from_number,
        Attempt.recording_url,
        Attempt.transcript,
    )
    if past_run is None:
        query = select(
            Contact.id,
            Contact.phone,
            Contact.e164,
            Contact.status,
            Contact.attempts,
            *outcome,
            Contact.reason,
            *script,
            Contact.context,
        ).outerjoin(Attempt, Attempt.id == Contact.last_attempt_id)
    else:
        # A past run: the outcome kept when the next run began, where there is one
        # (contacts that run dialed); otherwise the contact's own (invalid, ...).
        query = (
            select(
                Contact.id,
                Contact.phone,
                Contact.e164,
                func.coalesce(RunContact.status, Contact.status),
                func.coalesce(RunContact.attempts, Contact.attempts),
                *outcome,
                func.coalesce(RunContact.reason, Contact.reason),
                *script,
                Contact.context,
            )
            .outerjoin(
                RunContact,
                (RunContact.contact_id == Contact.id) & (RunContact.run_id == past_run),
            )
            .outerjoin(
                Attempt,
                Attempt.id == func.coalesce(RunContact.last_attempt_id, Contact.last_attempt_id),
            )
        )
    rows = session.execute(
        query.where(Contact.campaign_id == campaign.id)
        .order_by(Contact.row)
        .execution_options(yield_per=5000)
    )
    caller = campaign.from_number
    n = 0
    for cid, phone, e164, st, made, call_id, result, cause, hangup, reason, *rest in rows:
        response, digits, from_number, recording_url, transcript, ctx = rest
        ctx = ctx or {}
        writer.writerow(
            [
                cid,
                phone,
                e164 or "",
                st,
                made,
                call_id or "",
                result or "",
                cause or hangup or "",
                reason or "",
                response or "",
                digits or "",
                (from_number or caller) if call_id else "",
                recording_url or "",
                transcript or "",
            ]
            + [ctx.get(c, "") for c in context]
        )
        n += 1
    return n
