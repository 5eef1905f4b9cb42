"""Hostile and broken contacts files through the public API (``api.create_campaign``),
each a real file on disk imported into the test database (issue 17; the table is
docs/interface.md, "What a contacts file may hold").

Each case asserts the project's rule: a file that cannot be used is refused with an
error naming why and nothing is created (no campaign, no contact); otherwise every data
row is a contact, a bad one ``invalid`` with its reason, and the rest of the file is
imported. The unbounded inputs also assert time and memory.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from dialer import api
from dialer.store import db
from dialer.store.models import Campaign, Contact

FROM = "+19195550000"


def create(path: Path, **options: Any) -> dict[str, Any]:
    return api.create_campaign("hostile", FROM, path, **options)


def stored(campaign_id: int) -> list[tuple[Any, ...]]:
    """(row, phone, e164, status, reason, context) of each contact, in row order."""
    with db.session_scope() as session:
        rows = session.execute(
            select(
                Contact.row,
                Contact.phone,
                Contact.e164,
                Contact.status,
                Contact.reason,
                Contact.context,
            )
            .where(Contact.campaign_id == campaign_id)
            .order_by(Contact.row)
        ).all()
    return [tuple(r) for r in rows]


def columns(campaign_id: int) -> list[str]:
    with db.session_scope() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        return list(campaign.columns)


def counts() -> tuple[int, int]:
    with db.session_scope() as session:
        return (
            session.scalar(select(func.count()).select_from(Campaign)) or 0,
            session.scalar(select(func.count()).select_from(Contact)) or 0,
        )


def refused(path: Path, *expected: str) -> str:
    """Create from ``path``: an ApiError whose message holds each of ``expected``, and
    nothing created."""
    before = counts()
    with pytest.raises(api.ApiError) as err:
        create(path)
    message = str(err.value)
    for part in expected:
        assert part in message, message
    assert counts() == before, "a refused file created something"
    return message


def write(tmp_path: Path, content: bytes, name: str = "contacts.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


# --- encodings and line ends ---------------------------------------------------------------


def test_a_bom_and_crlf_line_ends(clean_db: None, tmp_path: Path) -> None:
    path = write(tmp_path, "phone,name\r\n9195551212,Zoë\r\n9195551213,Ann\r\n".encode("utf-8-sig"))
    report = create(path)
    assert (report["rows"], report["imported"]) == (2, 2)
    assert columns(report["id"]) == ["name"], "the BOM is not part of the first column"
    assert [(r[2], r[5]) for r in stored(report["id"])] == [
        ("+19195551212", {"name": "Zoë"}),
        ("+19195551213", {"name": "Ann"}),
    ]


def test_lone_cr_line_ends(clean_db: None, tmp_path: Path) -> None:
    path = write(tmp_path, b'phone,note\r9195551212,a\r9195551213,"two\rlines"\r')
    report = create(path)
    assert [(r[0], r[3], r[5]) for r in stored(report["id"])] == [
        (1, "pending", {"note": "a"}),
        (2, "pending", {"note": "two\rlines"}),
    ]


def test_latin1_is_refused_naming_the_line_and_byte(clean_db: None, tmp_path: Path) -> None:
    path = write(tmp_path, "phone,name\n9195551212,Ann\n9195551213,José\n".encode("latin-1"))
    refused(path, "not UTF-8", "byte 0xe9 on line 3", "Windows-1252 or Latin-1", "UTF-8 CSV")


def test_latin1_with_lone_cr_line_ends_names_the_right_line(clean_db: None, tmp_path: Path) -> None:
    path = write(tmp_path, "phone,name\r9195551212,Ann\r9195551213,Zoë\r".encode("cp1252"))
    refused(path, "byte 0xeb on line 3")


def test_utf16_is_refused(clean_db: None, tmp_path: Path) -> None:
    refused(write(tmp_path, "phone\n9195551212\n".encode("utf-16")), "UTF-16")
    refused(write(tmp_path, "phone\n9195551212\n".encode("utf-16-le")), "NUL byte", "UTF-16")


# --- separators ----------------------------------------------------------------------------


@pytest.mark.parametrize("separator", [";", "\t"], ids=["semicolon", "tab"])
def test_semicolon_and_tab_files_are_read_by_their_header(
    clean_db: None, tmp_path: Path, separator: str
) -> None:
    lines = [
        ["phone", "name", "amount"],
        ["919-555-1212", "Ann", "1,50"],  # a comma in a value is not a separator here
        ["9195551213", '"Bob; Jr."', "2,00"],
    ]
    text = "".join(separator.join(line) + "\n" for line in lines)
    report = create(write(tmp_path, text.encode()))
    assert columns(report["id"]) == ["name", "amount"]
    assert [(r[2], r[5]) for r in stored(report["id"])] == [
        ("+19195551212", {"name": "Ann", "amount": "1,50"}),
        ("+19195551213", {"name": "Bob; Jr.", "amount": "2,00"}),
    ]


def test_a_quoted_separator_in_the_header_does_not_count(clean_db: None, tmp_path: Path) -> None:
    # Two semicolons inside quotes, one comma outside: comma-separated.
    path = write(tmp_path, b'phone,"name; first; last"\n9195551212,Ann\n')
    report = create(path)
    assert columns(report["id"]) == ["name; first; last"]


def test_an_unknown_separator_is_named_in_the_error(clean_db: None, tmp_path: Path) -> None:
    message = refused(
        write(tmp_path, b"phone|name\n9195551212|Ann\n"),
        "no phone column 'phone'",
        "(comma-separated)",
        "'phone|name'",
        "comma, semicolon and tab",
    )
    assert "--phone-column" in message


# --- the header ----------------------------------------------------------------------------


def test_a_header_without_the_phone_column(clean_db: None, tmp_path: Path) -> None:
    refused(
        write(tmp_path, b"name,mobile\nAnn,9195551212\n"),
        "no phone column 'phone'",
        "'name', 'mobile'",
        "--phone-column",
    )


def test_a_million_columns_are_refused_quickly_in_bounded_memory(
    clean_db: None, tmp_path: Path
) -> None:
    header = "phone," + ",".join(f"c{i}" for i in range(1_000_000))
    path = write(tmp_path, (header + "\n9195551212\n").encode())
    tracemalloc.start()
    started = time.monotonic()
    try:
        refused(path, "more than 1,000 columns", "comma-separated")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    took = time.monotonic() - started
    assert took < 5, f"took {took:.1f} s"
    # The file is 7.9 MB; reading its header whole as fields would take far more.
    assert peak < 8_000_000, f"peaked at {peak / 1e6:.1f} MB"


def test_a_header_line_over_the_bound_is_refused(clean_db: None, tmp_path: Path) -> None:
    path = write(tmp_path, b"phone,note" + b"x" * 2_000_000 + b"\n9195551212,a\n")
    refused(path, "the header line is over 1,048,576 characters")


def test_a_nul_in_the_header_is_refused(clean_db: None, tmp_path: Path) -> None:
    refused(write(tmp_path, b"phone,na\x00me\n9195551212,Ann\n"), "the header has a NUL byte")


# --- rows ----------------------------------------------------------------------------------


def test_a_1mb_field_is_one_invalid_row_and_the_rest_imports(
    clean_db: None, tmp_path: Path
) -> None:
    content = (
        b"phone,note\n9195551212,before\n9195551213,"
        + b"x" * 1_000_000
        + b'\n9195551214,"'
        + b"y\n" * 400_000  # a quoted field of 800,000 characters over many lines
        + b'"\n9195551215,after\n'
    )
    tracemalloc.start()
    try:
        report = create(write(tmp_path, content))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    field = "a field over 131,072 characters (the row is not stored)"
    # The quoted field's remaining lines are skipped with it, not read as rows.
    assert [(r[0], r[3], r[4], r[5]) for r in stored(report["id"])] == [
        (1, "pending", None, {"note": "before"}),
        (2, "invalid", field, {}),
        (3, "invalid", field, {}),
        (4, "pending", None, {"note": "after"}),
    ]
    assert (report["rows"], report["imported"], report["invalid"]) == (4, 2, 2)
    assert peak < 20_000_000, f"peaked at {peak / 1e6:.1f} MB"


def test_a_line_over_a_megabyte_is_one_invalid_row(clean_db: None, tmp_path: Path) -> None:
    # Many short fields: no field is over the limit, the record is.
    content = (
        b"phone,note\n9195551212,"
        + b"ab," * 500_000
        + b'\n9195551213,"'
        + b"line,\n" * 200_000  # a record of many lines, the quoted field short of the limit
        + b'"\n9195551214,'
        # Eleven quoted fields of 100,000 characters and a line end each: every field is
        # under the field limit, the record (over many lines) is not.
        + b",".join([b'"' + b"z" * 100_000 + b'\n"'] * 11)
        + b"\n9195551215,after\n"
    )
    report = create(write(tmp_path, content))
    reason = "a row over 1,048,576 characters (not stored)"
    assert [(r[0], r[3], r[4], r[5]) for r in stored(report["id"])] == [
        (1, "invalid", reason, {}),
        (2, "invalid", "a field over 131,072 characters (the row is not stored)", {}),
        (3, "invalid", reason, {}),
        (4, "pending", None, {"note": "after"}),
    ]


def test_a_row_of_a_million_fields_keeps_the_first_thousand(clean_db: None, tmp_path: Path) -> None:
    content = b"phone,note\n9195551212,n" + b"," * 999_999 + b"\n9195551213,after\n"
    report = create(write(tmp_path, content))
    first, second = stored(report["id"])
    assert first[3:5] == (
        "invalid",
        "row has 1,000,001 fields, the header has 2 (fields after the 1,000th are not kept)",
    )
    assert len(first[5]) == 999 and first[5]["note"] == "n"
    assert second[3] == "pending"


def test_nul_bytes_in_rows_are_invalid_rows_not_a_copy_error(
    clean_db: None, tmp_path: Path
) -> None:
    content = b"phone,name\n9195551212,Ann\n9195551213,B\x00b\n\x00,x\n9195551214,Cy\n"
    report = create(write(tmp_path, content))
    reason = "the row has a NUL byte (kept as U+FFFD)"
    assert [(r[1], r[3], r[4], r[5]) for r in stored(report["id"])] == [
        ("9195551212", "pending", None, {"name": "Ann"}),
        ("9195551213", "invalid", reason, {"name": "B\ufffdb"}),
        ("\ufffd", "invalid", reason, {"name": "x"}),
        ("9195551214", "pending", None, {"name": "Cy"}),
    ]
    assert (report["imported"], report["invalid"]) == (2, 2)


def test_a_nul_in_a_sip_uri_is_never_an_address(clean_db: None, tmp_path: Path) -> None:
    # The do-not-call path takes addresses as they normalise: a NUL must not reach COPY.
    report = create(write(tmp_path, b"phone\nsip:a\x00b@example.com\nsip:ab@example.com\n"))
    assert [r[3] for r in stored(report["id"])] == ["invalid", "pending"]


# --- do-not-call files ---------------------------------------------------------------------


def test_a_dnc_file_with_an_unreadable_row_is_refused_whole(clean_db: None, tmp_path: Path) -> None:
    # Half a do-not-call list would call someone who opted out: the file is refused.
    path = write(tmp_path, b"phone\n9195551212\n" + b"x" * 200_000 + b"\n9195551213\n")
    with pytest.raises(api.ApiError, match=r"row 2 is not valid CSV \(field larger"):
        api.add_dnc(path)
    semicolons = write(tmp_path, "\ufeffname;phone\r\nAnn;9195551212\r\n".encode(), "dnc.csv")
    assert api.add_dnc(semicolons)["added"] == 1
