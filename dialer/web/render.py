"""How the console's pages are rendered: the template environment (autoescape on), its
filters (times in UTC, numbers, rates) and the texts an action's result shows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

LIVE_MS = 1000  # how often a page's live part is fetched again
# What an action did, said by the page it leads to (a fixed text, never one from the URL).
DONE = {
    "start": "Started: the first calls go out within a second.",
    "pause": "Paused: no new call is created; calls in progress end normally.",
    "resume": "Resumed.",
    "cancel": "Cancelled: contacts not yet dialed are cancelled.",
    "update": "Rules updated; they apply to work not yet sent.",
    "nothing": "Nothing changed: the rules given were the ones in force.",
}


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("dialer.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["num"] = num
    env.filters["pct"] = pct
    env.filters["rate"] = rate_text
    env.globals["DONE"] = DONE
    env.globals["LIVE_MS"] = LIVE_MS
    return env


def when(value: Any) -> str:
    """A time as UTC, to the second; ISO strings (the status) and datetimes alike."""
    if value in (None, ""):
        return ""
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return str(value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))


def num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def rate_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}/s"


class Summary(dict[str, Any]):
    """A campaign's status with what the pages add, readable as attributes: the
    templates' ``r.final`` finds it at once (a plain dict's key is found by Jinja only
    after the attribute lookup fails, which costs most of a long table's rendering)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None
