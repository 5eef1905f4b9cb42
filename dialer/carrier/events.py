"""Catapult callback events: validated and turned into the dialer's ``CallEvent``.

docs/carrier.md, "Callback events": ``eventType`` names the event; ``answer``, ``hangup``
and ``timeout`` carry ``callId`` and ``time``; ``hangup`` carries ``cause``; ``tag`` is
documented on ``answer`` only, so it is never relied on. Other event types are kept
and not failed on. Be liberal in what is accepted, strict in what is used.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Event types that move an attempt; the rest are stored only.
STATUS_EVENTS = frozenset({"answer", "hangup", "timeout"})

_EVENT_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}\Z")
_CALL_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,80}\Z")
_CAUSE = re.compile(r"^[A-Z0-9_]{1,64}\Z")


class BadEvent(ValueError):
    """A callback that is not a usable event; the message says why (for a 400)."""


@dataclass(frozen=True)
class CallEvent:
    event_type: str
    call_id: str | None
    time: datetime | None
    cause: str | None
    attempt_id: int | None  # from the tag, when the tag is one of ours
    payload: dict[str, Any]
    # The JSON text the payload was decoded from, when the caller kept it (the stream's
    # entry): stored as it is, instead of encoding the payload again.
    raw: str | None = field(default=None, compare=False, repr=False)


def parse(payload: Any, raw: str | None = None) -> CallEvent:
    """Validate a decoded callback body (decoded from ``raw``, if given); raise BadEvent
    naming what is wrong."""
    event_type, call_id, cause = check(payload)
    return CallEvent(
        event_type=event_type,
        call_id=call_id,
        time=parse_time(payload.get("time")),
        cause=cause,
        attempt_id=attempt_id_from_tag(payload.get("tag")),
        payload=payload,
        raw=raw,
    )


def check(payload: Any) -> tuple[str, str | None, str | None]:
    """What ``parse`` refuses, refused (BadEvent), without building the event: the
    receiver's test. (event type, call id, cause as stored)."""
    if not isinstance(payload, dict):
        raise BadEvent("body must be a JSON object")
    event_type = payload.get("eventType")
    if not isinstance(event_type, str) or not _EVENT_TYPE.match(event_type):
        raise BadEvent("eventType must be a short string")
    call_id = payload.get("callId")
    if call_id is not None and (not isinstance(call_id, str) or not _CALL_ID.match(call_id)):
        raise BadEvent("callId must be a call id string")
    if event_type in STATUS_EVENTS and call_id is None:
        raise BadEvent(f"{event_type} event without callId")
    cause = payload.get("cause")
    if cause is not None:
        if not isinstance(cause, str) or not _CAUSE.match(cause.strip().upper()):
            raise BadEvent("cause must be a hangup cause name")
        cause = cause.strip().upper()
    return event_type, call_id, cause


def parse_time(raw: Any) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        # A missing or odd time falls back to the time received; so does one past the
        # datetime range in UTC (year 9999 an hour west of it).
        return None


MAX_ID = 2**63 - 1


def attempt_id_from_tag(tag: Any) -> int | None:
    """The attempt id our tag carries (``{"attempt": 123, ...}``), or None."""
    if not isinstance(tag, str) or not tag.startswith("{"):
        return None
    try:
        decoded = json.loads(tag)
    except ValueError:
        return None
    value = decoded.get("attempt") if isinstance(decoded, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    # Attempt ids are BIGINT: one past its range is no attempt of ours, and would fail
    # the whole batch's lookup if it reached the query.
    return value if 0 < value <= MAX_ID else None


def from_call(call: dict[str, Any], log: list[dict[str, Any]]) -> list[CallEvent]:
    """A finished call's events as read back from the carrier, for callbacks that never
    arrived: the listed events (``{id, time, name, data}``), plus the ending its state
    implies when the list has no hangup (docs/carrier.md, "Read calls")."""
    call_id = call.get("id")
    found: list[CallEvent] = []
    for item in log:
        data = item.get("data")
        payload = dict(data) if isinstance(data, dict) else {}
        payload.setdefault("eventType", item.get("name"))
        payload.setdefault("callId", call_id)
        payload.setdefault("time", item.get("time"))
        try:
            found.append(parse(payload))
        except BadEvent:
            continue
    kinds = {e.event_type for e in found}
    state = call.get("state")
    if state in ("completed", "rejected") and "hangup" not in kinds:
        answered = bool(call.get("activeTime")) or "answer" in kinds
        if answered and "answer" not in kinds:
            found.append(
                parse({"eventType": "answer", "callId": call_id, "time": call.get("activeTime")})
            )
        cause = (
            "CALL_REJECTED"
            if state == "rejected"
            else ("NORMAL_CLEARING" if answered else "NO_ANSWER")
        )
        found.append(
            parse(
                {
                    "eventType": "hangup",
                    "callId": call_id,
                    "cause": cause,
                    "time": call.get("endTime"),
                }
            )
        )
    return found
