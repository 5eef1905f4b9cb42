"""Log lines: plain text or one JSON object per line (``DIALER_LOG_FORMAT``), carrying
the campaign, contact and attempt they are about, and never a secret.

- **Ids.** A log call may pass ``extra={"campaign": …, "contact": …, "attempt": …}``;
  the tasks also bind the ids they work on (``bound``/``bind``, a context variable, so
  every line logged while a dial or an event is handled carries them, the carrier
  client's included). An explicit ``extra`` wins over the bound ids.
- **JSON.** ``time`` (UTC, ISO 8601, ms), ``level``, ``logger``, ``message``, the ids
  where known, scalar extras (the carrier client's ``method``, ``path``, ``status``,
  ``ms``), ``exc`` for a traceback.
- **Secrets.** Every formatter this module makes removes the carrier token and secret,
  the callback secret and the metrics token (as they are, percent-encoded, and inside
  the Basic credentials that carry them), and any ``user:password@`` in a URL. The code
  already keeps them out of messages; this is the backstop for a line that slips.

Installed by the CLI (``configure``), the Celery worker and beat (``install`` on the
loggers Celery sets up, see dialer.worker.app) and the receiver's uvicorn processes
(``uvicorn_log_config``).
"""

from __future__ import annotations

import base64
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote

from dialer import settings

IDS = ("campaign", "contact", "attempt")
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"

_ids: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "dialer_log_ids", default=None
)


@contextmanager
def bound(**ids: Any) -> Iterator[None]:
    """Lines logged inside the block (in this thread) carry these ids."""
    token = _ids.set({**(_ids.get() or {}), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _ids.reset(token)


def bind(**ids: Any) -> None:
    """Add ids learnt inside a ``bound`` block (it restores what was there before)."""
    _ids.set({**(_ids.get() or {}), **{k: v for k, v in ids.items() if v is not None}})


def current_ids() -> dict[str, Any]:
    return dict(_ids.get() or {})


# ------------------------------------------------------------------------ redaction

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"']*@")
# Credentials as an HTTP header carries them, whoever's they are.
# (A run of lowercase letters is a word, as in "basic credentials", not a credential.)
_AUTH_VALUE = re.compile(
    r"(?i:\b(basic|bearer))(\s+)(?=[A-Za-z0-9+/=._~-]*[A-Z0-9+/=._~-])[A-Za-z0-9+/=._~-]{6,}"
)


class Redactor:
    """Removes known secret values, in the spellings they travel in, from text."""

    def __init__(self, secrets: Iterable[str | None], users: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for s in {s for s in secrets if s}:
            forms |= {s, quote(s, safe=""), quote(s)}
            # Basic credentials carrying it without the word Basic before them: the
            # callback URL's user is "dialer", the carrier's is the API token.
            for user in ("dialer", "", *users):
                forms.add(base64.b64encode(f"{user}:{s}".encode()).decode())
        # Longest first, so a secret that contains another is removed whole.
        self._forms = sorted((f for f in forms if f), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        if "@" in text:
            text = _URL_USERINFO.sub(r"\1***@", text)
        return _AUTH_VALUE.sub(rf"\1\2{REDACTED}", text)


def redactor(s: settings.Settings | None = None) -> Redactor:
    s = s or settings.get()
    return Redactor(
        [s.catapult_api_token, s.catapult_api_secret, s.callback_secret, s.metrics_token],
        users=[u for u in (s.catapult_api_token,) if u],
    )


# ----------------------------------------------------------------------- formatters

# Attributes every LogRecord has: not extras.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's message again, with terminal colours
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        r = self._redact
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": r(_message(record)),
        }
        ids = _ids.get() or {}
        for name in IDS:
            value = record.__dict__.get(name, ids.get(name))
            if value is not None:
                out[name] = value if isinstance(value, int) else r(str(value))
        for name, value in record.__dict__.items():
            if name in _STANDARD or name in out or name.startswith("_"):
                continue
            if isinstance(value, bool | int | float) or value is None:
                out[name] = value
            elif isinstance(value, str):
                out[name] = r(value)
        if record.exc_info:
            out["exc"] = r(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exc"] = r(record.exc_text)
        if record.stack_info:
            out["stack"] = r(self.formatStack(record.stack_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string must not lose the line
        return f"{record.msg!r} {record.args!r}"


class RedactingFormatter(logging.Formatter):
    """Any formatter's text, with the secrets taken out."""

    def __init__(self, inner: logging.Formatter | None, redact: Redactor) -> None:
        super().__init__()
        self._inner = inner or logging.Formatter(TEXT_FORMAT)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(self._inner.format(record))


def formatter(fmt: str | None = None, inner: logging.Formatter | None = None) -> logging.Formatter:
    """The formatter for ``fmt`` (text|json; default: the setting), redacting."""
    s = settings.get()
    fmt = fmt or s.log_format
    redact = redactor(s)
    if isinstance(inner, JsonFormatter | RedactingFormatter):
        inner = getattr(inner, "_inner", None)
    if fmt == "json":
        return JsonFormatter(redact)
    return RedactingFormatter(inner, redact)


def install(logger: logging.Logger, fmt: str | None = None) -> None:
    """Give every handler of ``logger`` the dialer's formatter (keeping a text
    formatter's own layout, only redacted)."""
    for handler in logger.handlers:
        handler.setFormatter(formatter(fmt, handler.formatter))


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when it writes, as logging's last resort
    does: a handler bound to the stream of its day writes into a closed file once that
    stream is swapped out and closed (a test's captured output, an embedding program's
    redirect)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def configure(fmt: str | None = None, level: int = logging.WARNING) -> None:
    """The root logger writes to stderr in the configured format (the CLI's setup)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_dialer", False)]:
        root.removeHandler(handler)
    handler = _Stderr()
    handler._dialer = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level)


def uvicorn_log_config(level: int = logging.WARNING) -> dict[str, Any]:
    """``logging.config.dictConfig`` for ``dialer receiver``: uvicorn applies it in its
    supervisor and in each server process it starts (they are spawned, not forked, so
    nothing configured before carries over). One stderr handler on the root logger with
    the dialer's formatter (``DIALER_LOG_FORMAT``, secrets redacted), at ``level``;
    uvicorn's own lines (``uvicorn.error``: processes started, stopped, died) at INFO,
    through the same handler; no access log."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"dialer": {"()": "dialer.logs.formatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "dialer",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": logging.getLevelName(level)},
        "loggers": {
            "uvicorn": {"handlers": [], "level": "INFO", "propagate": True},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
