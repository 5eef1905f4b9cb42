"""BXML replies, read into verbs the simulator runs (docs/carrier.md, "BXML").

Only what the simulator executes is read closely: SpeakSentence, PlayAudio, Gather,
Hangup, Transfer, Pause and Redirect. Any other element becomes an ``Other`` verb, which
the call records and skips. A reply that is too big, not XML, has a DTD, is not rooted in
``<Response>`` or gives a verb a bad attribute is refused whole (``BxmlError``), so the
call runs none of it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urljoin

from dialer.dev.simulator.config import DTMF

# The largest BXML document the platform takes (docs/carrier.md, "BXML": 16 KB).
MAX_BYTES = 16 * 1024


class BxmlError(ValueError):
    """A reply the call cannot run."""


@dataclass(frozen=True)
class Sound:
    """Something the person hears: a SpeakSentence (``text``) or a PlayAudio (``url``)."""

    verb: str
    text: str | None = None
    url: str | None = None
    voice: str | None = None
    gender: str | None = None
    locale: str | None = None

    def record(self) -> dict:
        out: dict = {"verb": self.verb}
        if self.verb == "SpeakSentence":
            out["text"] = self.text
        else:
            out["url"] = self.url
        for name in ("voice", "gender", "locale"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True)
class Gather:
    request_url: str | None
    request_timeout_ms: int
    max_digits: int
    inter_digit_timeout: float
    terminating: str
    tag: str | None
    prompt: tuple[Sound, ...] = ()


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class Transfer:
    transfer_to: str | None
    whisper: tuple[Sound, ...] = ()


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Redirect:
    request_url: str
    request_timeout_ms: int


@dataclass(frozen=True)
class Other:
    """A verb the simulator does not run (Record, SendDtmf, anything unknown)."""

    name: str
    attrs: dict = field(default_factory=dict, hash=False, compare=False)


Verb = Sound | Gather | Hangup | Transfer | Pause | Redirect | Other


def parse(body: bytes, base_url: str) -> list[Verb]:
    """The verbs of a reply, in order. Relative URLs are taken against ``base_url``
    (the 2016 docs used them; the later docs say absolute)."""
    if len(body) > MAX_BYTES:
        raise BxmlError(f"the document is over {MAX_BYTES} bytes")
    if not body.strip():
        raise BxmlError("the reply is empty")
    # ElementTree never fetches external entities, but it does expand internal ones:
    # refusing any DTD keeps an entity bomb (and anything else a DTD can do) out.
    if b"<!doctype" in body.lower() or b"<!entity" in body.lower():
        raise BxmlError("a DTD is not allowed")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise BxmlError(f"not XML: {exc}") from None
    if root.tag != "Response":
        raise BxmlError(f"the root element is <{root.tag}>, not <Response>")
    return [_verb(element, base_url) for element in root]


def _text(element: ET.Element) -> str:
    return (element.text or "").strip()


def _number(element: ET.Element, name: str, default: float, low: float, high: float) -> float:
    raw = element.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BxmlError(f"<{element.tag} {name}={raw!r}>: not a number") from None
    if not low <= value <= high:
        raise BxmlError(f"<{element.tag} {name}={raw!r}>: must be {low:g}..{high:g}")
    return value


def _url(element: ET.Element, raw: str | None, base_url: str, name: str) -> str | None:
    if raw is None or not raw.strip():
        return None
    url = urljoin(base_url, raw.strip())
    if not url.startswith(("http://", "https://")):
        raise BxmlError(f"<{element.tag} {name}={raw!r}>: not an http(s) URL")
    return url


def _sound(element: ET.Element, base_url: str) -> Sound:
    if element.tag == "SpeakSentence":
        return Sound(
            "SpeakSentence",
            text=_text(element),
            voice=element.get("voice"),
            gender=element.get("gender"),
            locale=element.get("locale"),
        )
    url = _url(element, _text(element), base_url, "URL")
    if url is None:
        raise BxmlError("<PlayAudio> has no URL")
    return Sound("PlayAudio", url=url)


def _verb(element: ET.Element, base_url: str) -> Verb:
    tag = element.tag
    if tag in ("SpeakSentence", "PlayAudio"):
        return _sound(element, base_url)
    if tag == "Gather":
        terminating = element.get("terminatingDigits", "#")
        if set(terminating) - DTMF:
            raise BxmlError(f"<Gather terminatingDigits={terminating!r}>: not 0-9, * and #")
        prompt = tuple(
            _sound(child, base_url)
            for child in element
            if child.tag in ("SpeakSentence", "PlayAudio")
        )
        return Gather(
            request_url=_url(element, element.get("requestUrl"), base_url, "requestUrl"),
            request_timeout_ms=int(_number(element, "requestUrlTimeout", 30000, 1, 30000)),
            max_digits=int(_number(element, "maxDigits", 128, 1, 128)),
            inter_digit_timeout=_number(element, "interDigitTimeout", 5, 0.001, 30),
            terminating=terminating,
            tag=element.get("tag"),
            prompt=prompt,
        )
    if tag == "Hangup":
        return Hangup()
    if tag == "Transfer":
        to = element.get("transferTo")
        if not to:
            numbers = [_text(c) for c in element if c.tag == "PhoneNumber" and _text(c)]
            to = numbers[0] if numbers else None
        whisper = tuple(
            _sound(child, base_url)
            for child in element
            if child.tag in ("SpeakSentence", "PlayAudio")
        )
        return Transfer(transfer_to=to, whisper=whisper)
    if tag == "Pause":
        # `length` in the later docs, `duration` in the 2016 spec and the C# SDK.
        name = "length" if element.get("length") is not None else "duration"
        return Pause(seconds=_number(element, name, 1, 0, 3600))
    if tag == "Redirect":
        url = _url(element, element.get("requestUrl"), base_url, "requestUrl")
        if url is None:
            raise BxmlError("<Redirect> has no requestUrl")
        timeout = int(_number(element, "requestUrlTimeout", 30000, 1, 30000))
        return Redirect(request_url=url, request_timeout_ms=timeout)
    return Other(name=tag, attrs=dict(element.attrib))
