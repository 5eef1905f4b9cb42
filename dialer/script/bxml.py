"""The BXML documents that drive a scripted call (docs/carrier.md, "BXML").

The carrier fetches the first with a GET of the call's callbackUrl when the person
answers, and runs its verbs; a ``Gather`` sends the key pressed to its ``requestUrl`` (the
receiver again) and runs the document that reply carries. So a script costs no request
on the account's budget and no worker on its path:

- answer, no keys:   SpeakSentence|PlayAudio, [goodbye], Hangup
- answer, keys:      Gather(maxDigits=1, the message as its prompt)
- after the gather:  Transfer (the key labelled ``transfer``), else [goodbye], Hangup;
                     nothing after ``hung-up``.

Documents are built with ElementTree, so every text and attribute is escaped; they stay
far under the carrier's 16 KB (two sentences of at most 1,000 characters).
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.etree import ElementTree as ET

from dialer.script.spec import TRANSFER, Script

CONTENT_TYPE = "application/xml; charset=utf-8"
MAX_DOCUMENT = 16 * 1024  # bytes the carrier reads
INTER_DIGIT_TIMEOUT = 5  # seconds to wait for the key (the carrier's default)
DEFAULT_VOICE = "susan"  # the carrier's default voice; BXML requires one


def _speech(parent: ET.Element, script: Script, text: str) -> None:
    el = ET.SubElement(
        parent,
        "SpeakSentence",
        voice=script.voice or DEFAULT_VOICE,
        locale=script.locale or "en_US",
        gender=script.gender or "female",
    )
    el.text = text


def _message(parent: ET.Element, script: Script, context: Mapping[str, str]) -> None:
    if script.play is not None:
        ET.SubElement(parent, "PlayAudio").text = script.play
        return
    message = script.message()
    assert message is not None
    _speech(parent, script, message.render(context))


def _ending(root: ET.Element, script: Script, context: Mapping[str, str]) -> None:
    farewell = script.farewell()
    if farewell is not None:
        _speech(root, script, farewell.render(context))
    ET.SubElement(root, "Hangup")


def terminating_digit(script: Script) -> str:
    """A key that ends the gather without being one of the script's keys, where one is
    free: with one key to press, a listed ``#`` must arrive as a digit."""
    listed = {k for k, _ in script.keys}
    return next((d for d in "#*" if d not in listed), "#")


def answer(script: Script, context: Mapping[str, str], request_url: str, tag: str) -> bytes:
    """The document for the ``answer`` callback; ``request_url`` receives the gather."""
    root = ET.Element("Response")
    if script.keys:
        attributes = {
            "requestUrl": request_url,
            "maxDigits": "1",
            "interDigitTimeout": str(INTER_DIGIT_TIMEOUT),
            "terminatingDigits": terminating_digit(script),
            "tag": tag,
        }
        gather = ET.SubElement(root, "Gather", attributes)
        _message(gather, script, context)
    else:
        _message(root, script, context)
        _ending(root, script, context)
    return _document(root)


def pressed(script: Script, digits: str | None, terminating: str | None) -> str:
    """The key the person pressed, from a gather's ``digits`` (and ``terminatingDigit``,
    when the one key pressed was the terminating digit and it is a listed key)."""
    if digits:
        return digits
    if terminating and terminating in script.labels:
        return terminating
    return ""


def after_gather(script: Script, key: str, reason: str | None, context: Mapping[str, str]) -> bytes:
    """The document for the gather's result: transfer, or goodbye and hang up."""
    root = ET.Element("Response")
    if reason == "hung-up":
        return _document(root)
    label = script.labels.get(key)
    if label == TRANSFER and script.transfer_to is not None:
        ET.SubElement(root, "Transfer", transferTo=script.transfer_to)
    else:
        _ending(root, script, context)
    return _document(root)


def hang_up() -> bytes:
    """A call the dialer cannot script (its attempt or campaign is gone): end it."""
    root = ET.Element("Response")
    ET.SubElement(root, "Hangup")
    return _document(root)


def _document(root: ET.Element) -> bytes:
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    if len(body) > MAX_DOCUMENT:  # cannot happen within the checked limits
        raise ValueError(f"BXML document of {len(body)} bytes exceeds {MAX_DOCUMENT}")
    return body
