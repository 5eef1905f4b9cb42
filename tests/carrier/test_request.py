"""CallRequest: the create-call page's rules for each field, and the carrier's JSON body."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dialer.carrier.request import InvalidCallRequest
from tests.carrier.factories import BASIC, CALLBACK, FROM, FULL, TO


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"from_": "19195551212"}, "from_"),
        ({"from_": "+0919555"}, "from_"),
        ({"from_": "+1234567890123456"}, "from_"),  # 16 digits
        ({"from_": "+19195551212\n"}, "from_"),
        ({"from_": "sip:a@b.com"}, "from_"),
        ({"to": "9195550100"}, "to"),
        ({"to": "sip:nobody"}, "to"),
        ({"to": "tel:+19195550100"}, "to"),
        ({"call_timeout": 0}, "call_timeout"),
        ({"call_timeout": 301}, "call_timeout"),
        ({"call_timeout": True}, "call_timeout"),
        ({"callback_url": "ftp://user:pw@host/x"}, "callback_url"),
        ({"callback_url": "https://"}, "callback_url"),
        ({"callback_timeout": 0}, "callback_timeout"),
        ({"callback_timeout": 10001}, "callback_timeout"),
        ({"callback_http_method": "PUT"}, "callback_http_method"),
        ({"fallback_url": "not a url"}, "fallback_url"),
        ({"recording_file_format": "ogg"}, "recording_file_format"),
        ({"recording_max_duration": 0}, "recording_max_duration"),
        ({"recording_enabled": "yes"}, "recording_enabled"),
        ({"transcription_enabled": 1}, "transcription_enabled"),
        ({"bridge_id": ""}, "bridge_id"),
        ({"conference_id": " "}, "conference_id"),
        ({"tag": "x" * 257}, "tag"),
        ({"sip_headers": {f"X-H{i}": "v" for i in range(6)}}, "sip_headers"),
        ({"sip_headers": {"Campaign": "7"}}, "sip_headers"),
        ({"sip_headers": {"X-" + "h" * 255: "v"}}, "sip_headers"),
        ({"sip_headers": {"X-H": "v" * 257}}, "sip_headers"),
        ({"sip_headers": {"X-H": "a\r\nX-Injected: 1"}}, "sip_headers"),
    ],
)
def test_each_broken_rule_names_its_field(changes: dict, field_name: str) -> None:
    with pytest.raises(InvalidCallRequest) as info:
        dataclasses.replace(BASIC, **changes).validate()
    assert info.value.field == field_name
    assert field_name in str(info.value)


@pytest.mark.parametrize("field_name", ["callback_url", "fallback_url"])
def test_url_errors_never_show_the_url(field_name: str) -> None:
    bad = "ftp://hook-user:hook-PASSWORD-42@dialer.example.com/x"
    with pytest.raises(InvalidCallRequest) as info:
        dataclasses.replace(BASIC, **{field_name: bad}).validate()
    assert "PASSWORD" not in str(info.value) and "hook-user" not in str(info.value)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"to": "sip:someone@somewhere.com"},
        {"call_timeout": 1},
        {"call_timeout": 300},
        {"callback_timeout": 10000},
        {"callback_http_method": "GET"},
        {"tag": "x" * 256},
        {"sip_headers": {f"X-H{i}": "v" * 256 for i in range(5)}},
    ],
)
def test_edges_of_each_rule_are_accepted(changes: dict) -> None:
    dataclasses.replace(BASIC, **changes).validate()
    FULL.validate()


def test_to_json_is_camel_case_and_omits_unset_fields() -> None:
    assert BASIC.to_json() == {"from": FROM, "to": TO}
    body = FULL.to_json()
    assert body == {
        "from": FROM,
        "to": TO,
        "callTimeout": 30,
        "callbackUrl": CALLBACK,
        "callbackTimeout": 5000,
        "callbackHttpMethod": "POST",
        "fallbackUrl": CALLBACK,
        "bridgeId": "brg-1",
        "conferenceId": "conf-1",
        "recordingEnabled": True,
        "recordingMaxDuration": 600,
        "recordingFileFormat": "mp3",
        "transcriptionEnabled": False,
        "tag": '{"a":1}',
        "sipHeaders": {"X-Campaign": "7"},
    }
    text = json.dumps(dataclasses.replace(FULL, tag=None, call_timeout=None).to_json())
    assert '"recordingEnabled": true' in text and '"transcriptionEnabled": false' in text
    assert "null" not in text and "callTimeout" not in text and '"tag"' not in text


def test_repr_of_a_request_hides_the_callback_password() -> None:
    assert "PASSWORD" not in repr(FULL)
