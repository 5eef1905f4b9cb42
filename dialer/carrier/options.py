"""A campaign's create-call options (docs/interface.md, "Recording and carrier options"):
``--record``, ``--record-format``, ``--record-max``, ``--transcribe``, ``--sip-header``,
``--callback-timeout``, checked at create and update against the create-call page's rules
(``dialer.carrier.request``) with errors naming the option, and turned into the
``CallRequest`` fields every call of the campaign carries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dialer.carrier.request import CallRequest, InvalidCallRequest
from dialer.errors import ApiError

# Campaign column -> the option's name on the command line.
FIELDS = {
    "record": "--record",
    "record_format": "--record-format",
    "record_max": "--record-max",
    "transcribe": "--transcribe",
    "sip_headers": "--sip-header",
    "callback_timeout": "--callback-timeout",
}
# CallRequest field -> campaign column.
_REQUEST = {
    "recording_enabled": "record",
    "recording_file_format": "record_format",
    "recording_max_duration": "record_max",
    "transcription_enabled": "transcribe",
    "sip_headers": "sip_headers",
    "callback_timeout": "callback_timeout",
}


def parse_sip_headers(given: Mapping[str, str] | Iterable[str] | None) -> dict[str, str] | None:
    """``["X-NAME=VALUE", ...]`` (or a mapping) as a dict; None for none given."""
    if given is None:
        return None
    if isinstance(given, Mapping):
        return {str(k).strip(): str(v) for k, v in given.items()} or None
    out: dict[str, str] = {}
    for item in given:
        name, sep, value = str(item).partition("=")
        if not sep or not name.strip():
            raise ApiError(f"--sip-header must be X-NAME=VALUE, got {item!r}")
        name = name.strip()
        if name.lower() in (n.lower() for n in out):
            raise ApiError(f"--sip-header {name} is given twice")
        out[name] = value
    return out or None


def check(values: Mapping[str, Any]) -> dict[str, Any]:
    """The options as a campaign stores them (``record``, ``transcribe`` as booleans;
    ``record_format`` lower case), each checked; ApiError naming the option."""
    row = dict(values)
    for name in ("record", "transcribe"):
        if name in row and row[name] is not None and not isinstance(row[name], bool):
            raise ApiError(f"{FIELDS[name]} must be true or false, got {row[name]!r}")
    if isinstance(row.get("record_format"), str):
        row["record_format"] = row["record_format"].strip().lower()
    if "sip_headers" in row:
        row["sip_headers"] = parse_sip_headers(row["sip_headers"])
    for field, column in _REQUEST.items():
        if column not in row or row[column] is None:
            continue
        try:
            CallRequest(from_="+19195550000", to="+19195550001", **{field: row[column]}).validate()
        except InvalidCallRequest as exc:
            rule = str(exc).split(": ", 1)[-1]
            raise ApiError(f"{FIELDS[column]}: {rule}, got {row[column]!r}") from None
    return row


def request_fields(campaign: Any) -> dict[str, Any]:
    """The CallRequest fields a campaign's options set (none unset: no nulls sent)."""
    out: dict[str, Any] = {}
    for field, column in _REQUEST.items():
        value = getattr(campaign, column, None)
        if value is None or (column in ("record", "transcribe") and not value):
            continue
        out[field] = dict(value) if column == "sip_headers" else value
    return out


def shown(campaign: Any) -> dict[str, Any]:
    """The options that are set, for ``status`` (``rules``)."""
    return {
        c: getattr(campaign, c) for c in FIELDS if getattr(campaign, c, None) not in (None, False)
    }
