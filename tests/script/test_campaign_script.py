"""The call script through the public API and CLI: create, update, status, export
(docs/interface.md, "What an answered call hears")."""

from __future__ import annotations

import csv
import io
import json

import pytest

from dialer import api, cli
from dialer.errors import ApiError
from dialer.store import db
from dialer.store.models import Attempt, Campaign, Contact


def rows(*names: str) -> list[dict[str, str]]:
    return [{"phone": f"+1919555{1000 + i}", "name": n} for i, n in enumerate(names)]


def test_create_keeps_the_script_and_status_shows_it(clean_db: None) -> None:
    report = api.create_campaign(
        "s",
        "+19195550000",
        rows("Ann", "Bob"),
        say="Hi {name}, press 1",
        keys="1=confirmed,9=opt-out",
        goodbye="Bye",
        voice="kate",
        max_duration=90,
    )
    st = api.status(report["id"])
    assert st["script"] == {
        "say": "Hi {name}, press 1",
        "voice": "kate",
        "goodbye": "Bye",
        "keys": "1=confirmed,9=opt-out",
        "max_duration": 90,
    }
    assert st["responses"] == {}


def test_a_row_whose_message_is_too_long_is_invalid_with_the_reason(clean_db: None) -> None:
    report = api.create_campaign(
        "s", "+19195550000", rows("Ann", "x" * 1000, "日本語"), say="Hello {name}"
    )
    assert (report["imported"], report["invalid"]) == (2, 1)
    with db.session_scope() as session:
        reasons = [c.reason for c in session.query(Contact).order_by(Contact.row)]
    assert reasons[1] == (
        "the --say text for this row is 1,006 characters; the carrier speaks at most 1,000"
    )
    assert reasons[0] is None and reasons[2] is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"say": "Hi {surname}"}, "columns the file does not have: surname"),
        ({"say": "{name.upper}"}, "not a plain column name"),
        ({"keys": "1=yes"}, "--keys needs a message"),
    ],
)
def test_create_refuses_a_bad_script_and_creates_nothing(
    clean_db: None, options: dict, message: str
) -> None:
    with pytest.raises(ApiError, match=message):
        api.create_campaign("s", "+19195550000", rows("Ann"), **options)
    assert api.list_campaigns() == []


def test_update_changes_the_script_checked_as_it_will_stand(clean_db: None) -> None:
    cid = api.create_campaign("s", "+19195550000", rows("Ann"), say="Hi {name}")["id"]
    result = api.update(cid, keys="1=yes", goodbye="Bye {name}")
    assert result["changed"] == ["keys", "goodbye"]
    assert result["script"]["keys"] == "1=yes"
    with pytest.raises(ApiError, match="surname"):
        api.update(cid, say="Hi {surname}")
    with pytest.raises(ApiError, match="--keys needs a message"):
        api.update(cid, say=None)
    assert api.update(cid, say=None, keys=None, goodbye=None)["script"] == {}


def test_export_has_response_digits_and_from(clean_db: None) -> None:
    cid = api.create_campaign(
        "s", "+19195550000", rows("Ann", "Bob"), say="Hi", keys="1=confirmed"
    )["id"]
    with db.session_scope() as session:
        session.get(Campaign, cid).run = 1  # as start makes it: the attempt's run
        first = session.query(Contact).filter_by(row=1).one()
        attempt = Attempt(
            contact_id=first.id,
            campaign_id=cid,
            number=1,
            status="ended",
            call_id="c-1",
            queued_at=first.due_at,
            result="answered",
            digits="1",
            response="confirmed",
        )
        session.add(attempt)
        session.flush()
        first.last_attempt_id = attempt.id
        first.attempts = 1
        first.status = "answered"
    out = io.StringIO()
    api.export(cid, out)
    got = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(got[0])[9:12] == ["response", "digits", "from"]
    assert (got[0]["response"], got[0]["digits"], got[0]["from"]) == (
        "confirmed",
        "1",
        "+19195550000",
    )
    assert (got[1]["response"], got[1]["digits"], got[1]["from"]) == ("", "", "")
    assert api.status(cid)["responses"] == {"confirmed": 1}


def test_the_cli_takes_every_script_option(clean_db: None, tmp_csv, capsys) -> None:
    path = tmp_csv([["phone", "name"], ["+19195551000", "Ann"]])
    code = cli.main(
        [
            "campaign", "create", "--name", "s", "--from", "+19195550000",
            "--contacts", str(path), "--json", "--say", "Hi {name}", "--voice", "paul",
            "--locale", "en_US", "--gender", "male", "--keys", "1=confirmed,0=transfer",
            "--goodbye", "Bye", "--transfer-to", "+19195550001", "--max-duration", "60",
        ]
    )  # fmt: skip
    assert code == 0
    cid = json.loads(capsys.readouterr().out)["id"]
    assert cli.main(["campaign", "update", str(cid), "--max-duration", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] == ["max_duration"]
    assert cli.main(["campaign", "status", str(cid), "--json"]) == 0
    script = json.loads(capsys.readouterr().out)["script"]
    assert script == {
        "say": "Hi {name}",
        "voice": "paul",
        "locale": "en_US",
        "gender": "male",
        "goodbye": "Bye",
        "transfer_to": "+19195550001",
        "keys": "1=confirmed,0=transfer",
    }
    with pytest.raises(SystemExit) as exited:
        cli.main(["campaign", "create", "--name", "s", "--from", "+19195550000",
                  "--contacts", str(path), "--say", "x", "--play", "http://a/b.wav"])  # fmt: skip
    assert exited.value.code == 2
    assert "not allowed with argument --say" in capsys.readouterr().err
