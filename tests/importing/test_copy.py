"""The PostgreSQL import's COPY text path (importing/copytext.py, contacts._copy_chunks):
escaping, the fused NANP path, and the same contacts as the general path stores."""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from dialer import clock
from dialer.importing import copytext, numbers
from dialer.importing.contacts import ImportReport, import_contacts
from dialer.importing.dnc import add_suppressions
from dialer.policy.rules import zones_for
from dialer.store import dialects
from dialer.store.models import Campaign, Contact

from .test_importing import make_campaign, nanp_spellings

# --- copytext ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "\\N"),
        ("", ""),
        ("plain, with ümlauts and 漢字", "plain, with ümlauts and 漢字"),
        ("a\tb", "a\\tb"),
        ("a\nb\r\nc", "a\\nb\\r\\nc"),
        ("back\\slash", "back\\\\slash"),
        ("\\N", "\\\\N"),  # the text, not NULL
        ("\\.", "\\\\."),  # not the end-of-data marker
        ('say "hi"', 'say "hi"'),
        (0, "0"),
        (42, "42"),
        (datetime(2026, 12, 7, 1, 2, 3, 456, tzinfo=UTC), "2026-12-07T01:02:03.000456+00:00"),
    ],
)
def test_field_escapes_what_copy_text_reads_specially(value: object, expected: str) -> None:
    assert copytext.field(value) == expected


def test_field_refuses_what_postgresql_cannot_store() -> None:
    with pytest.raises(ValueError, match="NUL"):
        copytext.field("a\0b")
    with pytest.raises(ValueError, match="naive datetime"):
        copytext.field(datetime(2026, 1, 1))
    with pytest.raises(TypeError, match="no COPY text for a float"):
        copytext.field(1.5)
    with pytest.raises(TypeError, match="bool"):
        copytext.field(True)


def test_line_is_tab_separated_and_ends_in_a_newline() -> None:
    assert copytext.line([1, None, "a\tb"]) == "1\t\\N\ta\\tb\n"


def test_json_template_escapes_keys_once_and_fills_plain_values() -> None:
    keys = ['na"me', "back\\slash", "100%", "tab\there", "ключ"]
    template = copytext.json_object_template(keys)
    filled = template % ("a", "b", "c", "d", "é")
    # The COPY field, read back, is the JSON of the object.
    read_back = filled.replace("\\\\", "\0").replace("\\t", "\t").replace("\0", "\\")
    assert json.loads(read_back) == dict(zip(keys, ["a", "b", "c", "d", "é"], strict=True))


# --- the fused NANP path -------------------------------------------------------------------


@pytest.mark.parametrize("region", ["US", "CA", "GB", "PR"])
def test_common_nanp_is_normalize_or_nothing_on_every_spelling(region: str) -> None:
    rng = random.Random(13)
    taken = 0
    for _ in range(400):
        digits = str(rng.randint(2, 9)) + f"{rng.randint(0, 999_999_999):09d}"
        for spelling in nanp_spellings(digits) + [f"+1 {digits}", f"1-{digits[:3]}-{digits[3:]}"]:
            got = numbers.common_nanp(spelling, region)
            if got is not None:
                taken += 1
                assert normalize_of(spelling, region) == ("+1" + got, None), spelling
    assert taken > 400  # the common spellings really take it


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet="0123456789+-(). 1\t", min_size=1, max_size=18),
    st.sampled_from(["US", "CA", "GB"]),
)
def test_common_nanp_agrees_with_normalize_on_arbitrary_strings(raw: str, region: str) -> None:
    got = numbers.common_nanp(raw, region)
    if got is not None:
        assert numbers.normalize(raw, region) == ("+1" + got, None)


def normalize_of(raw: str, region: str) -> tuple[str | None, str | None]:
    return numbers.normalize(raw, region)


def test_zones_of_a_nanp_number_depend_on_its_first_six_digits_only() -> None:
    """The fused path keeps zones by NPA-NXX (contacts._copy_chunks)."""
    rng = random.Random(6)
    for _ in range(300):
        head = f"{rng.randint(200, 999)}{rng.randint(200, 999)}"
        tails = {f"{rng.randint(0, 9999):04d}" for _ in range(4)}
        assert len({zones_for(f"+1{head}{t}") for t in tails}) == 1, head


# --- the same contacts as the general path -------------------------------------------------

MIXED_HEADER = ["id", 'the "name"', "phone", "note\\path", "100%", "ключ"]
MIXED_ROWS = [
    ["1", "Ann", "(919) 555-1212", "plain", "x", "é"],
    ["2", "Bob", "919-555-1212", "repeat of row 1", "%s %d %%", ""],
    ["3", "Cy", "+19195551213", "tab\there", "y", "z"],
    ["4", "Di", "9195551214", "line one\nline two", "", ""],
    ["5", "Ed", "1 919 555 1215", 'a "quote"', "back\\slash", "\\N"],
    ["6", "Flo", "919.555.1216", "\\.", "cr\rhere", "漢字"],
    ["7", "Gus", "sip:gus@example.com", "sip", "", ""],
    ["8", "Hal", "+44 20 7946 0958", "uk", "", ""],
    ["9", "Ida", "tel:+1-919-555-1217", "tel", "", ""],
    ["10", "Jo", "n/a", "invalid", "", ""],
    ["11", "Kim", "", "empty", "", ""],
    ["12", "Lu", "+1 123 456 7890", "invalid NANP", "", ""],
    ["13", "Mo", "9195551218"],  # too few fields
    ["14", "Ned", "9195551219", "a", "b", "c", "extra", "more"],  # too many
    ["15", "Oz", "  9195551220  ", "spaces around", "", ""],
    ["16", "Pat", "(919)555-1221", "suppressed", "", ""],
    ["17", "Quin", "+1 (919) 555-1213", "repeat of row 3", "", ""],
    ["18", "Ray", "919 555 1222", "refused by the check", "", ""],
    ["19", "Sue", "+1 919 555 1223", "no\x01control", "", ""],
    ["20", "Ty", "sip:gus@example.com", "repeat of row 7", "", ""],
    ["21", "Uma", "(416) 555-0123", "canada", "", ""],
    ["22", "Vic", "919-555-1222", "repeat of a refused row", "", ""],
    ["23", "Wes", "\t919 555 1224\\", "tab and backslash in the phone", "", ""],
    ["24", "Xi", "\t9195551225\r", "tab and CR around the phone", "", ""],
]


def write_mixed(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(MIXED_HEADER)
        writer.writerows(MIXED_ROWS)
        for n in range(25_000):  # past a chunk and a half, in common spellings
            writer.writerow([str(100 + n), f"N{n}", f"(212) {200 + n // 10_000}-{n % 10_000:04d}"])
            writer.writerow([str(n), "", f"+1212{200 + n // 10_000}{n % 10_000:04d}", "", "", ""])
    return path


def refuse_ray(context: dict[str, str]) -> str | None:
    return "the script is too long for Ray" if context.get('the "name"') == "Ray" else None


def stored(session: Session, campaign: Campaign) -> list[tuple[object, ...]]:
    rows = session.execute(
        select(
            Contact.row,
            Contact.phone,
            Contact.e164,
            Contact.status,
            Contact.reason,
            Contact.context,
            Contact.attempts,
            Contact.due_at,
            Contact.zones,
            Contact.ready_at,
            Contact.last_attempt_id,
        )  # fmt: skip
        .where(Contact.campaign_id == campaign.id)
        .order_by(Contact.row)
    )
    return [tuple(r) for r in rows]


def import_both_ways(
    session: Session, path: Path, monkeypatch: pytest.MonkeyPatch, **kwargs: object
) -> tuple[tuple[ImportReport, Campaign, list[tuple[object, ...]]], ...]:
    moment = datetime(2026, 12, 7, 3, 0, 0, 123456, tzinfo=timezone(timedelta(0)))
    clock.set_source(lambda: moment)
    queries = dialects.of(session)
    assert queries.takes_copy_text
    out = []
    try:
        for way in ("copy text", "write_row"):
            if way == "write_row":  # the path before copytext: psycopg's write_row per row
                monkeypatch.setattr(queries, "takes_copy_text", False)
            campaign = make_campaign(session, name=way)
            report = import_contacts(session, campaign, path, **kwargs)  # type: ignore[arg-type]
            out.append((report, campaign, stored(session, campaign)))
    finally:
        clock.set_source(None)
        monkeypatch.undo()
    return tuple(out)


def test_copy_text_stores_what_write_row_stored(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_mixed(tmp_path / "mixed.csv")
    add_suppressions(session, ["9195551221", "sip:gus@example.com", "+2125550000"])
    (new_report, new, new_rows), (old_report, old, old_rows) = import_both_ways(
        session, path, monkeypatch, row_check=refuse_ray
    )

    assert new_rows == old_rows
    assert new_report == old_report
    assert new_report.zone_keys == old_report.zone_keys
    assert (new.columns, new.zone_keys) == (old.columns, old.zone_keys)
    assert new_report.rows == len(MIXED_ROWS) + 50_000
    # The file's cases really are in it: every status, escapes stored as read.
    by_row = {r[0]: r for r in new_rows}
    assert {r[3] for r in new_rows} == {"pending", "invalid", "duplicate", "suppressed"}
    assert by_row[2][3:5] == ("duplicate", "same number as row 1")
    assert by_row[2][5] == {
        "id": "2", 'the "name"': "Bob", "note\\path": "repeat of row 1", "100%": "%s %d %%",
        "ключ": "",
    }  # fmt: skip
    assert by_row[3][5]["note\\path"] == "tab\there"
    assert by_row[4][5]["note\\path"] == "line one\nline two"
    assert by_row[5][5]["100%"] == "back\\slash" and by_row[5][5]["ключ"] == "\\N"
    assert by_row[6][5]["note\\path"] == "\\." and by_row[6][5]["100%"] == "cr\rhere"
    assert by_row[14][5]["#7"] == "extra" and by_row[14][3] == "invalid"
    assert by_row[16][3:5] == ("suppressed", "on the do-not-call list")
    assert by_row[18][3:5] == ("invalid", "the script is too long for Ray")
    assert by_row[22][3] == "pending"  # a refused row's number is not taken
    assert by_row[19][5]["note\\path"] == "no\x01control"
    assert by_row[21][8] is not None and by_row[1][8] == "America/New_York"
    assert by_row[23][1:4] == ("\t919 555 1224\\", "+19195551224", "pending")
    assert by_row[24][1:4] == ("\t9195551225\r", "+19195551225", "pending")


def test_copy_text_without_a_row_check_and_with_progress(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_mixed(tmp_path / "mixed.csv")
    calls: list[list[int]] = [[], []]
    moment = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    clock.set_source(lambda: moment)
    queries = dialects.of(session)
    try:
        results = []
        for i, way in enumerate(("copy text", "write_row")):
            if i:
                monkeypatch.setattr(queries, "takes_copy_text", False)
            campaign = make_campaign(session, name=way)
            report = import_contacts(session, campaign, path, progress=calls[i].append)
            results.append((report, stored(session, campaign)))
    finally:
        clock.set_source(None)
        monkeypatch.undo()
    assert results[0] == results[1]
    assert calls[0] == calls[1] == [10_000, 20_000, 30_000, 40_000, 50_000, 50_024]


def test_a_nul_in_a_row_makes_it_invalid_and_the_copy_goes_on(
    session: Session, tmp_path: Path
) -> None:
    # PostgreSQL text cannot hold a NUL: COPY would fail on it, so the row is invalid
    # with its NULs kept as U+FFFD, and the rows around it are imported.
    path = tmp_path / "nul.csv"
    path.write_bytes(b"phone,name\n9195551212,ok\n9195551213,a\x00b\n919555\x001214,c\n")
    campaign = make_campaign(session)
    report = import_contacts(session, campaign, path)
    got = session.execute(
        select(Contact.status, Contact.phone, Contact.reason, Contact.context)
        .where(Contact.campaign_id == campaign.id)
        .order_by(Contact.row)
    ).all()
    nul = "the row has a NUL byte (kept as U+FFFD)"
    assert [tuple(r) for r in got] == [
        ("pending", "9195551212", None, {"name": "ok"}),
        ("invalid", "9195551213", nul, {"name": "a\ufffdb"}),
        ("invalid", "919555\ufffd1214", nul, {"name": "c"}),
    ]
    assert (report.rows, report.imported, report.invalid) == (3, 1, 2)


def test_unreadable_rows_are_stored_alike_both_ways(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rows files.CsvFile.records gives as a reason, and rows with a NUL, take the
    # general path on COPY; the write_row path (SQLite's) must store the same contacts.
    path = tmp_path / "hostile.csv"
    path.write_bytes(
        b"phone;name\r\n9195551212;ok\r\n9195551213;a\x00b\r\n9195551214;"
        + b"x" * 140_000
        + b'\r\n9195551215;"'
        + b"q\n" * 70_000
        + b'"\r\n9195551216;'
        + b";" * 1_500
        + b"\r9195551217;last\r"
    )
    (new_report, _, new_rows), (old_report, _, old_rows) = import_both_ways(
        session, path, monkeypatch
    )
    assert new_rows == old_rows and new_report == old_report
    assert [r[3] for r in new_rows] == [
        "pending",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "pending",
    ]
    assert new_report.rows == 6


@pytest.mark.parametrize(
    "header",
    [["phone", "name", "note"], ["name", "note", "phone"], ["phone"]],
    ids=["phone first", "phone last", "phone only"],
)
def test_the_phone_anywhere_in_the_header(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, header: list[str]
) -> None:
    phones = ["(919) 555-1212", "919-555-1212", "+19195551213", "n/a", "sip:a@example.com"]
    at = header.index("phone")
    path = tmp_path / "positions.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for n, phone in enumerate(phones):
            fields = [f"{name} {n}" for name in header]
            fields[at] = phone
            writer.writerow(fields)
    (new_report, _, new_rows), (old_report, _, old_rows) = import_both_ways(
        session, path, monkeypatch
    )
    assert new_rows == old_rows and new_report == old_report
    assert [r[3] for r in new_rows] == ["pending", "duplicate", "pending", "invalid", "pending"]
    expected = {name: f"{name} 0" for name in header if name != "phone"}
    assert new_rows[0][5] == expected
