"""--from and --from-file: a caller-id pool, normalised, each error naming the number."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialer.errors import ApiError
from dialer.importing.callers import CallerIdEntry, parse_pool


def test_one_number_keeps_its_old_spelling() -> None:
    assert parse_pool("+19195551212") == [CallerIdEntry("+19195551212")]


def test_a_comma_list_is_normalised_in_order_without_duplicates() -> None:
    pool = parse_pool("+19195551212, (704) 555-0102,+1 919 555 1212", region="US")
    assert [e.e164 for e in pool] == ["+19195551212", "+17045550102"]


def test_a_file_gives_numbers_and_labels(tmp_path: Path) -> None:
    f = tmp_path / "ids.csv"
    f.write_text("phone,label\n919-555-1212,raleigh\n+12125550103,\n")
    assert parse_pool(None, f) == [
        CallerIdEntry("+19195551212", "raleigh"),
        CallerIdEntry("+12125550103", None),
    ]


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ("+19195551212,12", "--from: '12'"),
        ("+19195551212,,+12125550103", "number 2 of the list is empty"),
        ("sip:a@b.example", "--from: 'sip:a@b.example'"),
    ],
)
def test_a_bad_number_is_named(given: str, named: str) -> None:
    with pytest.raises(ApiError, match=named):
        parse_pool(given)


def test_a_bad_row_of_the_file_is_named_by_line(tmp_path: Path) -> None:
    f = tmp_path / "ids.csv"
    f.write_text("phone\n+19195551212\nnot-a-number\n")
    with pytest.raises(ApiError, match=r"line 3: 'not-a-number'"):
        parse_pool(None, f)


def test_a_file_without_a_phone_column_says_so(tmp_path: Path) -> None:
    f = tmp_path / "ids.csv"
    f.write_text("number\n+19195551212\n")
    with pytest.raises(ApiError, match="no phone column"):
        parse_pool(None, f)


def test_no_number_at_all_is_an_error() -> None:
    with pytest.raises(ApiError, match="--from or --from-file"):
        parse_pool(None)


def test_a_file_with_an_unreadable_row_is_refused_naming_it(tmp_path: Path) -> None:
    # Before, a field over csv's limit escaped as a csv.Error (not an ApiError).
    f = tmp_path / "ids.csv"
    f.write_text("phone,label\n+19195551212,a\n+12125550103," + "x" * 200_000 + "\n")
    with pytest.raises(ApiError, match=r"after line 2, not valid CSV \(field larger"):
        parse_pool(None, f)


def test_a_semicolon_file_with_a_bom_and_crlf(tmp_path: Path) -> None:
    f = tmp_path / "ids.csv"
    f.write_bytes("phone;label\r\n919-555-1212;Zoë's line\r\n".encode("utf-8-sig"))
    assert parse_pool(None, f) == [CallerIdEntry("+19195551212", "Zoë's line")]
