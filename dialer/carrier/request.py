"""One create-call request and the create-call page's rules for its fields.

:class:`CallRequest` holds the request in Python names and gives the carrier's camelCase
body (:meth:`CallRequest.to_json`); :meth:`CallRequest.validate` refuses, before anything
is sent, what the carrier's page says it would refuse (``docs/catapult-v1.md``, "Create a
call"), naming the field and the rule but never the value (numbers, credentials).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from dialer.carrier.errors import redact_url

# fullmatch, ASCII digits only: "\d" would accept other scripts' digits and "$" a
# trailing newline.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# "sip:user@host" with optional port and URI parameters; the carrier's page gives only
# the example sip:someone@somewhere.com, so this checks the shape, not the grammar.
_SIP_URI = re.compile(r"sip:[^\s@]+@[^\s@]+", re.IGNORECASE)
# RFC 9110 token characters, so a header name cannot smuggle a separator or a newline.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_CALL_TIMEOUT = 300  # seconds (create-call page: "Maximum Time: 300")
MAX_CALLBACK_TIMEOUT = 10_000  # milliseconds (create-call page: "Maximum Time: 10000")
MAX_TAG = 256  # v1 is silent; the newer API documents 256 (docs/carrier.md)
MAX_SIP_HEADERS = 5
MAX_SIP_HEADER_PART = 256

# Python field -> the carrier's JSON name, in the order of the create-call page.
_JSON_NAMES = {
    "from_": "from",
    "to": "to",
    "call_timeout": "callTimeout",
    "callback_url": "callbackUrl",
    "callback_timeout": "callbackTimeout",
    "callback_http_method": "callbackHttpMethod",
    "fallback_url": "fallbackUrl",
    "bridge_id": "bridgeId",
    "conference_id": "conferenceId",
    "recording_enabled": "recordingEnabled",
    "recording_max_duration": "recordingMaxDuration",
    "recording_file_format": "recordingFileFormat",
    "transcription_enabled": "transcriptionEnabled",
    "tag": "tag",
    "sip_headers": "sipHeaders",
}


class InvalidCallRequest(ValueError):
    """A call request breaks one of the create-call page's rules.

    ``field`` is the :class:`CallRequest` attribute name (``from_``, ``call_timeout``, ...).
    The message names the field and the rule, never the value: values hold phone numbers
    and, for the callback URLs, credentials.
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_http_url(field: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidCallRequest(field, "must be an http(s) URL")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise InvalidCallRequest(field, "must be an http(s) URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidCallRequest(field, "must be an http(s) URL with a host")
    if _CONTROL.search(value) or " " in value:
        raise InvalidCallRequest(field, "must not contain spaces or control characters")


@dataclass(frozen=True)
class CallRequest:
    """One create-call request, in Python names; :meth:`to_json` gives the carrier's."""

    from_: str
    to: str
    call_timeout: int | None = None
    callback_url: str | None = None
    callback_timeout: int | None = None
    callback_http_method: str | None = None
    fallback_url: str | None = None
    bridge_id: str | None = None
    conference_id: str | None = None
    recording_enabled: bool | None = None
    recording_max_duration: int | None = None
    recording_file_format: str | None = None
    transcription_enabled: bool | None = None
    tag: str | None = None
    sip_headers: Mapping[str, str] | None = None

    def __repr__(self) -> str:
        # The default repr would print callback_url, credentials and all, into any log
        # line or traceback that shows this object.
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name in ("callback_url", "fallback_url"):
                value = redact_url(value) if isinstance(value, str) else "<redacted>"
            shown.append(f"{f.name}={value!r}")
        return f"CallRequest({', '.join(shown)})"

    def validate(self) -> None:
        """Raise :class:`InvalidCallRequest` for the first rule this request breaks."""
        if not isinstance(self.from_, str) or not _E164.fullmatch(self.from_):
            raise InvalidCallRequest("from_", "must be an E.164 number like +19195551212")
        if not isinstance(self.to, str) or not (
            _E164.fullmatch(self.to) or _SIP_URI.fullmatch(self.to)
        ):
            raise InvalidCallRequest(
                "to", "must be an E.164 number like +19195551212 or a SIP URI like sip:user@host"
            )
        if self.call_timeout is not None and not (
            is_int(self.call_timeout) and 1 <= self.call_timeout <= MAX_CALL_TIMEOUT
        ):
            raise InvalidCallRequest(
                "call_timeout", f"must be a whole number of seconds from 1 to {MAX_CALL_TIMEOUT}"
            )
        if self.callback_url is not None:
            _check_http_url("callback_url", self.callback_url)
        if self.callback_timeout is not None and not (
            is_int(self.callback_timeout) and 1 <= self.callback_timeout <= MAX_CALLBACK_TIMEOUT
        ):
            raise InvalidCallRequest(
                "callback_timeout",
                f"must be a whole number of milliseconds from 1 to {MAX_CALLBACK_TIMEOUT}",
            )
        if self.callback_http_method is not None and (
            not isinstance(self.callback_http_method, str)
            or self.callback_http_method.upper() not in ("POST", "GET")
        ):
            raise InvalidCallRequest("callback_http_method", "must be POST or GET")
        if self.fallback_url is not None:
            _check_http_url("fallback_url", self.fallback_url)
        for name in ("bridge_id", "conference_id"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, str) or not value.strip() or _CONTROL.search(value)
            ):
                raise InvalidCallRequest(name, "must be a non-empty id")
        for name in ("recording_enabled", "transcription_enabled"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise InvalidCallRequest(name, "must be true or false")
        if self.recording_max_duration is not None and not (
            is_int(self.recording_max_duration) and self.recording_max_duration > 0
        ):
            raise InvalidCallRequest(
                "recording_max_duration", "must be a whole number of seconds greater than 0"
            )
        if self.recording_file_format is not None and self.recording_file_format not in (
            "wav",
            "mp3",
        ):
            raise InvalidCallRequest("recording_file_format", "must be wav or mp3")
        if self.tag is not None and (not isinstance(self.tag, str) or len(self.tag) > MAX_TAG):
            raise InvalidCallRequest("tag", f"must be a string of at most {MAX_TAG} characters")
        if self.sip_headers is not None:
            self._validate_sip_headers()

    def _validate_sip_headers(self) -> None:
        headers = self.sip_headers
        if not isinstance(headers, Mapping):
            raise InvalidCallRequest("sip_headers", "must be a mapping of header name to value")
        if len(headers) > MAX_SIP_HEADERS:
            raise InvalidCallRequest("sip_headers", f"at most {MAX_SIP_HEADERS} headers")
        for name, value in headers.items():
            if not isinstance(name, str) or not name[:2].upper() == "X-":
                raise InvalidCallRequest("sip_headers", 'every header name must start with "X-"')
            if len(name) > MAX_SIP_HEADER_PART or not _TOKEN.fullmatch(name):
                raise InvalidCallRequest(
                    "sip_headers",
                    f"every header name must be at most {MAX_SIP_HEADER_PART} token characters",
                )
            if (
                not isinstance(value, str)
                or len(value) > MAX_SIP_HEADER_PART
                or _CONTROL.search(value)
            ):
                raise InvalidCallRequest(
                    "sip_headers",
                    f"every header value must be text of at most {MAX_SIP_HEADER_PART}"
                    " characters without control characters",
                )

    def to_json(self) -> dict[str, Any]:
        """The create-call body: camelCase, only the fields that are set (no nulls)."""
        body: dict[str, Any] = {}
        for name, json_name in _JSON_NAMES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if name == "callback_http_method":
                value = value.upper()
            elif name == "sip_headers":
                value = dict(value)
            body[json_name] = value
        return body
