"""A campaign's create-call options, checked against the create-call page at create."""

from __future__ import annotations

import pytest

from dialer.carrier import options
from dialer.errors import ApiError


def test_options_are_normalised_and_become_request_fields() -> None:
    row = options.check(
        {"record": True, "record_format": "MP3", "record_max": 60, "transcribe": True,
         "sip_headers": ["X-Account=42", "X-Team=a=b"], "callback_timeout": 3000}
    )  # fmt: skip
    assert row["record_format"] == "mp3"
    assert row["sip_headers"] == {"X-Account": "42", "X-Team": "a=b"}

    class C:
        pass

    c = C()
    vars(c).update(row)
    assert options.request_fields(c) == {
        "recording_enabled": True, "recording_file_format": "mp3",
        "recording_max_duration": 60, "transcription_enabled": True,
        "sip_headers": {"X-Account": "42", "X-Team": "a=b"}, "callback_timeout": 3000,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"record_format": "ogg"}, "--record-format: must be wav or mp3"),
        ({"record_max": 0}, "--record-max"),
        ({"callback_timeout": 10001}, "--callback-timeout: .* 1 to 10000"),
        ({"sip_headers": ["Account=1"]}, '--sip-header: every header name must start with "X-"'),
        ({"sip_headers": [f"X-H{i}=1" for i in range(6)]}, "--sip-header: at most 5"),
        ({"sip_headers": ["X-A=1", "x-a=2"]}, "--sip-header x-a is given twice"),
        ({"sip_headers": ["novalue"]}, "--sip-header must be X-NAME=VALUE"),
        ({"sip_headers": ["X-A=bad\nvalue"]}, "--sip-header: every header value"),
        ({"record": "yes"}, "--record must be true or false"),
    ],
)
def test_a_bad_option_is_named(given: dict, message: str) -> None:
    with pytest.raises(ApiError, match=message):
        options.check(given)
