"""dialer.importing (numbers, files, contacts, dnc): CSV → contacts, normalization, dedupe,
do-not-call lists."""

from __future__ import annotations

import csv
import random
import tracemalloc
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from dialer import clock
from dialer.importing import numbers
from dialer.importing.contacts import ImportReport, import_contacts
from dialer.importing.dnc import add_suppressions, remove_suppressions
from dialer.importing.files import ContactFileError, read_columns
from dialer.importing.numbers import normalize
from dialer.store import migrate
from dialer.store.models import Campaign, Contact, Suppression


def make_campaign(session: Session, **fields: object) -> Campaign:
    campaign = Campaign(
        name=fields.pop("name", "spring drive"),
        from_number="+19195550000",
        created_at=clock.now(),
        **fields,
    )
    session.add(campaign)
    session.flush()
    return campaign


def valid_number(n: int) -> str:
    """A distinct valid US number for each n below 80,000."""
    return f"+1919{200 + n // 10_000}{n % 10_000:04d}"


def contacts(session: Session, campaign: Campaign) -> list[Contact]:
    return list(
        session.scalars(
            select(Contact).where(Contact.campaign_id == campaign.id).order_by(Contact.row)
        )
    )


def by_row(session: Session, campaign: Campaign) -> dict[int, Contact]:
    return {c.row: c for c in contacts(session, campaign)}


def assert_adds_up(report: ImportReport, campaign: Campaign) -> None:
    assert report.rows == report.imported + report.invalid + report.duplicate + report.suppressed
    assert (
        campaign.rows,
        campaign.imported,
        campaign.invalid,
        campaign.duplicate,
        campaign.suppressed,
    ) == (report.rows, report.imported, report.invalid, report.duplicate, report.suppressed)


# --- normalize -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(919) 555-1212", "US", "+19195551212"),
        ("919.555.1212", "US", "+19195551212"),
        ("919 555 1212", "US", "+19195551212"),
        ("1-919-555-1212", "US", "+19195551212"),
        ("  9195551212\t", "US", "+19195551212"),
        ("+19195551212", "US", "+19195551212"),
        ("+1 (919) 555-1212", "GB", "+19195551212"),
        ("tel:+1-919-555-1212", "US", "+19195551212"),
        ("TEL:+19195551212", "US", "+19195551212"),
        ("(416) 555-0123", "US", "+14165550123"),  # Canada is NANP too
        ("1-800-FLOWERS", "US", "+18003569377"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("07400 123456", "GB", "+447400123456"),
        ("+447400123456", "GB", "+447400123456"),
        ("00 33 1 23 45 67 89", "GB", "+33123456789"),
        ("sip:alice@example.com", "US", "sip:alice@example.com"),
        ("SIP:Alice@Example.com:5060", "US", "sip:Alice@Example.com:5060"),
        ("sips:+19195551212@10.0.0.1:5061", "US", "sips:+19195551212@10.0.0.1:5061"),
    ],
)
def test_normalize_accepts_common_spellings(raw: str, region: str, expected: str) -> None:
    assert normalize(raw, region) == (expected, None)


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("", "US", "empty"),
        ("   ", "US", "empty"),
        ("tel:", "US", "empty"),
        ("hello", "US", "not a phone number"),
        ("n/a", "US", "not a phone number"),
        ("123", "US", "too short"),
        ("555-1212", "US", "too short (no area code?)"),
        ("99999999999999999999", "US", "too long"),
        ("9" * 300, "US", "too long"),
        ("1234567890", "US", "not a valid number for region US"),
        ("020 7946 0958", "US", "too long"),  # eleven digits, read as a US number
        ("2125550100", "GB", "not a valid number for region GB"),
        ("+1 123 456 7890", "US", "not a valid number"),
        ("+999 123 4567", "US", "unknown country code"),
        ("919-555-1212 x12", "US", "has an extension (12), which cannot be dialed"),
        ("sip:bob", "US", "not a valid SIP URI (expected sip:user@host[:port])"),
        ("sip:bob:secret@example.com", "US", "not a valid SIP URI (expected sip:user@host[:port])"),
        ("sip:bob@example.com:70000", "US", "not a valid SIP URI (port 70000)"),
    ],
)
def test_normalize_rejects_with_a_reason(raw: str, region: str, reason: str) -> None:
    assert normalize(raw, region) == (None, reason)


def nanp_spellings(digits: str) -> list[str]:
    a, b, c = digits[:3], digits[3:6], digits[6:]
    return [
        digits,
        "1" + digits,
        "+1" + digits,
        f"({a}) {b}-{c}",
        f"{a}-{b}-{c}",
        f"{a}.{b}.{c}",
        f"1 {a} {b} {c}",
        f"+1 ({a}) {b}-{c}",
        f"tel:+1-{a}-{b}-{c}",
    ]


def test_fast_path_gives_the_slow_paths_answers() -> None:
    """The NANP shortcut must agree with plain phonenumbers on valid and invalid numbers."""
    rng = random.Random(20261127)
    checked = valid = 0
    for _ in range(800):
        digits = f"{rng.randint(0, 9_999_999_999):010d}"
        if rng.random() < 0.7:  # mostly plausible NANP shapes, where the fast path acts
            digits = str(rng.randint(2, 9)) + digits[1:]
        for spelling in nanp_spellings(digits):
            stripped = spelling[4:] if spelling.startswith("tel:") else spelling
            for region in ("US", "CA", "GB", "PR"):
                slow = numbers._normalize_slow(stripped, region)
                assert normalize(spelling, region) == slow, (spelling, region)
                checked += 1
                valid += slow[0] is not None
    assert checked == 800 * 9 * 4
    assert valid > checked // 5  # the fast path's valid case really was exercised


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="0123456789+-(). 1", min_size=1, max_size=18),
    st.sampled_from(["US", "CA", "GB"]),
)
def test_fast_path_agrees_on_arbitrary_punctuated_digits(raw: str, region: str) -> None:
    slow = numbers._normalize_slow(raw.strip(), region) if raw.strip() else (None, "empty")
    assert normalize(raw, region) == slow


def test_fast_path_agrees_with_is_valid_number_directly() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        national = rng.randint(2_000_000_000, 9_999_999_999)
        number = phonenumbers.PhoneNumber(country_code=1, national_number=national)
        assert numbers._valid_nanp(national) == phonenumbers.is_valid_number(number)


# --- import_contacts -----------------------------------------------------------------------


def test_every_row_becomes_a_contact_in_file_order(session: Session, tmp_csv) -> None:
    path = tmp_csv(
        [
            ["name", "phone", "plan"],
            ["Ann", "(919) 555-1212", "gold"],
            ["Bob", "not a number", "silver"],
            ["Cy", "", "bronze"],
            ["Di", "+1 919 555 1213", "gold"],
            ["Ed", "919.555.1212", "tin"],
            ["Flo", "sip:flo@example.com", "gold"],
        ]
    )
    campaign = make_campaign(session)
    report = import_contacts(session, campaign, path)

    assert report == ImportReport(rows=6, imported=3, invalid=2, duplicate=1, suppressed=0)
    got = [(c.row, c.phone, c.e164, c.status, c.reason) for c in contacts(session, campaign)]
    assert got == [
        (1, "(919) 555-1212", "+19195551212", "pending", None),
        (2, "not a number", None, "invalid", "not a phone number"),
        (3, "", None, "invalid", "empty"),
        (4, "+1 919 555 1213", "+19195551213", "pending", None),
        (5, "919.555.1212", "+19195551212", "duplicate", "same number as row 1"),
        (6, "sip:flo@example.com", "sip:flo@example.com", "pending", None),
    ]
    # Pending contacts are due from the import on (the tick takes them in due order);
    # the others are never due.
    assert all(
        (c.due_at is not None) == (c.status == "pending") and c.attempts == 0
        for c in contacts(session, campaign)
    )
    assert_adds_up(report, campaign)


def test_context_keeps_other_columns_in_file_order_even_for_bad_rows(
    session: Session, tmp_csv
) -> None:
    path = tmp_csv(
        [
            ["first", "Phone Number", "zip", "note"],
            ["Ann", "9195551212", "27701", " spaced , comma "],
            ["Bob", "garbage", "27702", ""],
        ]
    )
    campaign = make_campaign(session, phone_column="Phone Number")
    import_contacts(session, campaign, path)

    assert campaign.columns == ["first", "zip", "note"]
    rows = by_row(session, campaign)
    assert rows[1].context == {"first": "Ann", "zip": "27701", "note": " spaced , comma "}
    assert rows[2].status == "invalid"
    assert rows[2].context == {"first": "Bob", "zip": "27702", "note": ""}


def test_phone_column_matches_ignoring_case_and_spaces(session: Session, tmp_csv) -> None:
    path = tmp_csv([["Name", " PHONE "], ["Ann", "9195551212"]])
    campaign = make_campaign(session)
    report = import_contacts(session, campaign, path)
    assert report.imported == 1
    assert campaign.phone_column == "PHONE"
    assert campaign.columns == ["Name"]


def test_uk_numbers_with_region_gb(session: Session, tmp_csv) -> None:
    path = tmp_csv([["phone"], ["020 7946 0958"], ["07400 123456"], ["2125550100"]])
    campaign = make_campaign(session, region="GB")
    import_contacts(session, campaign, path)
    got = [(c.e164, c.reason) for c in contacts(session, campaign)]
    assert got == [
        ("+442079460958", None),
        ("+447400123456", None),
        (None, "not a valid number for region GB"),
    ]


def test_malformed_rows_are_invalid_and_keep_their_fields(session: Session, tmp_csv) -> None:
    path = tmp_csv(
        [
            ["phone", "name", "zip"],
            ["9195551212", "Ann"],  # missing a field
            ["9195551213", "Bob", "27701", "extra", "more"],  # two too many
            ["9195551214", "Cy", "27703"],
            [],  # a blank line is not a row
            ["9195551212", "Ann again", "27704"],
        ]
    )
    campaign = make_campaign(session)
    report = import_contacts(session, campaign, path)

    rows = by_row(session, campaign)
    assert (rows[1].status, rows[1].reason) == ("invalid", "row has 2 fields, the header has 3")
    assert rows[1].phone == "9195551212"
    assert rows[1].context == {"name": "Ann"}
    assert (rows[2].status, rows[2].reason) == ("invalid", "row has 5 fields, the header has 3")
    assert rows[2].context == {"name": "Bob", "zip": "27701", "#4": "extra", "#5": "more"}
    assert rows[3].status == "pending"
    # The malformed row 1 did not claim its number: row 4 is the first good one.
    assert (rows[4].status, rows[4].e164) == ("pending", "+19195551212")
    assert report == ImportReport(rows=4, imported=2, invalid=2, duplicate=0, suppressed=0)


def test_row_missing_the_phone_field_itself(session: Session, tmp_csv) -> None:
    path = tmp_csv([["name", "zip", "phone"], ["Ann", "27701"]])
    campaign = make_campaign(session)
    import_contacts(session, campaign, path)
    (contact,) = contacts(session, campaign)
    assert (contact.phone, contact.status) == ("", "invalid")
    assert contact.context == {"name": "Ann", "zip": "27701"}


def test_bom_is_not_part_of_the_first_column(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("phone,name\r\n9195551212,Zoë\r\n".encode("utf-8-sig"))
    assert read_columns(path) == ["phone", "name"]
    campaign = make_campaign(session)
    report = import_contacts(session, campaign, path)
    assert report.imported == 1
    assert contacts(session, campaign)[0].context == {"name": "Zoë"}


def test_quoted_fields_with_commas_and_newlines(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "quoted.csv"
    path.write_text('phone,note\n"919-555-1212","line one\nline two, still"\n', "utf-8")
    campaign = make_campaign(session)
    import_contacts(session, campaign, path)
    (contact,) = contacts(session, campaign)
    assert contact.context == {"note": "line one\nline two, still"}


def test_suppressed_by_global_and_own_list_but_not_another_campaigns(
    session: Session, tmp_csv
) -> None:
    other = make_campaign(session, name="other")
    campaign = make_campaign(session)
    add_suppressions(session, ["+19195551212"])  # global
    add_suppressions(session, ["919-555-1213"], campaign_id=campaign.id)
    add_suppressions(session, ["919-555-1214"], campaign_id=other.id)
    path = tmp_csv([["phone"], ["9195551212"], ["9195551213"], ["9195551214"], ["(919) 555-1212"]])
    report = import_contacts(session, campaign, path)

    got = [(c.status, c.reason) for c in contacts(session, campaign)]
    assert got == [
        ("suppressed", "on the do-not-call list"),
        ("suppressed", "on the do-not-call list"),
        ("pending", None),
        # First occurrence wins, whatever its status: a repeat of a suppressed number is
        # a duplicate, counted once as suppressed.
        ("duplicate", "same number as row 1"),
    ]
    assert report == ImportReport(rows=4, imported=1, invalid=0, duplicate=1, suppressed=2)
    assert_adds_up(report, campaign)


def test_sip_uris_are_suppressed_too(session: Session, tmp_csv) -> None:
    add_suppressions(session, ["SIP:bob@example.com"])
    campaign = make_campaign(session)
    report = import_contacts(session, campaign, tmp_csv([["phone"], ["sip:bob@example.com"]]))
    assert report.suppressed == 1


def test_progress_is_reported_every_10000_rows_and_at_the_end(session: Session, tmp_csv) -> None:
    rows = [["phone"]] + [[valid_number(n)] for n in range(25_000)]
    campaign = make_campaign(session)
    seen: list[int] = []
    import_contacts(session, campaign, tmp_csv(rows), progress=seen.append)
    assert seen == [10_000, 20_000, 25_000]


def test_header_only_file_imports_nothing(session: Session, tmp_csv) -> None:
    campaign = make_campaign(session)
    report = import_contacts(session, campaign, tmp_csv([["phone", "name"]]))
    assert report == ImportReport()
    assert campaign.columns == ["name"]


# --- whole-file problems -------------------------------------------------------------------


def test_missing_phone_column_names_it_and_lists_the_columns(session: Session, tmp_csv) -> None:
    path = tmp_csv([["name", "mobile"], ["Ann", "9195551212"]])
    campaign = make_campaign(session)
    with pytest.raises(ContactFileError) as err:
        import_contacts(session, campaign, path)
    assert "'phone'" in str(err.value)
    assert "'name', 'mobile'" in str(err.value)
    assert session.scalar(select(func.count()).select_from(Contact)) == 0


def test_header_that_looks_like_data_gets_a_hint(session: Session, tmp_csv) -> None:
    path = tmp_csv([["9195551212", "Ann"], ["9195551213", "Bob"]])
    with pytest.raises(ContactFileError, match="needs a header row"):
        import_contacts(session, make_campaign(session), path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\xef\xbb\xbf", "is empty"),
        (b"\n9195551212\n", "no header row"),
        (b"phone,name\n9195551212,Jos\xe9\n", r"not UTF-8 \(byte 0xe9 on line 2\)"),
        ("phone\n9195551212\n".encode("utf-16"), "is UTF-16"),
        (b"phone,na\x00me\n9195551212,ab\n", "the header has a NUL byte"),
        ("phone\n9195551212\n".encode("utf-16-le"), "the header has a NUL byte"),
        (("phone;" * 2000 + "\n").encode(), "more than 1,000 columns"),
        (b"phone,phone\n9195551212,9195551213\n", "'phone' appears more than once"),
    ],
)
def test_whole_file_problems_are_refused_before_any_insert(
    session: Session, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ContactFileError, match=message):
        import_contacts(session, make_campaign(session), path)
    assert session.scalar(select(func.count()).select_from(Contact)) == 0


def test_missing_file(session: Session, tmp_path: Path) -> None:
    with pytest.raises(ContactFileError, match="no such file"):
        read_columns(tmp_path / "nope.csv")
    with pytest.raises(ContactFileError, match="no such file"):
        import_contacts(session, make_campaign(session), tmp_path / "nope.csv")


def test_a_field_over_the_limit_is_one_invalid_row_and_the_rest_imports(
    session: Session, tmp_path: Path
) -> None:
    # A field over the csv module's limit is only found while streaming: that row is
    # invalid with the reason and the rows after it are imported.
    path = tmp_path / "huge.csv"
    path.write_text(
        "phone,note\n9195551212,ok\n9195551213," + "x" * 200_000 + "\n9195551214,after\n",
        "utf-8",
    )
    campaign = make_campaign(session)
    report = import_contacts(session, campaign, path)
    got = [(c.row, c.status, c.reason, c.context) for c in contacts(session, campaign)]
    assert got == [
        (1, "pending", None, {"note": "ok"}),
        (2, "invalid", "a field over 131,072 characters (the row is not stored)", {}),
        (3, "pending", None, {"note": "after"}),
    ]
    assert_adds_up(report, campaign)


# --- at size -------------------------------------------------------------------------------


def test_50000_rows_counts_and_bounded_memory(session: Session, tmp_path: Path) -> None:
    rng = random.Random(50_000)
    path = tmp_path / "big.csv"
    expected = {"invalid": 0, "duplicate": 0, "suppressed": 0}
    seen: list[str] = []
    dnc: list[str] = []
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "phone", "name", "note"])
        for n in range(50_000):
            roll = rng.random()
            if roll < 0.02:
                phone = "n/a"
                expected["invalid"] += 1
            elif roll < 0.03 and seen:
                phone = rng.choice(seen)
                expected["duplicate"] += 1
            else:
                phone = valid_number(n)
                seen.append(phone)
                if roll < 0.04:
                    dnc.append(phone)
                    expected["suppressed"] += 1
            out.writerow([n, phone, f"person {n}", "x" * 40])
    add_suppressions(session, dnc)
    campaign = make_campaign(session)

    tracemalloc.start()
    try:
        report = import_contacts(session, campaign, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert report.rows == 50_000
    assert (report.invalid, report.duplicate, report.suppressed) == (
        expected["invalid"],
        expected["duplicate"],
        expected["suppressed"],
    )
    assert report.imported == 50_000 - sum(expected.values())
    assert_adds_up(report, campaign)
    count = session.scalar(select(func.count()).where(Contact.campaign_id == campaign.id))
    assert count == 50_000
    # The dedupe map is ~100 bytes a number; holding the rows would be tens of MB.
    assert peak < 15_000_000, f"import peaked at {peak / 1e6:.1f} MB of Python memory"


# --- SQLite --------------------------------------------------------------------------------


def test_sqlite_path(tmp_path: Path, tmp_csv) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'dialer.db'}")
    migrate.upgrade(engine)
    path = tmp_csv(
        [
            ["phone", "name"],
            ["(919) 555-1212", "Ann"],
            ["bogus", "Bob"],
            ["+19195551212", "Ann twin"],
            ["919 555 1213", "Cy"],
            ["919 555 1214", "Di"],
        ]
    )
    with Session(engine) as session:
        campaign = make_campaign(session)
        added, rejected = add_suppressions(session, ["9195551213", "junk"])
        assert (added, rejected) == (1, ["row 2: not a phone number"])
        assert add_suppressions(session, ["+19195551213"]) == (0, [])
        report = import_contacts(session, campaign, path)
        session.commit()
        got = [(c.row, c.status, c.reason, c.context) for c in contacts(session, campaign)]
    engine.dispose()
    assert report == ImportReport(rows=5, imported=2, invalid=1, duplicate=1, suppressed=1)
    assert got == [
        (1, "pending", None, {"name": "Ann"}),
        (2, "invalid", "not a phone number", {"name": "Bob"}),
        (3, "duplicate", "same number as row 1", {"name": "Ann twin"}),
        (4, "suppressed", "on the do-not-call list", {"name": "Cy"}),
        (5, "pending", None, {"name": "Di"}),
    ]


# --- do-not-call lists ---------------------------------------------------------------------


def suppressed_numbers(session: Session, campaign_id: int | None = None) -> set[str]:
    scope = (
        Suppression.campaign_id.is_(None)
        if campaign_id is None
        else Suppression.campaign_id == campaign_id
    )
    return set(session.scalars(select(Suppression.e164).where(scope)))


def test_dnc_file_finds_a_named_column_and_reports_bad_rows(session: Session, tmp_csv) -> None:
    path = tmp_csv(
        [
            ["name", "Number"],
            ["Ann", "(919) 555-1212"],
            ["Bob", "nope"],
            ["Cy", "+44 20 7946 0958"],
            ["Ann again", "919-555-1212"],
        ]
    )
    added, rejected = add_suppressions(session, path)
    assert added == 2
    assert rejected == ["row 2: not a phone number"]
    assert suppressed_numbers(session) == {"+19195551212", "+442079460958"}
    # Already present: skipped, not an error.
    assert add_suppressions(session, path) == (0, ["row 2: not a phone number"])


def test_dnc_file_uses_the_first_column_or_the_one_given(session: Session, tmp_csv) -> None:
    first = tmp_csv([["who", "where"], ["9195551212", "x"]], name="first.csv")
    assert add_suppressions(session, first) == (1, [])
    chosen = tmp_csv([["a", "cell"], ["x", "9195551213"]], name="chosen.csv")
    assert add_suppressions(session, chosen, phone_column="cell") == (1, [])
    assert suppressed_numbers(session) == {"+19195551212", "+19195551213"}


def test_dnc_file_without_a_header_keeps_its_first_number(session: Session, tmp_csv) -> None:
    path = tmp_csv([["9195551212"], ["9195551213"]])
    assert add_suppressions(session, path) == (2, [])


def test_dnc_per_campaign_is_separate_from_global(session: Session) -> None:
    campaign = make_campaign(session)
    assert add_suppressions(session, ["9195551212"]) == (1, [])
    assert add_suppressions(session, ["9195551212"], campaign_id=campaign.id) == (1, [])
    assert add_suppressions(session, ["+19195551212"], campaign_id=campaign.id) == (0, [])
    assert suppressed_numbers(session, campaign.id) == {"+19195551212"}

    assert remove_suppressions(session, ["919 555 1212"], campaign_id=campaign.id) == 1
    assert suppressed_numbers(session, campaign.id) == set()
    assert suppressed_numbers(session) == {"+19195551212"}
    assert remove_suppressions(session, ["919 555 1212"]) == 1
    assert remove_suppressions(session, ["919 555 1212"]) == 0


def test_dnc_region_applies_to_national_numbers(session: Session) -> None:
    added, rejected = add_suppressions(session, ["020 7946 0958", "2125550100"], region="GB")
    assert added == 1
    assert rejected == ["row 2: not a valid number for region GB"]


def test_good_rows_carry_their_time_zones_and_the_campaign_its_keys(
    session: Session, tmp_csv
) -> None:
    path = tmp_csv(
        [
            ["phone"],
            ["+12125551234"],  # New York
            ["+12083012345"],  # Boise and Los Angeles
            ["sip:desk@example.com"],  # no zone: the campaign's --timezone
            ["+12125551234"],  # duplicate: never dialed, no zone kept
            ["bogus"],
        ]
    )
    campaign = make_campaign(session)
    import_contacts(session, campaign, path)
    zones = session.execute(
        select(Contact.row, Contact.zones).where(Contact.campaign_id == campaign.id)
    ).all()
    assert sorted(zones) == [
        (1, "America/New_York"),
        (2, "America/Boise America/Los_Angeles"),
        (3, None),
        (4, None),
        (5, None),
    ]
    assert campaign.zone_keys == [None, "America/Boise America/Los_Angeles", "America/New_York"]


def test_the_cached_nanp_verdict_is_phonenumbers_own_for_numbers_sharing_a_prefix() -> None:
    """The fast path caches phonenumbers' verdict by a number's first digits (numbers.py
    proves from the metadata how many decide it); numbers that share those digits and
    differ after them get the uncached verdict, valid and invalid prefixes alike."""
    import random

    from dialer.importing import numbers

    assert numbers._PREFIX is not None, "the installed metadata no longer has the cached shape"
    rng = random.Random(3)
    compared = valid = 0
    for _ in range(400):
        prefix = str(rng.randrange(2 * 10 ** (numbers._PREFIX - 1), 10**numbers._PREFIX))
        for _ in range(5):
            digits = prefix + str(rng.randrange(10 ** (10 - numbers._PREFIX))).zfill(
                10 - numbers._PREFIX
            )
            cached = numbers._valid_nanp_cached(digits)
            assert cached == numbers._valid_nanp(int(digits)), digits
            compared += 1
            valid += cached
    assert 0 < valid < compared  # both verdicts were exercised
