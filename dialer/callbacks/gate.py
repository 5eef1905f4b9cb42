"""The receiver's rules, whatever serves them: path, method, credentials, body bound,
event check, and the answer (dialer.callbacks.receiver has the two adapters that do the I/O).

It faces the internet. The carrier signs nothing (docs/carrier.md, "Callback events"),
so every request must carry ``DIALER_CALLBACK_SECRET``: as the password of Basic
credentials (the documented way: the dialer puts ``dialer:SECRET@`` into each call's
callbackUrl and the platform turns it into an ``Authorization`` header), or as a path
token ``/callbacks/catapult/t/SECRET`` for proxies that drop that header. Both are
compared in constant time.

Events come POSTed as JSON, or, for a scripted call (dialer.script), by GET with their
fields in the query string; the answer to a scripted call's ``answer`` and ``gather`` is
the script's next BXML document.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from dialer import clock, metrics, settings
from dialer.callbacks import jsonbody
from dialer.callbacks.eventstream import HandoverFailed
from dialer.carrier import events

log = logging.getLogger(__name__)

PATH = "/callbacks/catapult"
METRICS_PATH = "/metrics"
MAX_BODY = 64 * 1024  # the carrier's events are a few hundred bytes
MAX_TAG = 256  # characters: the dialer's tags are at most this (docs/interface.md, "The tag")


def callback_urls(s: settings.Settings) -> tuple[str, str]:
    """Each call's callbackUrl and fallbackUrl, with the secret as Basic credentials."""
    if not s.callback_url or not s.callback_secret:
        raise settings.SettingsError(
            "DIALER_CALLBACK_URL and DIALER_CALLBACK_SECRET are needed to build callback URLs"
        )
    parts = urlsplit(s.callback_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"dialer:{quote(s.callback_secret, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    path = parts.path.rstrip("/") + PATH
    callback = urlunsplit((parts.scheme, netloc, path, "", ""))
    return callback, callback + "/fallback"


@dataclass(frozen=True)
class Answer:
    status: str  # the status line, "200 OK"
    body: dict[str, str]
    # Why a callback was refused, or "accepted": counted (dialer.metrics). None: not an
    # answer on a callback path (health, metrics, elsewhere), not counted.
    reason: str | None
    headers: tuple[tuple[str, str], ...] = ()
    # A body other than ``body`` as JSON: a scripted call's BXML document.
    content: bytes | None = None
    content_type: str = "application/json"

    @property
    def code(self) -> int:
        return int(self.status[:3])

    @cached_property
    def data(self) -> bytes:
        return self.content if self.content is not None else json.dumps(self.body).encode()

    @cached_property
    def wsgi_headers(self) -> list[tuple[str, str]]:
        return [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(self.data))),
            *self.headers,
        ]

    @cached_property
    def asgi_headers(self) -> list[tuple[bytes, bytes]]:
        return [(k.lower().encode(), v.encode("latin-1")) for k, v in self.wsgi_headers]

    @cached_property
    def asgi_headers_closing(self) -> list[tuple[bytes, bytes]]:
        """Answered before the request's body was read: the connection is closed after
        it, rather than reading on (and throwing away) what a client still sends."""
        return [*self.asgi_headers, (b"connection", b"close")]


_CREDENTIALS_REQUIRED = (("WWW-Authenticate", 'Basic realm="dialer"'),)
_METRICS_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="dialer-metrics"'),)

HEALTHY = Answer("200 OK", {"status": "ok"}, None)
ELSEWHERE = Answer("404 Not Found", {"error": "no such path"}, None)
NO_SUCH_PATH = Answer("404 Not Found", {"error": "no such path"}, "no-such-path")
NOT_POSTED = Answer(
    "405 Method Not Allowed",
    {"error": "callbacks are POST (or GET, for scripted calls)"},
    "method",
    (("Allow", "GET, POST"),),
)
NO_QUERY = Answer("400 Bad Request", {"error": "no event in the query string"}, "empty")
NO_SCRIPT = Answer(
    "503 Service Unavailable",
    {"error": "cannot read the call's script right now"},
    "script-unavailable",
    (("Retry-After", "1"),),
)
NO_CREDENTIALS = Answer(
    "401 Unauthorized", {"error": "credentials required"}, "no-credentials", _CREDENTIALS_REQUIRED
)
MALFORMED_CREDENTIALS = Answer(
    "401 Unauthorized",
    {"error": "malformed Basic credentials"},
    "malformed-credentials",
    _CREDENTIALS_REQUIRED,
)
WRONG_CREDENTIALS = Answer("403 Forbidden", {"error": "wrong credentials"}, "wrong-credentials")
TOO_LARGE = Answer("413 Content Too Large", {"error": f"body over {MAX_BODY} bytes"}, "too-large")
BAD_LENGTH = Answer("400 Bad Request", {"error": "bad Content-Length"}, "bad-length")
# The client left (or was cut off) before its body was whole: no one reads the answer.
INCOMPLETE = Answer(
    "400 Bad Request", {"error": "the body did not arrive whole"}, "incomplete-body"
)
EMPTY = Answer("400 Bad Request", {"error": "empty body"}, "empty")
NOT_JSON = Answer("400 Bad Request", {"error": "body is not valid JSON"}, "not-json")
UNSTORABLE = Answer(
    "400 Bad Request",
    {"error": "text with a NUL character or a lone UTF-16 surrogate cannot be stored"},
    "unstorable-text",
)
BAD_QUERY = Answer(
    "400 Bad Request", {"error": "query string is not valid UTF-8 form data"}, "bad-query"
)
MAX_QUERY_FIELDS = 40  # an event has a dozen fields
TOO_MANY_FIELDS = Answer(
    "400 Bad Request", {"error": f"query string has over {MAX_QUERY_FIELDS} fields"}, "bad-query"
)
_ID = re.compile(r"[0-9]{1,18}")  # a row id, as a query string carries it
BAD_IDENTITY = Answer(
    "400 Bad Request", {"error": "attempt and campaign must be row ids"}, "malformed-event"
)
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def _unstorable(value: Any) -> bool:
    """Whether any key or string holds what jsonb cannot: NUL, or a lone surrogate (only
    a \\u escape can put either in UTF-8 JSON, so only such bodies are walked)."""
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is not None
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(v) for v in value)
    return False


MAX_TIME = 64  # characters: an ISO 8601 timestamp is about 30


def _check_fields(payload: dict[str, Any]) -> None:
    """The fields the dialer reads that events.check leaves alone, refused (BadEvent)
    when they are of a kind the carrier never sends (docs/carrier.md, "Callback events":
    a ``time`` string, the ``tag`` the dialer set, a short string). The workers would fall
    back past them (the time received, the call id), so an accepted one is harmless to
    them; refused here, a broken or forged sender is told at once."""
    raw_time = payload.get("time")
    if raw_time is not None and (not isinstance(raw_time, str) or len(raw_time) > MAX_TIME):
        # A string the workers cannot read as ISO 8601 (or one past the datetime range)
        # is kept: they fall back to the time received (events.parse_time), and a
        # carrier that changed its format must not have every callback refused.
        raise events.BadEvent(f"time must be a string of at most {MAX_TIME} characters")
    tag = payload.get("tag")
    if tag is not None and (not isinstance(tag, str) or len(tag) > MAX_TAG):
        # Longer, it is not the dialer's; and the workers decode a tag that looks like
        # JSON, without a bound on its depth (a RecursionError there would hold a
        # batch of events pending for ever).
        raise events.BadEvent(f"tag must be a string of at most {MAX_TAG} characters")


UNAVAILABLE = Answer(
    "503 Service Unavailable",
    {"error": "cannot accept events right now"},
    "stream-unavailable",
    (("Retry-After", "1"),),
)
ACCEPTED = Answer("200 OK", {"status": "accepted"}, "accepted")
METRICS_NOT_GET = Answer(
    "405 Method Not Allowed",
    {"error": "metrics are read with GET"},
    None,
    (("Allow", "GET, HEAD"),),
)
# 401 for missing and wrong alike: a scraper told to authenticate retries with
# credentials, and nothing tells a prober which it got wrong.
METRICS_REFUSED = Answer(
    "401 Unauthorized", {"error": "metrics credentials required"}, None, _METRICS_CHALLENGE
)


class Step:
    """What :meth:`Gate.route` asks the adapter to do next, when it is not an answer."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


READ_BODY = Step("read the body")  # an authenticated callback: read, check, hand over
# An authenticated callback by GET: a scripted call's event in the query string
# (dialer.script): check, hand over, answer with the script's next document.
READ_QUERY = Step("read the query")
SCRAPE = Step("scrape")  # an authorized /metrics request


class Gate:
    """The receiver's rules, whatever serves it: each request's answer from its method,
    path, ``Authorization`` header, ``Content-Length`` and body, in that order.

    ``/metrics`` serves the fleet's Prometheus metrics (dialer.metrics) to whoever holds
    ``metrics_token`` (Bearer, or the password of Basic credentials), a credential of
    its own: the callback secret does not open it, and without a token configured the
    path does not exist (404), so nothing about the fleet is exposed by default.
    """

    def __init__(self, secret: str, metrics_token: str | None = None) -> None:
        if not secret:
            raise settings.SettingsError("DIALER_CALLBACK_SECRET is required by the receiver")
        if metrics_token is not None and metrics_token == secret:
            raise settings.SettingsError(
                "DIALER_METRICS_TOKEN must differ from DIALER_CALLBACK_SECRET"
            )
        self._secret = secret.encode()
        self._metrics_token = metrics_token.encode() if metrics_token else None
        self._scripts: Any = None  # dialer.script.source.ScriptSource, made on first use
        self._callback_url: str | None = None

    def route(self, method: str, path: str, authorization: str) -> Answer | Step:
        """The answer, or the next step: READ_BODY (then :meth:`length`, :meth:`event`,
        the hand-over, :meth:`handed`) or SCRAPE."""
        if path == "/healthz":
            return HEALTHY
        if path == METRICS_PATH and self._metrics_token is not None:
            if method not in ("GET", "HEAD"):
                return METRICS_NOT_GET
            if not _bearer_or_basic_matches(authorization, self._metrics_token):
                return METRICS_REFUSED
            return SCRAPE
        if not path.startswith(PATH):
            return ELSEWHERE
        token: str | None = None
        if path.startswith(PATH + "/t/"):
            token = path[len(PATH) + 3 :]
        elif path != PATH and path != PATH + "/fallback":
            return NO_SUCH_PATH
        if method == "GET":
            return self._authenticate(authorization, token) or READ_QUERY
        if method != "POST":
            return NOT_POSTED
        return self._authenticate(authorization, token) or READ_BODY

    def _authenticate(self, header: str, token: str | None) -> Answer | None:
        if token is not None:
            given = token.encode()
        else:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic" or not value:
                return NO_CREDENTIALS
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8
                return MALFORMED_CREDENTIALS
            given = decoded.partition(":")[2].encode()
        if not hmac.compare_digest(given, self._secret):
            return WRONG_CREDENTIALS
        return None

    @staticmethod
    def length(raw: str | None) -> int | None | Answer:
        """The declared body length (None: not declared, chunked), or the refusal; read
        at most this many bytes, or ``MAX_BODY + 1`` when it is None."""
        if not raw:
            return None
        try:
            length = int(raw)
        except ValueError:
            return BAD_LENGTH
        if length < 0:
            return BAD_LENGTH
        if length > MAX_BODY:
            return TOO_LARGE
        return length

    @staticmethod
    def event(body: bytes) -> tuple[str, str] | Answer:
        """(event type, the JSON text to store) for a valid event; else the refusal.

        The text stored is the body as it came, when it is UTF-8 (as JSON on the wire
        is): the workers decode it again (dialer.worker.applier), so encoding it anew here
        would only cost time. Any other encoding json accepts is stored re-encoded.
        """
        if len(body) > MAX_BODY:
            return TOO_LARGE
        if not body:
            return EMPTY
        text: str | None
        try:
            text = body.decode()
        except UnicodeDecodeError:
            text = None
        if text is not None and text.startswith("\ufeff"):
            text = None  # a BOM: json takes it from bytes, not from text
        try:
            payload = jsonbody.loads(body, text)
            # Only what would refuse it: the workers parse it whole (dialer.worker.applier).
            event_type = events.check(payload)[0]
            _check_fields(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            if isinstance(exc, events.BadEvent):
                return Answer("400 Bad Request", {"error": str(exc)}, "malformed-event")
            if isinstance(exc, jsonbody.BadJson):
                return Answer("400 Bad Request", {"error": str(exc)}, "bad-json")
            return NOT_JSON
        if (text is None or "\\u" in text) and _unstorable(payload):
            # Valid JSON that PostgreSQL's jsonb refuses: accepted, it would fail in the
            # worker and be dropped there, so it is refused here instead.
            return UNSTORABLE
        if text is None:
            text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        return event_type, text

    @staticmethod
    def query_event(raw_query: str) -> tuple[str, dict[str, str], str] | Answer:
        """(event type, the event's fields, the JSON text to store) of a GET callback:
        a scripted call's event, its fields in the query string; else the refusal."""
        if not raw_query:
            return NO_QUERY
        try:
            pairs = parse_qsl(
                raw_query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS, errors="strict"
            )
        except UnicodeDecodeError:
            return BAD_QUERY
        except ValueError:  # parse_qsl's only other refusal: past max_num_fields
            return TOO_MANY_FIELDS
        payload: dict[str, str] = {}
        for name, value in pairs:
            payload.setdefault(name, value)
        attempt, campaign = payload.get("attempt"), payload.get("campaign")
        if (attempt is not None and not _ID.fullmatch(attempt)) or (
            campaign is not None and not _ID.fullmatch(campaign)
        ):
            # The dialer writes them (dialer.script): ASCII digits, a row id. isdigit()
            # alone took "፩", which int() refuses (a 500 here, a 503 from the script).
            return BAD_IDENTITY
        if "tag" not in payload and attempt and campaign:
            # A gather's result carries its identity on the requestUrl (dialer.script).
            payload["tag"] = f'{{"attempt":{int(attempt)},"campaign":{int(campaign)}}}'
        try:
            event_type = events.check(payload)[0]
            _check_fields(payload)
        except events.BadEvent as exc:
            return Answer("400 Bad Request", {"error": str(exc)}, "malformed-event")
        if _unstorable(payload):
            return UNSTORABLE
        return event_type, payload, json.dumps(payload, separators=(",", ":"), ensure_ascii=False)

    def warm(self) -> None:
        """What a scripted call's answer needs, made before the first one arrives: the
        script module (SQLAlchemy, the models), the database pool with one connection
        open, the gather URL. Without it a process's first answers waited ~2 s for
        imports and a connection (benchmarks/call_script.py's p99). A database out of
        reach now is only logged: answers then wait for it, or get a 503."""
        try:
            self._script_source().warm()
            s = settings.get()
            if s.callback_url and s.callback_secret:
                self._callback_url = callback_urls(s)[0]
        except Exception as exc:
            log.warning("could not prepare for call scripts yet: %s", type(exc).__name__)

    def _script_source(self) -> Any:
        """The process's dialer.script.source.ScriptSource, made on first use."""
        if self._scripts is None:
            from dialer.script.source import ScriptSource

            self._scripts = ScriptSource()
        return self._scripts

    def scripted(self, payload: dict[str, str]) -> Answer:
        """The answer to a GET callback already in the stream: for ``answer`` and
        ``gather``, the call script's next BXML document (dialer.script); blocking (it
        may read the database)."""
        event_type = payload.get("eventType", "")
        if event_type not in ("answer", "gather"):
            return ACCEPTED
        try:
            if self._callback_url is None:
                self._callback_url = callback_urls(settings.get())[0]
            document = self._script_source().document(payload, self._callback_url)
        except Exception as exc:  # the database, or the settings: the carrier asks again
            log.error("could not build the script for a %s callback: %s", event_type, exc)
            metrics.control_request(f"bxml-{event_type}", "error")
            return NO_SCRIPT
        if document is None:
            return ACCEPTED
        metrics.control_request(f"bxml-{event_type}", "ok")
        if event_type == "answer":
            answered = events.parse_time(payload.get("time"))
            if answered is not None:
                metrics.answer_to_script((clock.now() - answered).total_seconds())
        return Answer(
            "200 OK",
            {},
            "accepted",
            content=document,
            content_type="application/xml; charset=utf-8",
        )

    @staticmethod
    def handed(event_type: str, failure: HandoverFailed | None) -> Answer:
        if failure is None:
            return ACCEPTED
        log.error("could not hand over a %s event (%s): answering 503", event_type, failure)
        return UNAVAILABLE

    @staticmethod
    def count(answer: Answer, event_type: str | None) -> None:
        """The metrics hook, for every answer on a callback path."""
        if answer.reason is not None:
            metrics.callback(answer.code, answer.reason, event_type)


def _bearer_or_basic_matches(header: str, token: bytes | None) -> bool:
    """Bearer TOKEN, or Basic with TOKEN as the password (any user), in constant time."""
    if token is None:
        return False
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        given = value.encode()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value, validate=True).partition(b":")[2]
        except ValueError:  # not base64 (binascii.Error), or not ASCII
            return False
    else:
        return False
    return hmac.compare_digest(given, token)
