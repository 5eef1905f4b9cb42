"""The simulated people: who answers, and what they do when a gather asks for a key.

Each answered call gets one person, drawn from ``SimConfig.people`` by a generator
seeded with (seed, destination, n-th call to it), so a re-run meets the same people:

- ``press``: presses a key sequence drawn from ``SimConfig.keys``, ``press_delay``
  seconds into the gather (a key cuts the prompt short: barge-in is always on);
- ``wait``: presses nothing; the gather ends with ``inter-digit-timeout`` once the prompt
  has played and the gather's interDigitTimeout has passed;
- ``hangup``: hangs up halfway through the first sound of the gather's prompt (or
  ``press_delay`` into a gather with no prompt);
- ``stay``: waits a gather out like ``wait``, and when the script ends never hangs up
  (the dialer must, or the carrier does after ``stay_seconds``).

Outside gathers every person but ``stay`` hangs up ``talk_time`` after the call goes
quiet (answered with nothing playing, the script over, or transferred).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dialer.dev.simulator.config import SimConfig, key_weights, people_weights


def choose_person(rng: random.Random, config: SimConfig) -> str:
    mix = people_weights(config)
    names = [name for name, weight in mix.items() if weight > 0]
    return rng.choices(names, [mix[n] for n in names])[0]


@dataclass(frozen=True)
class GatherPlan:
    act: str  # "press", "wait" or "hangup"
    at: float  # seconds after the gather starts
    keys: str | None = None


def plan_gather(
    person: str,
    rng: random.Random,
    config: SimConfig,
    prompt_seconds: float,
    inter_digit_timeout: float,
) -> GatherPlan:
    """What ``person`` does at a gather whose prompt plays ``prompt_seconds`` and which
    waits ``inter_digit_timeout`` seconds (already scaled) for a key."""
    if person == "press":
        mix = key_weights(config)
        names = [name for name, weight in mix.items() if weight > 0]
        keys = rng.choices(names, [mix[n] for n in names])[0]
        return GatherPlan("press", config.press_delay, keys)
    if person == "hangup":
        # Halfway through the prompt's first sound.
        first = min(prompt_seconds, config.speech_seconds)
        return GatherPlan("hangup", first / 2 if first else config.press_delay)
    return GatherPlan("wait", prompt_seconds + inter_digit_timeout)


def press_result(
    keys: str, max_digits: int, terminating: str
) -> tuple[str, str | None, str | None]:
    """The digits a gather keeps from ``keys``, why it ends (None: it waits for more
    until interDigitTimeout), and the terminating digit that ended it, if one did.
    Terminating digits are not counted in the digits (docs/carrier.md, "Call control")."""
    digits = ""
    for key in keys:
        if key in terminating:
            return digits, "terminating-digit", key
        digits += key
        if len(digits) >= max_digits:
            return digits, "max-digits", None
    return digits, None, None
