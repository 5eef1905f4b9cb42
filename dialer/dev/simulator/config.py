"""What the simulated carrier does, and the mixes its people are drawn from."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

OUTCOMES = ("answered", "busy", "no-answer", "rejected", "congestion", "unallocated", "silent")

# What a person who answers does with the call (the package docstring, "People").
PEOPLE = ("press", "wait", "hangup", "stay")

# The keys a phone has (docs/carrier.md, "Call control": gathers take DTMF keys).
DTMF = frozenset("0123456789*#")

# The hangup cause each unanswered outcome ends with (docs/carrier.md, "Callback events").
HANGUP_CAUSE = {
    "busy": "USER_BUSY",
    "rejected": "CALL_REJECTED",
    "congestion": "NORMAL_CIRCUIT_CONGESTION",
    "unallocated": "UNALLOCATED_NUMBER",
}

REFUSED_PREFIX = "+1555000"


@dataclass
class SimConfig:
    """How the simulated carrier behaves; change it at run time with Simulator.configure."""

    user_id: str = "u-sim"
    token: str = field(default="sim-token", repr=False)
    secret: str = field(default="sim-secret", repr=False)
    numbers: list[str] | None = None
    rate: float | None = None
    number_rate: float | None = None
    rate_window: float = 10.0
    # Requests per second per account on every endpoint but create-call, averaged over
    # 1 s (docs/carrier.md, "Default limits": the 429). None: no limit.
    request_rate: float | None = None
    outcomes: dict[str, float] = field(default_factory=lambda: {"answered": 1.0})
    outcome_by_number: dict[str, list[str]] = field(default_factory=dict)
    answer_delay: float = 0.05
    # How long a person stays on the line once nothing is playing and nothing is being
    # gathered (after the answer, a call script's end, a transfer) before hanging up.
    talk_time: float = 0.05
    no_answer_delay: float | None = None
    # What people do at a gather, as weights over PEOPLE ("press=0.7,wait=0.2", or a
    # dict), and which keys a pressing person presses, as weights over key strings.
    people: str | dict[str, float] = "press=0.7,wait=0.2,hangup=0.1"
    keys: str | dict[str, float] = "1=0.6,2=0.3,9=0.1"
    # Seconds from a gather's start to a pressing person's key (barge-in cuts the prompt).
    press_delay: float = 0.02
    # Seconds each SpeakSentence or PlayAudio (a call's audio, or a prompt) plays.
    speech_seconds: float = 0.05
    # Multiplies the seconds a script asks for (Pause, a gather's interDigitTimeout), so
    # tests can run real-looking scripts quickly.
    time_scale: float = 1.0
    # The most a "stay" person stays on a call nobody hangs up; then the carrier does.
    stay_seconds: float = 600.0
    fault_500: float = 0.0
    fault_503: float = 0.0
    fault_429: float = 0.0
    fault_rate_limit: float = 0.0
    fault_ambiguous: float = 0.0
    ambiguous_hold: float = 30.0
    duplicate_callbacks: float = 0.0
    reorder_callbacks: float = 0.0
    tag_on_all_events: bool = True
    callback_retries: int = 5
    credit: int | None = None
    location_style: str = "mixed"
    seed: int = 0
    # Destinations the carrier refuses (403 forbidden/invalid-call-to-number), as prefixes.
    refused_prefixes: tuple[str, ...] = (REFUSED_PREFIX,)
    # From numbers the account may not call from (403 number-access-denied): a caller id
    # the carrier took away, for the pools' tests (docs/carrier.md, "Errors").
    refused_numbers: tuple[str, ...] = ()
    # Seconds after an answered, recorded call's hangup that its recording event comes,
    # and after that the transcription event (recordingEnabled, transcriptionEnabled).
    recording_delay: float = 0.05
    transcription_delay: float = 0.05


def weights(raw: str | dict[str, float], what: str) -> dict[str, float]:
    """``"a=0.6,b=0.4"`` (or the same as a dict) as a dict; ValueError naming ``what``."""
    pairs: list[tuple[str, Any]] = []
    if isinstance(raw, dict):
        pairs = [(str(k), v) for k, v in raw.items()]
    elif isinstance(raw, str):
        for part in filter(None, (p.strip() for p in raw.split(","))):
            key, sep, text = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{what}: expected name=weight pairs, got {part!r}")
            pairs.append((key.strip(), text.strip()))
    else:
        raise ValueError(f"{what}: expected name=weight pairs or an object")
    out: dict[str, float] = {}
    for name, value in pairs:
        try:
            weight = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: the weight of {name!r} is not a number") from None
        if not weight >= 0:
            raise ValueError(f"{what}: the weight of {name!r} must be >= 0")
        out[name] = weight
    if not sum(out.values()) > 0:
        raise ValueError(f"{what}: weights must not all be 0")
    return out


@functools.lru_cache(maxsize=64)
def _parsed(raw: str, what: str) -> tuple[tuple[str, float], ...]:
    # Drawn from at every call and every gather: parse each spelling once.
    return tuple(weights(raw, what).items())


def _mix(raw: str | dict[str, float], what: str) -> dict[str, float]:
    return dict(_parsed(raw, what)) if isinstance(raw, str) else weights(raw, what)


def people_weights(config: SimConfig) -> dict[str, float]:
    mix = _mix(config.people, "people")
    unknown = set(mix) - set(PEOPLE)
    if unknown:
        raise ValueError(f"people: unknown {sorted(unknown)}; known: {', '.join(PEOPLE)}")
    return mix


def key_weights(config: SimConfig) -> dict[str, float]:
    mix = _mix(config.keys, "keys")
    for key in mix:
        if not key or set(key) - DTMF:
            raise ValueError(f"keys: {key!r} is not a sequence of 0-9, * and #")
    return mix


def check_config(config: SimConfig) -> None:
    for name in (
        "fault_500",
        "fault_503",
        "fault_429",
        "fault_rate_limit",
        "fault_ambiguous",
        "duplicate_callbacks",
        "reorder_callbacks",
    ):
        value = getattr(config, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a probability between 0 and 1, got {value!r}")
    for name in ("rate", "number_rate", "request_rate"):
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be greater than 0 (or None for no limit)")
    if not config.rate_window > 0:
        raise ValueError("rate_window must be greater than 0")
    for name in ("press_delay", "speech_seconds", "talk_time", "stay_seconds", "time_scale"):
        if not getattr(config, name) >= 0:
            raise ValueError(f"{name} must be >= 0")
    unknown = set(config.outcomes) - set(OUTCOMES)
    if unknown:
        raise ValueError(f"unknown outcomes {sorted(unknown)}; known: {', '.join(OUTCOMES)}")
    if any(w < 0 for w in config.outcomes.values()) or not sum(config.outcomes.values()) > 0:
        raise ValueError("outcome weights must be >= 0 and not all 0")
    for to, sequence in config.outcome_by_number.items():
        if not sequence or set(sequence) - set(OUTCOMES):
            raise ValueError(f"outcome_by_number[{to!r}] must be a non-empty list of outcomes")
    if config.location_style not in ("relative", "absolute", "mixed"):
        raise ValueError("location_style must be relative, absolute or mixed")
    if config.callback_retries < 0:
        raise ValueError("callback_retries must be >= 0")
    people_weights(config)
    key_weights(config)
