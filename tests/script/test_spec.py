"""A campaign's call script: options checked at create and update, the per-row check at
import (dialer.script.spec)."""

from __future__ import annotations

import pytest

from dialer.script import spec
from dialer.script.spec import ScriptError


def test_a_full_script_is_kept_and_shown() -> None:
    script = spec.build(
        say="Hi {name}, press 1 to confirm, 9 to opt out",
        keys="1=confirmed, 2=cancelled,9=opt-out,0=transfer",
        goodbye="Thanks {name}",
        transfer_to="+19195550000",
        voice="Kate",
        locale="en_US",
        gender="Female",
        max_duration=120,
        columns=["name"],
    )
    assert script.keys == (
        ("1", "confirmed"),
        ("2", "cancelled"),
        ("9", "opt-out"),
        ("0", "transfer"),
    )
    assert script.voice == "kate" and script.gender == "female"
    assert script.columns() == ("name",)
    assert script.shown()["keys"] == "1=confirmed,2=cancelled,9=opt-out,0=transfer"
    assert spec.Script.of(type("Row", (), script.as_row())) == script


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"say": "x", "play": "http://a/b.wav"}, "not both"),
        ({"say": "{nope}"}, "columns the file does not have: nope"),
        ({"say": "x" * 1001}, "1,001 characters"),
        ({"say": "  "}, "--say is empty"),
        ({"play": "ftp://a/b.wav"}, r"--play must be an http\(s\) URL"),
        ({"keys": "1=a"}, "--keys needs a message"),
        ({"goodbye": "bye"}, "--goodbye needs a message"),
        ({"say": "x", "keys": "12=a"}, "not one key"),
        ({"say": "x", "keys": "1=a,1=b"}, "given twice"),
        ({"say": "x", "keys": "1"}, "is not KEY=LABEL"),
        ({"say": "x", "keys": "1=<b>"}, "label"),
        ({"say": "x", "keys": "1=transfer"}, "give --transfer-to"),
        ({"say": "x", "keys": "1=a", "transfer_to": "+19195550000"}, "needs a key labelled"),
        ({"say": "x", "keys": "1=transfer", "transfer_to": "919"}, "--transfer-to must be"),
        ({"say": "x", "voice": "hal"}, "--voice must be one of"),
        ({"say": "x", "locale": "xx"}, "--locale must be one of"),
        ({"say": "x", "gender": "robot"}, "--gender must be female or male"),
        ({"max_duration": 0}, "--max-duration must be"),
    ],
)
def test_each_bad_option_is_refused_naming_it(options: dict, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        spec.build(**options, columns=["name"])


def test_max_duration_alone_is_not_a_script_that_speaks() -> None:
    script = spec.build(max_duration=60)
    assert not script.speaks and script.max_duration == 60


def test_the_row_check_names_rows_whose_text_is_too_long() -> None:
    script = spec.build(say="Hello {name}", goodbye="Bye", columns=["name"])
    check = spec.row_check(script)
    assert check is not None
    assert check({"name": "x" * 10}) is None
    reason = check({"name": "x" * 995})
    assert reason == (
        "the --say text for this row is 1,001 characters; the carrier speaks at most 1,000"
    )
    # No column named: create checked the one text already, no per-row work.
    assert spec.row_check(spec.build(say="Hello")) is None
