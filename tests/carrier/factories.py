"""Call requests the carrier tests share (tests/carrier/test_request.py, test_client.py)."""

from __future__ import annotations

from dialer.carrier.request import CallRequest

CALLBACK = "https://hook-user:hook-PASSWORD-42@dialer.example.com/callbacks/calls"
FROM = "+19195551212"
TO = "+19195550100"

BASIC = CallRequest(from_=FROM, to=TO)
FULL = CallRequest(
    from_=FROM,
    to=TO,
    call_timeout=30,
    callback_url=CALLBACK,
    callback_timeout=5000,
    callback_http_method="POST",
    fallback_url=CALLBACK,
    bridge_id="brg-1",
    conference_id="conf-1",
    recording_enabled=True,
    recording_max_duration=600,
    recording_file_format="mp3",
    transcription_enabled=False,
    tag='{"a":1}',
    sip_headers={"X-Campaign": "7"},
)
