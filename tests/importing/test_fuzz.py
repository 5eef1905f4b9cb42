"""The importer driven with generated garbage (issue 17): random bytes, separators,
quotes, NULs, line ends, over-long fields, UTF-8 and Latin-1 mixed, good rows among them,
each file imported through ``api.create_campaign`` into the test database.

Whatever the file, one of two things happens, and nothing else changes:

- a clear error (``api.ApiError``, a ValueError, with a message) and nothing created: no
  campaign and no contact;
- or every data row a contact: as many contacts as the report's ``rows``, numbered 1..n,
  each either ``invalid`` with a non-empty reason or a dialable address (E.164 or a SIP
  URI), and the report's counts adding up.

Another campaign's contacts, made before, are the same afterwards. ``EXAMPLES`` files are
generated (300: 5-13 s here, by the load); the test prints how many ran, were refused and were
imported, and asserts both outcomes were reached.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from dialer import api
from dialer.store import db
from dialer.store.models import Campaign, Contact

EXAMPLES = 300
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
DIALABLE = {"pending", "duplicate", "suppressed"}

_GOOD_NUMBERS = [f"+1919200{n:04d}" for n in range(20)] + ["(919) 200-0001", "919.200.0002"]
_SEPARATORS = [b",", b",", b";", b"\t", b"|"]  # "|" is not read as a separator
_LINE_ENDS = [b"\n", b"\r\n", b"\r"]
# Pieces a broken file is made of: structure characters, a BOM in the wrong place, text,
# numbers good and bad, a formula; and, in a quarter of the files, bytes that are not
# UTF-8 (Latin-1 text, stray bytes, UTF-16) that refuse the whole file.
_PIECES = [
    b'"', b'""', b",", b";", b"\t", b"\n", b"\r", b"\r\n", b"\x00", b"\xef\xbb\xbf",
    "Zoë".encode(), b'=HYPERLINK("x")', b"sip:a@example.com", b"sip:a\x00@example.com",
    b"9195551212", b"n/a", b" ",
]  # fmt: skip
_NOT_UTF8 = [b"\xff", b"\xe9", "Zoë".encode("latin-1"), "phone".encode("utf-16")]


@st.composite
def field(draw: st.DrawFn, not_utf8: bool) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind <= 4:
        return draw(st.sampled_from(_GOOD_NUMBERS)).encode()
    if kind <= 6:
        pieces = _PIECES + _NOT_UTF8 if not_utf8 else _PIECES
        return b"".join(draw(st.lists(st.sampled_from(pieces), max_size=6)))
    if kind <= 8:
        if not_utf8:
            return draw(st.binary(max_size=40))
        return (
            draw(st.text(max_size=20)).encode("utf-8", "surrogatepass").replace(b"\xed", b"?")
        )  # no lone surrogates: those are not UTF-8 either
    return b"x" * draw(st.sampled_from([1_000, 140_000]))  # over csv's field limit


@st.composite
def contacts_file(draw: st.DrawFn) -> bytes:
    not_utf8 = draw(st.integers(0, 3)) == 0
    separator = draw(st.sampled_from(_SEPARATORS))
    names = draw(
        st.lists(st.sampled_from([b"name", b"note", b"zip", b'a"b', b""]), max_size=4, unique=True)
    )
    if draw(st.integers(0, 9)):
        names.insert(draw(st.integers(0, len(names))), draw(st.sampled_from([b"phone", b"Phone "])))
    head = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    lines = [separator.join(names)]
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 3)):
            width = len(names) + draw(st.sampled_from([0, 0, 0, -1, 1, 3]))
            lines.append(separator.join(draw(field(not_utf8)) for _ in range(max(width, 1))))
        elif not_utf8:
            lines.append(draw(st.binary(max_size=80)))
        else:
            lines.append(b"".join(draw(st.lists(st.sampled_from(_PIECES), max_size=12))))
    ends = [draw(st.sampled_from(_LINE_ENDS)) for _ in lines]
    return head + b"".join(line + end for line, end in zip(lines, ends, strict=True))


_WHY = ["not UTF-8", "UTF-16", "no phone column", "NUL", "more than once", "empty", "header"]


def snapshot(campaign_id: int) -> list[tuple[Any, ...]]:
    with db.session_scope() as session:
        rows = session.execute(
            select(
                Contact.id,
                Contact.row,
                Contact.phone,
                Contact.e164,
                Contact.status,
                Contact.reason,
                Contact.context,
            )  # fmt: skip
            .where(Contact.campaign_id == campaign_id)
            .order_by(Contact.row)
        ).all()
    return [tuple(r) for r in rows]


def totals() -> tuple[int, int]:
    with db.session_scope() as session:
        return (
            session.scalar(select(func.count()).select_from(Campaign)) or 0,
            session.scalar(select(func.count()).select_from(Contact)) or 0,
        )


def test_garbage_files_are_refused_whole_or_every_row_accounted_for(
    clean_db: None, tmp_path: Path
) -> None:
    other = tmp_path / "other.csv"
    other.write_text("phone,name\n9192000001,Ann\nnope,Bob\n9192000001,again\n", "utf-8")
    other_id = api.create_campaign("other", "+19195550000", other)["id"]
    other_before = snapshot(other_id)
    outcomes = {"refused": 0, "imported": 0}
    why: Counter[str] = Counter()
    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(content=contacts_file())
    def check(content: bytes) -> None:
        path = tmp_path / "fuzz.csv"
        path.write_bytes(content)
        before = totals()
        try:
            report = api.create_campaign("fuzz", "+19195550000", path)
        except api.ApiError as exc:
            assert str(exc).strip(), "an error without a message"
            assert totals() == before, f"refused ({exc}) but something was created"
            outcomes["refused"] += 1
            why[next((w for w in _WHY if w in str(exc)), "other")] += 1
            return
        outcomes["imported"] += 1
        got = snapshot(report["id"])
        assert len(got) == report["rows"]
        assert [r[1] for r in got] == list(range(1, len(got) + 1))
        assert report["rows"] == sum(
            report[k] for k in ("imported", "invalid", "duplicate", "suppressed")
        )
        for _id, row, _phone, e164, status, reason, context in got:
            assert isinstance(context, dict)
            if status == "invalid":
                assert reason, f"row {row} invalid without a reason"
                assert e164 is None
            else:
                assert status in DIALABLE, status
                assert e164 is not None
                assert E164.fullmatch(e164) or e164.startswith(("sip:", "sips:")), e164
        assert sum(r[4] == "invalid" for r in got) == report["invalid"]
        assert totals()[1] == before[1] + len(got), "rows written beyond this campaign's"

    check()
    took = time.monotonic() - started
    ran = outcomes["refused"] + outcomes["imported"]
    print(
        f"\nfuzz: {ran} generated files in {took:.1f} s: "
        f"{outcomes['refused']} refused whole ({dict(why)}), "
        f"{outcomes['imported']} imported row by row"
    )
    assert ran >= EXAMPLES
    assert outcomes["refused"] and outcomes["imported"], outcomes
    assert snapshot(other_id) == other_before, "another campaign's contacts changed"
