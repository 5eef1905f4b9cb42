"""``campaign export``: one CSV row per contact, in file order, streamed.

The columns are docs/interface.md's ("campaign export"): the contact and the outcome of its
last attempt, what the person answered to the call script (``response``, ``digits``),
the number that called (``from``: the attempt's pool number), the call's recording URL
and transcript (``recording_url``, ``transcript``), then the file's own context columns.

Formula-safe by default (CWE-1236, https://cwe.mitre.org/data/definitions/1236.html):
a spreadsheet opening the export runs a cell that starts with ``=``, ``+``, ``-`` or
``@`` as a formula (and one starting with a tab or carriage return can be one after the
spreadsheet trims it), so such a value in a column anyone outside the dialer wrote is
written with a ``'`` before it, as OWASP advises
(https://owasp.org/www-community/attacks/CSV_Injection): the context columns and their
names, ``phone`` as typed, the free text (``reason``, ``response``, ``digits``,
``transcript``) and what the carrier sent (``call_id``, ``cause``, ``recording_url``).
The columns the dialer makes itself are written as they are, so the numbers stay
readable and sortable: ``e164`` and ``from`` (E.164 numbers it validated, "+1919..."),
``contact_id``, ``status``, ``attempts``, ``result``; and so is a ``phone`` typed in
E.164 itself (``+`` and digits only: no formula can be spelled that way). ``raw=True``
(``--raw``) writes every value as stored, for a program rather than a spreadsheet.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
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


# What a spreadsheet may read as the start of a formula (OWASP, "CSV Injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_E164_AS_TYPED = re.compile(r"\+[0-9]{1,15}")


def safe_cell(value: str) -> str:
    """``value`` as a spreadsheet shows it and never runs it: a ``'`` before a value
    that starts with one of ``FORMULA_START``."""
    if value and value[0] in FORMULA_START:
        return "'" + value
    return value


def safe_phone(value: str) -> str:
    """``phone`` as typed: left as it is when it is "+" and digits only (an E.164
    number can spell no formula), else ``safe_cell``."""
    if value[:1] == "+" and _E164_AS_TYPED.fullmatch(value):
        return value
    return safe_cell(value)


def _as_is(value: str) -> str:
    return value


def write(
    session: Session,
    campaign: Campaign,
    out: IO[str],
    past_run: int | None,
    *,
    raw: bool = False,
) -> int:
    """Write the export of ``campaign`` (its current run, or the run whose id is
    ``past_run``) to ``out``; return the number of rows. Formula-safe unless ``raw``
    (the module's docstring says which columns and why)."""
    safe: Callable[[str], str] = _as_is if raw else safe_cell
    phone_cell: Callable[[str], str] = _as_is if raw else safe_phone
    context = list(campaign.columns or [])
    headers = COLUMNS + [safe(c) if c not in COLUMNS else f"context.{c}" for c in context]
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
                phone_cell(phone),
                e164 or "",
                st,
                made,
                safe(call_id or ""),
                result or "",
                safe(cause or hangup or ""),
                safe(reason or ""),
                safe(response or ""),
                safe(digits or ""),
                (from_number or caller) if call_id else "",
                safe(recording_url or ""),
                safe(transcript or ""),
            ]
            + [safe(v) if isinstance(v := ctx.get(c, ""), str) else v for c in context]
        )
        n += 1
    return n
