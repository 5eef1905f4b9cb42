"""A campaign's call script: the options, their checks, and the per-row check at import.

The facts it is checked against (docs/carrier.md, "Call control" and "BXML"): a sentence is
at most 1,000 characters; ``gender`` is male or female; ``locale`` and ``voice`` come from
the carrier's lists; keys are 0-9, * and #; a transfer goes to an E.164 number or a SIP URI.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from dialer.script.template import Template, TemplateError

MAX_SENTENCE = 1000  # characters the carrier speaks in one sentence
MAX_DURATION = 4 * 3600  # --max-duration's ceiling: four hours
KEYS = "0123456789*#"
LOCALES = ("en_US", "en_UK", "es", "es_MX", "fr", "fr_FR", "de", "de_DE", "it_IT")
VOICES = (
    "susan", "kate", "julie", "dave", "paul", "bridget", "esperanza", "violeta", "jorge",
    "jolie", "bernard", "katrin", "stefan", "paola", "luca",
)  # fmt: skip
GENDERS = ("female", "male")
OPT_OUT = "opt-out"
TRANSFER = "transfer"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_SIP = re.compile(r"^sips?:[^\s@:]+@[A-Za-z0-9.\-\[\]:]+$", re.IGNORECASE)

# The campaign columns that hold a script, in the order options are shown.
FIELDS = (
    "say", "play", "voice", "locale", "gender", "keys", "goodbye", "transfer_to",
    "max_duration",
)  # fmt: skip


class ScriptError(ValueError):
    """A script option that cannot be used; the message names the option."""


@dataclass(frozen=True)
class Script:
    say: str | None = None
    play: str | None = None
    voice: str | None = None
    locale: str | None = None
    gender: str | None = None
    keys: tuple[tuple[str, str], ...] = ()
    goodbye: str | None = None
    transfer_to: str | None = None
    max_duration: int | None = None

    @property
    def speaks(self) -> bool:
        """Whether an answered call hears something (its calls are driven with BXML)."""
        return self.say is not None or self.play is not None

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.keys)

    def message(self) -> Template | None:
        return Template.parse(self.say) if self.say is not None else None

    def farewell(self) -> Template | None:
        return Template.parse(self.goodbye, "--goodbye") if self.goodbye is not None else None

    def columns(self) -> tuple[str, ...]:
        """The context columns the texts name."""
        found: list[str] = []
        for template in (self.message(), self.farewell()):
            if template is not None:
                found.extend(template.columns)
        return tuple(dict.fromkeys(found))

    def as_row(self) -> dict[str, Any]:
        """The campaign columns (``keys`` as a JSON list of [key, label])."""
        row: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        row["keys"] = [list(pair) for pair in self.keys] or None
        return row

    def shown(self) -> dict[str, Any]:
        """What ``status`` shows: the options that are set, keys as "1=confirmed,…"."""
        shown = {k: v for k, v in self.as_row().items() if v is not None}
        if self.keys:
            shown["keys"] = ",".join(f"{k}={label}" for k, label in self.keys)
        return shown

    @classmethod
    def of(cls, campaign: Any) -> Script:
        """The script a campaign row (or any object with the columns) carries."""
        keys = getattr(campaign, "keys", None) or ()
        return cls(
            say=campaign.say,
            play=campaign.play,
            voice=campaign.voice,
            locale=campaign.locale,
            gender=campaign.gender,
            keys=tuple((str(k), str(label)) for k, label in keys),
            goodbye=campaign.goodbye,
            transfer_to=campaign.transfer_to,
            max_duration=campaign.max_duration,
        )


def parse_keys(raw: str | Mapping[str, str] | Iterable[Any] | None) -> tuple[tuple[str, str], ...]:
    """``"1=confirmed,2=cancelled,9=opt-out"`` (or a mapping, or pairs) as ordered pairs."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        pairs: list[tuple[str, str]] = []
        for item in raw.split(","):
            if not item.strip():
                continue
            key, sep, label = item.partition("=")
            if not sep:
                raise ScriptError(f"--keys: {item.strip()!r} is not KEY=LABEL, like 1=confirmed")
            pairs.append((key.strip(), label.strip()))
    elif isinstance(raw, Mapping):
        pairs = [(str(k), str(v)) for k, v in raw.items()]
    else:
        pairs = [(str(pair[0]), str(pair[1])) for pair in raw]
    seen: set[str] = set()
    for key, label in pairs:
        if len(key) != 1 or key not in KEYS:
            raise ScriptError(f"--keys: {key!r} is not one key (0-9, * or #)")
        if key in seen:
            raise ScriptError(f"--keys: key {key} is given twice")
        seen.add(key)
        if not _LABEL.match(label):
            raise ScriptError(
                f"--keys: label {label!r} for key {key} must be 1-64 letters, digits, "
                f"spaces, '_', '.' or '-', starting with a letter or digit"
            )
    if not pairs:
        raise ScriptError("--keys: give at least one KEY=LABEL")
    return tuple(pairs)


def build(
    *,
    say: str | None = None,
    play: str | None = None,
    voice: str | None = None,
    locale: str | None = None,
    gender: str | None = None,
    keys: Any = None,
    goodbye: str | None = None,
    transfer_to: str | None = None,
    max_duration: int | None = None,
    columns: Iterable[str] | None = None,
) -> Script:
    """A checked script from the options; ``columns`` (the file's context columns), when
    given, must hold every column the texts name. Raises ScriptError naming the option."""
    if say is not None and play is not None:
        raise ScriptError("give --say or --play, not both")
    script = Script(
        say=say,
        play=play,
        voice=voice.lower() if voice else None,
        locale=locale,
        gender=gender.lower() if gender else None,
        keys=parse_keys(keys),
        goodbye=goodbye,
        transfer_to=transfer_to,
        max_duration=max_duration,
    )
    check(script, columns)
    return script


def check(script: Script, columns: Iterable[str] | None = None) -> None:
    """Raise ScriptError naming the option, for a script that cannot be used."""
    try:
        message, farewell = script.message(), script.farewell()
    except TemplateError as exc:
        raise ScriptError(str(exc)) from None
    for option, template in (("--say", message), ("--goodbye", farewell)):
        if template is None:
            continue
        if not template.text.strip():
            raise ScriptError(f"{option} is empty")
        fixed = len(template.render({}))
        if fixed > MAX_SENTENCE:
            raise ScriptError(
                f"{option} is {fixed:,} characters; the carrier speaks at most {MAX_SENTENCE:,}"
            )
    if script.play is not None:
        parts = urlsplit(script.play)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ScriptError(f"--play must be an http(s) URL of a WAV or MP3, got {script.play!r}")
    if script.voice is not None and script.voice not in VOICES:
        raise ScriptError(f"--voice must be one of {', '.join(VOICES)}, got {script.voice!r}")
    if script.locale is not None and script.locale not in LOCALES:
        raise ScriptError(f"--locale must be one of {', '.join(LOCALES)}, got {script.locale!r}")
    if script.gender is not None and script.gender not in GENDERS:
        raise ScriptError(f"--gender must be female or male, got {script.gender!r}")
    if not script.speaks:
        for option, value in (
            ("--keys", script.keys), ("--goodbye", script.goodbye), ("--voice", script.voice),
            ("--locale", script.locale), ("--gender", script.gender),
        ):  # fmt: skip
            if value:
                raise ScriptError(f"{option} needs a message: give --say TEXT or --play URL")
    labels = [label for _, label in script.keys]
    if TRANSFER in labels and script.transfer_to is None:
        raise ScriptError("--keys has a 'transfer' key: give --transfer-to E164")
    if script.transfer_to is not None:
        if TRANSFER not in labels:
            raise ScriptError("--transfer-to needs a key labelled 'transfer' in --keys")
        if not (_E164.match(script.transfer_to) or _SIP.match(script.transfer_to)):
            raise ScriptError(
                f"--transfer-to must be an E.164 number like +19195551212 or a SIP URI, "
                f"got {script.transfer_to!r}"
            )
    if script.max_duration is not None and not 1 <= script.max_duration <= MAX_DURATION:
        raise ScriptError(
            f"--max-duration must be 1 to {MAX_DURATION} seconds, got {script.max_duration}"
        )
    if columns is not None:
        have = set(columns)
        missing = [c for c in script.columns() if c not in have]
        if missing:
            raise ScriptError(
                f"the message names columns the file does not have: {', '.join(missing)} "
                f"(columns: {', '.join(sorted(have)) or 'none'})"
            )


def row_check(script: Script) -> Callable[[dict[str, str]], str | None] | None:
    """For the import: why a row's message cannot be spoken (too long once its values are
    in), or None. None when no text names a column (then create has checked it)."""
    texts = [
        (option, t)
        for option, t in (("--say", script.message()), ("--goodbye", script.farewell()))
        if t is not None and t.columns
    ]
    if not texts:
        return None

    def check_row(context: dict[str, str]) -> str | None:
        for option, template in texts:
            size = len(template.render(context))
            if size > MAX_SENTENCE:
                return (
                    f"the {option} text for this row is {size:,} characters; "
                    f"the carrier speaks at most {MAX_SENTENCE:,}"
                )
        return None

    return check_row
