"""The carrier's wire format: times, error bodies, and the checks on request bodies."""

from __future__ import annotations

import json
import re
import string
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dialer.dev.simulator.config import DTMF

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
SIP_URI = re.compile(r"^sip:[^@\s]+@[^@\s]+$")
ID_CHARS = string.ascii_lowercase + string.digits

CREATE_FIELDS = frozenset(
    {
        "from",
        "to",
        "callTimeout",
        "callbackUrl",
        "callbackTimeout",
        "callbackHttpMethod",
        "fallbackUrl",
        "bridgeId",
        "conferenceId",
        "recordingEnabled",
        "recordingMaxDuration",
        "recordingFileFormat",
        "transcriptionEnabled",
        "tag",
        "sipHeaders",
    }
)

# docs/carrier.md, "Call control": the /audio body, and a gather's prompt.
AUDIO_FIELDS = frozenset(
    {"sentence", "fileUrl", "gender", "locale", "voice", "loopEnabled", "volume", "tag"}
)
PROMPT_FIELDS = frozenset(
    {"sentence", "fileUrl", "gender", "locale", "voice", "loopEnabled", "bargeable"}
)
GATHER_FIELDS = frozenset({"maxDigits", "interDigitTimeout", "terminatingDigits", "tag", "prompt"})
# methods/calls/postTransferCall.md.
TRANSFER_FIELDS = frozenset(
    {
        "state",
        "transferTo",
        "transferCallerId",
        "whisperAudio",
        "callbackUrl",
        "recordingEnabled",
        "recordingFileFormat",
    }
)
SENTENCE_MAX = 1000


def iso(ts: float) -> str:
    # ISO 8601 UTC with milliseconds and Z, like the platform's event times. Computing from
    # whole milliseconds keeps the seconds and the fraction from rounding apart.
    ms = int(ts * 1000)
    return f"{datetime.fromtimestamp(ms // 1000, UTC):%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def error(category: str, code: str, message: str, details: list[dict] | None = None) -> dict:
    return {"category": category, "code": code, "message": message, "details": details or []}


class ApiError(Exception):
    def __init__(self, status: int, body: dict, headers: dict[str, str] | None = None):
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body
        self.headers = headers or {}


def invalid(name: str, value: Any, message: str, code: str = "validation-error") -> ApiError:
    shown = value if isinstance(value, str) else json.dumps(value)
    return ApiError(
        400,
        error("bad-request", code, f"{name}: {message}", [{"name": name, "value": shown}]),
    )


def not_found(code: str, what: str, value: str) -> ApiError:
    return ApiError(
        404,
        error("not-found", code, f"{what} {value} was not found", [{"name": what, "value": value}]),
    )


def forbidden(code: str, message: str, call_id: str) -> ApiError:
    # errors.md puts call-audio-invalid-state and call-invalid-state under 403 FORBIDDEN.
    return ApiError(403, error("forbidden", code, message, [{"name": "callId", "value": call_id}]))


def _object(body: Any, allowed: frozenset[str], where: str = "") -> dict:
    if not isinstance(body, dict):
        raise invalid(where or "body", "", "must be a JSON object")
    for name in sorted(body):
        if name not in allowed:
            raise invalid(where + name, body[name], "unknown field")
        if body[name] is None:
            raise invalid(where + name, None, "must not be null; leave the field out instead")
    return body


def is_http_url(url: Any) -> bool:
    parts = urlsplit(url) if isinstance(url, str) else None
    return parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)


def validate_create(body: Any) -> dict:
    """Check a create-call body like the platform does (docs/carrier.md, "Create a call")."""
    if not isinstance(body, dict):
        raise invalid("body", "", "the request body must be a JSON object")
    _object(body, CREATE_FIELDS)
    for name in ("from", "to"):
        if name not in body:
            raise invalid(name, "", "is required")
    src, dst = body["from"], body["to"]
    if not isinstance(src, str) or not E164.match(src):
        raise invalid("from", src, "must be an E.164 number like +19195551212")
    if not isinstance(dst, str) or not (E164.match(dst) or SIP_URI.match(dst)):
        raise invalid("to", dst, "must be an E.164 number or a SIP URI like sip:user@host")

    def integer(name: str, low: int, high: int | None) -> None:
        if name not in body:
            return
        value = body[name]
        if type(value) is not int or value < low or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            raise invalid(name, value, f"must be a whole number {bound}")

    integer("callTimeout", 1, 300)
    integer("callbackTimeout", 1, 10000)
    integer("recordingMaxDuration", 1, None)
    for name in ("recordingEnabled", "transcriptionEnabled"):
        if name in body and type(body[name]) is not bool:
            raise invalid(name, body[name], "must be a JSON boolean (true or false)")
    for name in ("tag", "bridgeId", "conferenceId"):
        if name in body and not isinstance(body[name], str):
            raise invalid(name, body[name], "must be a string")
    # GET makes the call a BXML call (docs/carrier.md, "BXML").
    method = body.get("callbackHttpMethod", "POST")
    if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
        raise invalid("callbackHttpMethod", method, "must be GET or POST")
    fmt = body.get("recordingFileFormat", "wav")
    if fmt not in ("wav", "mp3"):
        raise invalid("recordingFileFormat", fmt, "must be wav or mp3")
    headers = body.get("sipHeaders", {})
    if not isinstance(headers, dict):
        raise invalid("sipHeaders", headers, "must be an object of header names to values")
    if len(headers) > 5:
        raise invalid("sipHeaders", headers, "at most 5 headers")
    for name, value in headers.items():
        if not name.upper().startswith("X-") or len(name) > 256:
            raise invalid("sipHeaders", name, "header names start with X- (at most 256 chars)")
        if not isinstance(value, str) or len(value) > 256:
            raise invalid("sipHeaders", value, f"{name} must be a string of at most 256 chars")
    for name in ("callbackUrl", "fallbackUrl"):
        if name in body and not is_http_url(body[name]):
            url = body[name]
            shown = without_userinfo(url) if isinstance(url, str) else url
            raise invalid(name, shown, "must be an http(s) URL", "callback-invalid-url")
    return body


def _sound(body: dict, where: str) -> dict:
    """The audio part of an /audio body or a gather prompt, as an audio record."""
    for name in ("gender", "locale", "voice", "tag"):
        if name in body and not isinstance(body[name], str):
            raise invalid(where + name, body[name], "must be a string")
    if "gender" in body and body["gender"] not in ("male", "female"):
        raise invalid(where + "gender", body["gender"], "must be male or female")
    for name in ("loopEnabled", "bargeable"):
        if name in body and type(body[name]) is not bool:
            raise invalid(where + name, body[name], "must be a JSON boolean")
    if "volume" in body and (type(body["volume"]) is not int or not -4 <= body["volume"] <= 4):
        raise invalid(where + "volume", body["volume"], "must be a whole number -4..4")
    has_sentence, has_file = "sentence" in body, "fileUrl" in body
    if has_sentence == has_file:
        raise invalid(where + "sentence", "", "give exactly one of sentence and fileUrl")
    if has_sentence:
        text = body["sentence"]
        if not isinstance(text, str) or len(text) > SENTENCE_MAX:
            raise invalid(
                where + "sentence", text, f"must be a string of at most {SENTENCE_MAX} chars"
            )
        sound = {"verb": "SpeakSentence", "text": text}
        for name in ("voice", "gender", "locale"):
            if name in body:
                sound[name] = body[name]
        return sound
    url = body["fileUrl"]
    if url != "" and not is_http_url(url):
        raise invalid(where + "fileUrl", url, "must be an http(s) URL of a WAV or MP3 file")
    return {"verb": "PlayAudio", "url": url}


def validate_audio(body: Any) -> tuple[dict, str | None]:
    """An /audio body as (what to play, its tag). An empty sentence or fileUrl stops the
    audio playing (docs/carrier.md, "Call control")."""
    _object(body, AUDIO_FIELDS)
    return _sound(body, ""), body.get("tag")


def _number(body: dict, name: str, low: float, high: float, whole: bool) -> float | None:
    # The docs' own samples send these as strings ("maxDigits": "5"): take both.
    if name not in body:
        return None
    raw = body[name]
    try:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ValueError
        value = float(raw)
        if whole and value != int(value):
            raise ValueError
    except ValueError:
        raise invalid(name, raw, "must be a number") from None
    if not low <= value <= high:
        raise invalid(name, raw, f"must be between {low:g} and {high:g}")
    return value


def validate_gather(body: Any) -> dict:
    """A REST gather body, checked (docs/carrier.md, "Call control": at most 30 digits,
    at most 30 s between them)."""
    _object(body, GATHER_FIELDS)
    max_digits = _number(body, "maxDigits", 1, 30, whole=True)
    timeout = _number(body, "interDigitTimeout", 0.001, 30, whole=False)
    terminating = body.get("terminatingDigits", "#")
    if not isinstance(terminating, str) or set(terminating) - DTMF:
        raise invalid("terminatingDigits", terminating, "must be a string of 0-9, * and #")
    tag = body.get("tag")
    if tag is not None and not isinstance(tag, str):
        raise invalid("tag", tag, "must be a string")
    prompt: list[dict] = []
    if "prompt" in body:
        sound = _sound(_object(body["prompt"], PROMPT_FIELDS, "prompt."), "prompt.")
        if sound.get("text") or sound.get("url"):
            prompt.append(sound)
    return {
        # The REST gather's maxDigits default is undocumented; BXML's is 128, capped at 30.
        "max_digits": int(max_digits) if max_digits is not None else 30,
        "inter_digit_timeout": timeout if timeout is not None else 5.0,
        "terminating": terminating,
        "tag": tag,
        "prompt": prompt,
    }


def validate_update(body: Any) -> dict:
    """``{"state": "completed"}`` (hang up) or ``{"state": "transferring", "transferTo":
    …}`` (docs/carrier.md, "Call control", change the call)."""
    state = body.get("state") if isinstance(body, dict) else None
    if state == "completed" and len(body) == 1:
        return body
    if state == "transferring":
        _object(body, TRANSFER_FIELDS)
        to = body.get("transferTo")
        if not isinstance(to, str) or not (E164.match(to) or SIP_URI.match(to)):
            raise invalid("transferTo", to or "", "must be an E.164 number or a SIP URI")
        if "whisperAudio" in body:
            _sound(_object(body["whisperAudio"], AUDIO_FIELDS, "whisperAudio."), "whisperAudio.")
        return body
    shown = body.get("state", "") if isinstance(body, dict) else ""
    raise invalid(
        "state", shown, 'only {"state": "completed"} or {"state": "transferring", …} is supported'
    )
