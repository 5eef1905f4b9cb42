"""The carrier's ``recording`` and ``transcription`` events, kept with the attempt.

docs/carrier.md, "Call control", "The events these produce": ``recording`` carries
``recordingId, recordingUri, state`` (``complete`` or ``error``), ``startTime, endTime``;
``transcription`` carries ``transcriptionId, recordingId, state`` (``completed`` or
``error``), ``text`` (the first 1,026 characters), ``textSize`` and ``textUrl``. Neither
carries the call's tag: they find their attempt by call id (before the call id is
recorded they wait as orphans, as any event does).

Applied like the others, idempotent and in any order, even after the attempt ended; they
never change how the call counts. The attempt keeps the recording's URL, the transcript's
text and, when the text was cut short, the URL of the whole.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from dialer.carrier.events import CallEvent

MAX_URL = 2000


def _url(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > MAX_URL or any(c.isspace() for c in value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    return value if parts.scheme in ("http", "https") and parts.netloc else None


def apply(attempt: Any, event: CallEvent) -> str:
    """``recording`` or ``transcription`` on ``attempt`` (an ORM row or a loaded Row):
    ``applied``, ``repeat`` (already kept) or ``ignored`` (an error state, nothing usable)."""
    payload = event.payload
    state = str(payload.get("state") or "").lower()
    if state == "error":
        return "ignored"
    if event.event_type == "recording":
        url = _url(payload.get("recordingUri")) or _url(payload.get("media"))
        if url is None:
            return "ignored"
        if attempt.recording_url is not None:
            return "repeat"  # one recording per call: the first kept
        attempt.recording_url = url
        return "applied"
    text = payload.get("text")
    if not isinstance(text, str):
        return "ignored"
    if attempt.transcript is not None:
        return "repeat"
    attempt.transcript = text
    size = payload.get("textSize")
    try:
        cut = size is not None and int(size) > len(text)
    except (TypeError, ValueError):
        cut = False
    if cut:
        attempt.transcript_url = _url(payload.get("textUrl"))
    return "applied"
