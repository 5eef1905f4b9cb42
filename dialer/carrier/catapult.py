"""The Catapult v1 Voice API client: the only code that speaks the carrier's HTTP.

Everything the carrier calls a "call" and every camelCase field stays in this module; the
rest of the dialer talks about attempts and reads an :class:`Action` off a
:class:`CarrierError` to decide what to do next. The facts this module matches are in
``docs/catapult-v1.md`` (sections "Create a call", "Errors", "Read calls").

Secrets: the API secret travels in the Basic ``Authorization`` header and the callback URL
carries the receiver's credentials (``https://user:pass@host/...``). Neither may reach a
log line or an exception message, so errors are built from parsed fields with our own
wording, scrubbed of every known secret, and transport exceptions are not chained.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from dialer import clock

if TYPE_CHECKING:
    from dialer.settings import Settings

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------------------

# fullmatch, ASCII digits only: "\d" would accept other scripts' digits and "$" a
# trailing newline.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# "sip:user@host" with optional port and URI parameters; the carrier's page gives only
# the example sip:someone@somewhere.com, so this checks the shape, not the grammar.
_SIP_URI = re.compile(r"sip:[^\s@]+@[^\s@]+", re.IGNORECASE)
# RFC 9110 token characters, so a header name cannot smuggle a separator or a newline.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_CALL_TIMEOUT = 300  # seconds (create-call page: "Maximum Time: 300")
MAX_CALLBACK_TIMEOUT = 10_000  # milliseconds (create-call page: "Maximum Time: 10000")
MAX_TAG = 256  # v1 is silent; the newer API documents 256 (catapult-v1.md)
MAX_SIP_HEADERS = 5
MAX_SIP_HEADER_PART = 256

# Python field -> the carrier's JSON name, in the order of the create-call page.
_JSON_NAMES = {
    "from_": "from",
    "to": "to",
    "call_timeout": "callTimeout",
    "callback_url": "callbackUrl",
    "callback_timeout": "callbackTimeout",
    "callback_http_method": "callbackHttpMethod",
    "fallback_url": "fallbackUrl",
    "bridge_id": "bridgeId",
    "conference_id": "conferenceId",
    "recording_enabled": "recordingEnabled",
    "recording_max_duration": "recordingMaxDuration",
    "recording_file_format": "recordingFileFormat",
    "transcription_enabled": "transcriptionEnabled",
    "tag": "tag",
    "sip_headers": "sipHeaders",
}


class InvalidCallRequest(ValueError):
    """A call request breaks one of the create-call page's rules.

    ``field`` is the :class:`CallRequest` attribute name (``from_``, ``call_timeout``, ...).
    The message names the field and the rule, never the value: values hold phone numbers
    and, for the callback URLs, credentials.
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_http_url(field: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidCallRequest(field, "must be an http(s) URL")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise InvalidCallRequest(field, "must be an http(s) URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidCallRequest(field, "must be an http(s) URL with a host")
    if _CONTROL.search(value) or " " in value:
        raise InvalidCallRequest(field, "must not contain spaces or control characters")


@dataclass(frozen=True)
class CallRequest:
    """One create-call request, in Python names; :meth:`to_json` gives the carrier's."""

    from_: str
    to: str
    call_timeout: int | None = None
    callback_url: str | None = None
    callback_timeout: int | None = None
    callback_http_method: str | None = None
    fallback_url: str | None = None
    bridge_id: str | None = None
    conference_id: str | None = None
    recording_enabled: bool | None = None
    recording_max_duration: int | None = None
    recording_file_format: str | None = None
    transcription_enabled: bool | None = None
    tag: str | None = None
    sip_headers: Mapping[str, str] | None = None

    def __repr__(self) -> str:
        # The default repr would print callback_url, credentials and all, into any log
        # line or traceback that shows this object.
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name in ("callback_url", "fallback_url"):
                value = _redact_url(value) if isinstance(value, str) else "<redacted>"
            shown.append(f"{f.name}={value!r}")
        return f"CallRequest({', '.join(shown)})"

    def validate(self) -> None:
        """Raise :class:`InvalidCallRequest` for the first rule this request breaks."""
        if not isinstance(self.from_, str) or not _E164.fullmatch(self.from_):
            raise InvalidCallRequest("from_", "must be an E.164 number like +19195551212")
        if not isinstance(self.to, str) or not (
            _E164.fullmatch(self.to) or _SIP_URI.fullmatch(self.to)
        ):
            raise InvalidCallRequest(
                "to", "must be an E.164 number like +19195551212 or a SIP URI like sip:user@host"
            )
        if self.call_timeout is not None and not (
            _is_int(self.call_timeout) and 1 <= self.call_timeout <= MAX_CALL_TIMEOUT
        ):
            raise InvalidCallRequest(
                "call_timeout", f"must be a whole number of seconds from 1 to {MAX_CALL_TIMEOUT}"
            )
        if self.callback_url is not None:
            _check_http_url("callback_url", self.callback_url)
        if self.callback_timeout is not None and not (
            _is_int(self.callback_timeout) and 1 <= self.callback_timeout <= MAX_CALLBACK_TIMEOUT
        ):
            raise InvalidCallRequest(
                "callback_timeout",
                f"must be a whole number of milliseconds from 1 to {MAX_CALLBACK_TIMEOUT}",
            )
        if self.callback_http_method is not None and (
            not isinstance(self.callback_http_method, str)
            or self.callback_http_method.upper() not in ("POST", "GET")
        ):
            raise InvalidCallRequest("callback_http_method", "must be POST or GET")
        if self.fallback_url is not None:
            _check_http_url("fallback_url", self.fallback_url)
        for name in ("bridge_id", "conference_id"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, str) or not value.strip() or _CONTROL.search(value)
            ):
                raise InvalidCallRequest(name, "must be a non-empty id")
        for name in ("recording_enabled", "transcription_enabled"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise InvalidCallRequest(name, "must be true or false")
        if self.recording_max_duration is not None and not (
            _is_int(self.recording_max_duration) and self.recording_max_duration > 0
        ):
            raise InvalidCallRequest(
                "recording_max_duration", "must be a whole number of seconds greater than 0"
            )
        if self.recording_file_format is not None and self.recording_file_format not in (
            "wav",
            "mp3",
        ):
            raise InvalidCallRequest("recording_file_format", "must be wav or mp3")
        if self.tag is not None and (not isinstance(self.tag, str) or len(self.tag) > MAX_TAG):
            raise InvalidCallRequest("tag", f"must be a string of at most {MAX_TAG} characters")
        if self.sip_headers is not None:
            self._validate_sip_headers()

    def _validate_sip_headers(self) -> None:
        headers = self.sip_headers
        if not isinstance(headers, Mapping):
            raise InvalidCallRequest("sip_headers", "must be a mapping of header name to value")
        if len(headers) > MAX_SIP_HEADERS:
            raise InvalidCallRequest("sip_headers", f"at most {MAX_SIP_HEADERS} headers")
        for name, value in headers.items():
            if not isinstance(name, str) or not name[:2].upper() == "X-":
                raise InvalidCallRequest("sip_headers", 'every header name must start with "X-"')
            if len(name) > MAX_SIP_HEADER_PART or not _TOKEN.fullmatch(name):
                raise InvalidCallRequest(
                    "sip_headers",
                    f"every header name must be at most {MAX_SIP_HEADER_PART} token characters",
                )
            if (
                not isinstance(value, str)
                or len(value) > MAX_SIP_HEADER_PART
                or _CONTROL.search(value)
            ):
                raise InvalidCallRequest(
                    "sip_headers",
                    f"every header value must be text of at most {MAX_SIP_HEADER_PART}"
                    " characters without control characters",
                )

    def to_json(self) -> dict[str, Any]:
        """The create-call body: camelCase, only the fields that are set (no nulls)."""
        body: dict[str, Any] = {}
        for name, json_name in _JSON_NAMES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if name == "callback_http_method":
                value = value.upper()
            elif name == "sip_headers":
                value = dict(value)
            body[json_name] = value
        return body


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


class Action(StrEnum):
    """What the dialer does next after a failed carrier request."""

    RETRY = "retry"  # nothing was created: try again later
    RATE_LIMITED = "rate-limited"  # nothing was created: back off until retry_at
    PERMANENT = "permanent"  # this destination (or this request as is) can't be called
    STOP = "stop"  # credentials, credit or configuration: stop the campaign, alert
    AMBIGUOUS = "ambiguous"  # the request may have been acted on: the call MAY exist
    DUPLICATE = "duplicate"  # 409: the carrier refused a duplicate


class CarrierError(Exception):
    """A carrier request failed; ``action`` says what to do about it.

    ``retry_at`` is epoch seconds when a rate limit lifts, if the carrier said.
    ``status``, ``category`` and ``code`` are None when there was no (parsable) answer.
    """

    def __init__(
        self,
        action: Action,
        message: str,
        *,
        status: int | None = None,
        category: str | None = None,
        code: str | None = None,
        retry_at: float | None = None,
    ) -> None:
        super().__init__(message)
        self.action = action
        self.status = status
        self.category = category
        self.code = code
        self.message = message
        self.retry_at = retry_at

    def __str__(self) -> str:
        status = "-" if self.status is None else str(self.status)
        return f"{status} {self.category or '-'}/{self.code or '-'}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"CarrierError(action={self.action.value!r}, status={self.status!r},"
            f" category={self.category!r}, code={self.code!r}, message={self.message!r},"
            f" retry_at={self.retry_at!r})"
        )


_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")


def _redact_url(url: str) -> str:
    """The URL with any user:password replaced, for messages and reprs."""
    return _URL_USERINFO.sub(r"\1***@", url)


class _Scrubber:
    """Removes every secret this client knows of from text headed for a message."""

    def __init__(self, secrets: list[str]) -> None:
        # Longest first, so a secret containing another is removed whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def with_request(self, request: CallRequest) -> _Scrubber:
        extra: list[str] = []
        for url in (request.callback_url, request.fallback_url):
            if not isinstance(url, str):
                continue
            extra.append(url)
            try:
                parts = urlsplit(url)
                for part in (parts.password, parts.username):
                    if part:
                        extra += [part, unquote(part)]
            except ValueError:
                pass
        return _Scrubber(self._secrets + extra)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _redact_url(text)


def _json_or_none(response: requests.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def _details(body: Any) -> dict[str, Any]:
    """The error body's ``details`` as a dict, whether given as [{name, value}] or {k: v}."""
    raw = body.get("details") if isinstance(body, dict) else None
    if isinstance(raw, dict):
        return raw
    out: dict[str, Any] = {}
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                out[item["name"]] = item.get("value")
    return out


def _epoch_seconds(value: Any) -> float | None:
    """An epoch time from a header or detail. Documented in milliseconds (catapult-v1.md,
    429); a value too small to be milliseconds since 1973 is taken as seconds, since
    reading seconds as milliseconds would put the reset in January 1970."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number != number or number <= 0:  # NaN or nonsense
        return None
    return number / 1000.0 if number >= 1e11 else number


def _retry_at(response: requests.Response, details: dict[str, Any]) -> float | None:
    for value in (response.headers.get("X-RateLimit-Reset"), details.get("rateLimitResetTime")):
        at = _epoch_seconds(value)
        if at is not None:
            return at
    # Not documented for Catapult, but harmless to honour if a proxy in between sends it.
    retry_after = response.headers.get("Retry-After")
    if retry_after:
        try:
            return clock.now().timestamp() + max(0.0, float(retry_after))
        except ValueError:
            try:
                return email.utils.parsedate_to_datetime(retry_after).timestamp()
            except (TypeError, ValueError):
                return None
    return None


# 403 category/code -> action (catapult-v1.md, "Errors").
_FORBIDDEN_CATEGORIES = {
    "limit": Action.RATE_LIMITED,
    "credit": Action.STOP,
    "forbidden": Action.PERMANENT,
}
_FORBIDDEN_CODES = {
    "call-rate-limit": Action.RATE_LIMITED,
    "insufficient-available-balance": Action.STOP,
    "invalid-call-to-number": Action.PERMANENT,
    "invalid-destination-number": Action.PERMANENT,
}


def _action_for(status: int, category: str | None, code: str | None, *, creates: bool) -> Action:
    """The Errors table of catapult-v1.md, plus the statuses it does not list."""
    if status == 400:
        return Action.PERMANENT
    if status == 401:
        return Action.STOP
    if status == 403:
        # The code is the more specific of the two; an unknown 403 stops the campaign so a
        # human looks, rather than failing contacts or hammering the account.
        return _FORBIDDEN_CODES.get(code or "") or _FORBIDDEN_CATEGORIES.get(
            category or "", Action.STOP
        )
    if status == 409:
        return Action.DUPLICATE
    if status == 429:
        return Action.RATE_LIMITED
    if status == 408:
        return Action.RETRY  # the server gave up reading the request: nothing was acted on
    if creates and status in (404, 405):
        # Wrong base URL or user id: every attempt would fail the same way, so failing
        # this contact as PERMANENT would burn the whole list. Stop and alert instead.
        return Action.STOP
    if creates and status in (502, 504):
        # A gateway answered for a carrier it may already have handed the request to (504
        # means it gave up waiting for the answer): the call may exist. 500 and 503 come
        # from the carrier itself, which documents that nothing is known to be created.
        return Action.AMBIGUOUS
    if 400 <= status < 500:
        return Action.PERMANENT
    if status >= 500:
        return Action.RETRY
    # 1xx/3xx (redirects are not followed: requests would turn a POST into a GET): the
    # base URL points somewhere that is not the API. A configuration problem.
    return Action.STOP


# ---------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------


class CatapultClient:
    """A client for one Catapult account.

    One ``requests.Session`` per client, shared by the worker's threads: the session's
    connection pool (urllib3's, which is thread-safe) is the point of sharing, and we never
    mutate session state (cookies, headers, auth) after construction, which is the part of
    a Session that is not safe across threads. Requests is used this way by many projects
    for plain requests; a client per thread would be the fallback if that ever bit.
    """

    def __init__(
        self,
        base_url: str,
        user_id: str,
        token: str,
        secret: str,
        timeout: float = 10.0,
        pool_size: int = 64,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be greater than 0")
        self._base = base_url.rstrip("/")
        self._user_id = user_id
        self._calls_path = f"/v1/users/{quote(user_id, safe='')}/calls"
        # (connect, read): a connect that takes longer than ~3 s is a lost SYN, and 3.05
        # sits just past TCP's 3 s retransmit; the read gets the whole budget.
        self._timeout = (min(3.05, timeout), timeout)
        basic = base64.b64encode(f"{token}:{secret}".encode()).decode()
        self._scrub = _Scrubber([secret, token, basic])
        self._session = requests.Session()
        self._session.auth = (token, secret)
        self._session.headers.update({"Accept": "application/json"})
        # What requests reads from the environment on every request (proxies, a CA
        # bundle), read once here: scanning os.environ per request cost ~0.25 ms of a
        # create (benchmarks/PROFILE.md). Every URL this client requests is on the base
        # URL's origin, so its proxy settings are the ones that apply. Still honours
        # HTTPS_PROXY/NO_PROXY and REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE, as set at start.
        self._session.trust_env = False
        self._session.proxies = requests.utils.get_environ_proxies(self._base)
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            self._session.verify = bundle
        # No retries inside urllib3: whether a request may be repeated is the caller's
        # decision, made from the Action (a blind retry of a sent create dials twice).
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        base_parts = urlsplit(self._base)
        self._origin = (base_parts.scheme.lower(), base_parts.hostname, base_parts.port)
        # Every create is the same request but for its body: prepared once (URL, auth,
        # headers), copied per call with the body set. Preparing anew cost a quarter of
        # requests' time per create (URL parsing, header merging, auth, cookies).
        self._create = self._session.prepare_request(
            requests.Request("POST", self._base + self._calls_path, json={})
        )

    @classmethod
    def from_settings(cls, s: Settings) -> CatapultClient:
        s.require("CATAPULT_USER_ID", "CATAPULT_API_TOKEN", "CATAPULT_API_SECRET")
        assert s.catapult_user_id and s.catapult_api_token and s.catapult_api_secret
        return cls(
            s.catapult_api_url,
            s.catapult_user_id,
            s.catapult_api_token,
            s.catapult_api_secret,
            timeout=s.http_timeout,
            pool_size=max(64, s.worker_threads),
        )

    def __repr__(self) -> str:
        return f"CatapultClient(base_url={_redact_url(self._base)!r}, user_id={self._user_id!r})"

    def __enter__(self) -> CatapultClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    # -- operations ----------------------------------------------------------------------

    def create_call(self, request: CallRequest) -> str:
        """Create a call and return its id.

        Raises :class:`InvalidCallRequest` before sending anything, or :class:`CarrierError`.
        Transport failures are split by whether the request can have reached the carrier:
        a refused connection or connect timeout is RETRY, a read timeout or a connection
        lost after sending is AMBIGUOUS (catapult-v1.md: "the call may exist").
        """
        request.validate()
        body = json.dumps(request.to_json(), allow_nan=False).encode()
        prepared = self._create.copy()
        prepared.body = body
        prepared.headers["Content-Length"] = str(len(body))
        response = self._send("POST", self._calls_path, prepared=prepared, creates=True)
        if not 200 <= response.status_code < 300:
            # The request's callback URLs carry the receiver's secret: scrubbed too.
            raise self._error(response, creates=True, scrub=self._scrub.with_request(request))
        call_id = _call_id(response.headers.get("Location"))
        if call_id is None:
            raise CarrierError(
                Action.AMBIGUOUS,
                f"POST {self._calls_path}: the carrier answered {response.status_code}"
                " without a usable Location header; the call exists but has no known id",
                status=response.status_code,
            )
        return call_id

    def get_call(self, call_id: str) -> dict[str, Any]:
        """The call's record. 404 raises CarrierError(PERMANENT, status=404)."""
        body = self._get_json(self._call_path(call_id), dict, "/…", "a JSON object")
        return body  # type: ignore[no-any-return]

    def get_call_events(self, call_id: str) -> list[dict[str, Any]]:
        """The call's events as the carrier lists them: ``[{id, time, name, data}]``."""
        body = self._get_json(
            self._call_path(call_id) + "/events", list, "/…/events", "a JSON array"
        )
        return [item for item in body if isinstance(item, dict)]

    def _get_json(self, path: str, kind: type, shown: str, expected: str) -> Any:
        response = self._send("GET", path)
        if response.status_code != 200:
            raise self._error(response, creates=False)
        body = _json_or_none(response)
        if not isinstance(body, kind):
            raise CarrierError(
                Action.RETRY,
                f"GET {self._calls_path}{shown}: the answer was not {expected}",
                status=response.status_code,
            )
        return body

    def list_calls(
        self,
        *,
        from_: str | None = None,
        to: str | None = None,
        size: int = 1000,
        sort_order: str = "desc",
        max_pages: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every call matching the filters, page by page (pages count from 0).

        Follows a ``Link: <…>; rel="next"`` header when the carrier sends one (catapult-v1.md,
        "Read calls"), but only to the API's own origin, since the session would hand our
        Basic credentials to any host; otherwise asks for the next page number and stops on
        a page shorter than ``size``.
        """
        if not (_is_int(size) and 1 <= size <= 1000):
            raise ValueError("size must be a whole number from 1 to 1000")
        if sort_order not in ("asc", "desc"):
            raise ValueError("sort_order must be asc or desc")
        if max_pages is not None and max_pages < 1:
            return
        params: dict[str, Any] = {"size": size, "sortOrder": sort_order}
        if from_ is not None:
            params["from"] = from_
        if to is not None:
            params["to"] = to
        url: str | None = None  # an absolute next-page URL from a Link header
        pages = 0  # fetched so far, which is also the next page number (pages count from 0)
        seen: set[str] = set()
        while True:
            if url is None:
                response = self._send("GET", self._calls_path, params={**params, "page": pages})
            else:
                response = self._send("GET", url, absolute=True)
            pages += 1
            if response.status_code != 200:
                raise self._error(response, creates=False)
            body = _json_or_none(response)
            if not isinstance(body, list):
                raise CarrierError(
                    Action.RETRY,
                    f"GET {self._calls_path}: the answer was not a JSON array",
                    status=response.status_code,
                )
            yield from (item for item in body if isinstance(item, dict))
            if max_pages is not None and pages >= max_pages:
                return
            seen.add(response.url)
            link = response.links.get("next", {}).get("url")
            url = urljoin(response.url, link) if link else None
            if url is not None and not self._same_origin(url):
                log.warning("carrier next-page link to another origin ignored; paging by number")
                url = None
            elif url is not None:
                if url in seen:
                    return  # a Link that loops back: stop rather than spin
                continue
            if (response.links and not link) or len(body) < size or not body:
                # A Link header without rel="next" marks the last page; without one, a
                # short page does.
                return

    def hang_up(self, call_id: str) -> None:
        """End the call (POST {"state": "completed"}); 404 raises status 404, PERMANENT."""
        response = self._send("POST", self._call_path(call_id), json_body={"state": "completed"})
        if not 200 <= response.status_code < 300:
            raise self._error(response, creates=False)

    # -- plumbing ------------------------------------------------------------------------

    def _call_path(self, call_id: str) -> str:
        if not isinstance(call_id, str) or not call_id:
            raise ValueError("call_id must be a non-empty string")
        return f"{self._calls_path}/{quote(call_id, safe='')}"

    def _same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme.lower(), parts.hostname, parts.port) == self._origin

    def _send(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        creates: bool = False,
        absolute: bool = False,
        prepared: requests.PreparedRequest | None = None,
    ) -> requests.Response:
        url = path_or_url if absolute else self._base + path_or_url
        path = urlsplit(url).path
        started = time.monotonic()
        try:
            if prepared is not None:
                response = self._session.send(
                    prepared,
                    timeout=self._timeout,
                    allow_redirects=False,
                    proxies=self._session.proxies,
                    verify=self._session.verify,
                    stream=False,
                    cert=None,
                )
            else:
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    json=json_body,
                    timeout=self._timeout,
                    allow_redirects=False,
                )
        except requests.RequestException as exc:
            ms = (time.monotonic() - started) * 1000
            error = self._transport_error(method, path, exc, creates=creates)
            log.debug(
                "carrier %s %s failed: %s in %.0f ms",
                method,
                path,
                type(exc).__name__,
                ms,
                extra={"method": method, "path": path, "status": None, "ms": round(ms)},
            )
            # Not chained: a transport exception's text is not ours to vouch for.
            raise error from None
        ms = (time.monotonic() - started) * 1000
        log.debug(
            "carrier %s %s -> %d in %.0f ms",
            method,
            path,
            response.status_code,
            ms,
            extra={"method": method, "path": path, "status": response.status_code, "ms": round(ms)},
        )
        return response

    def _transport_error(
        self, method: str, path: str, exc: requests.RequestException, *, creates: bool
    ) -> CarrierError:
        seconds = self._timeout[1]
        if isinstance(exc, requests.ConnectTimeout):
            sent, what = False, f"no connection within {self._timeout[0]:g} s"
        elif isinstance(exc, requests.ConnectionError) and _caused_by(exc, NewConnectionError):
            # Refused, unreachable or a DNS failure (NameResolutionError is a subclass):
            # the request never left.
            sent, what = False, "could not connect"
        elif isinstance(exc, requests.ReadTimeout):
            sent, what = True, f"no answer within {seconds:g} s"
        elif isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
            # RemoteDisconnected, a reset, a broken pipe, a TLS error: any of them may come
            # after the carrier read the request.
            sent, what = True, "the connection was lost"
        elif isinstance(exc, _NOT_SENT):
            # Raised while preparing the request, before anything was sent: a wrong
            # setting, so STOP rather than retrying something that cannot work.
            return CarrierError(
                Action.STOP,
                f"{method} {path}: the request could not be made ({type(exc).__name__})",
            )
        else:
            # Anything else happened on the way back (a body that would not decode, ...).
            sent, what = True, "the answer could not be read"
        name = type(exc).__name__
        if not sent:
            return CarrierError(Action.RETRY, f"{method} {path}: {what} ({name}); nothing was sent")
        if creates:
            return CarrierError(
                Action.AMBIGUOUS,
                f"{method} {path}: {what} after sending ({name}); the call may exist",
            )
        # Reads and hang-ups create nothing and may be repeated safely.
        return CarrierError(Action.RETRY, f"{method} {path}: {what} ({name})")

    def _error(
        self, response: requests.Response, *, creates: bool, scrub: _Scrubber | None = None
    ) -> CarrierError:
        scrub = scrub or self._scrub
        body = _json_or_none(response)
        body = body if isinstance(body, dict) else {}
        category = body.get("category") if isinstance(body.get("category"), str) else None
        code = body.get("code") if isinstance(body.get("code"), str) else None
        message = body.get("message") if isinstance(body.get("message"), str) else None
        if message is None:
            text = " ".join(response.text.split())[:200] if response.content else ""
            message = text or response.reason or f"HTTP {response.status_code}"
            if text and response.reason:
                message = f"{response.reason}: {text}"
        details = _details(body)
        status = response.status_code
        action = _action_for(status, category, code, creates=creates)
        retry_at = _retry_at(response, details) if action is Action.RATE_LIMITED else None
        return CarrierError(
            action,
            scrub(message)[:500],
            status=status,
            category=scrub(category) if category else None,
            code=scrub(code) if code else None,
            retry_at=retry_at,
        )


_NOT_SENT = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.URLRequired,
    requests.exceptions.InvalidJSONError,
)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is anywhere in the exception's args, reason, cause or context."""
    stack: list[object] = [exc]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, kind):
            return True
        stack.extend(item.args)
        stack.extend([getattr(item, "reason", None), item.__cause__, item.__context__])
    return False


def _call_id(location: str | None) -> str | None:
    """The call id: the last path segment of Location, relative or absolute."""
    if not location or not location.strip():
        return None
    try:
        path = urlsplit(location.strip()).path
    except ValueError:
        return None
    segments = [s for s in path.split("/") if s]
    # The docs promise only ".../calls/{callId}": take the last segment, whatever precedes
    # it, but never the collection itself.
    if not segments or segments[-1] == "calls":
        return None
    call_id = unquote(segments[-1])
    return call_id if call_id.strip() and "/" not in call_id else None
