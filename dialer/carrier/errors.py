"""What a failed carrier request means, and messages that never carry a secret.

The rest of the dialer reads an :class:`Action` off a :class:`CarrierError` to decide what
to do next; this module turns the carrier's answer (status, category, code: the "Errors"
section of ``docs/catapult-v1.md``) or a transport failure into one.

Secrets: the API secret travels in the Basic ``Authorization`` header and the callback URL
carries the receiver's credentials (``https://user:pass@host/...``). Neither may reach a
log line or an exception message, so errors are built from parsed fields with our own
wording, scrubbed of every known secret (:class:`Scrubber`), and transport exceptions are
not chained (the client raises them ``from None``).
"""

from __future__ import annotations

import email.utils
import json
import re
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import requests
from urllib3.exceptions import NewConnectionError

from dialer import clock

if TYPE_CHECKING:
    from dialer.carrier.request import CallRequest


class Action(StrEnum):
    """What the dialer does next after a failed carrier request."""

    RETRY = "retry"  # nothing was created: try again later
    RATE_LIMITED = "rate-limited"  # nothing was created: back off until retry_at
    PERMANENT = "permanent"  # this destination (or this request as is) can't be called
    STOP = "stop"  # credentials, credit or configuration: stop the campaign, alert
    AMBIGUOUS = "ambiguous"  # the request may have been acted on: the call MAY exist
    DUPLICATE = "duplicate"  # 409: the carrier refused a duplicate
    # number-access-denied on a create: the account may not call from this ``from``
    # number; nothing was created. The number leaves its caller-id pool (the campaign
    # stops only when none is left: dialer.worker.dialing).
    FROM_REFUSED = "from-refused"


class CarrierError(Exception):
    """A carrier request failed; ``action`` says what to do about it.

    ``retry_at`` is epoch seconds when a rate limit lifts, if the carrier said.
    ``status``, ``category`` and ``code`` are None when there was no (parsable) answer.
    ``unreachable``: the carrier could not be reached at all (refused, DNS, no
    connection in time), so nothing was sent: the whole fleet waits, not one attempt.
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
        unreachable: bool = False,
    ) -> None:
        super().__init__(message)
        self.unreachable = unreachable
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


def redact_url(url: str) -> str:
    """The URL with any user:password replaced, for messages and reprs."""
    return _URL_USERINFO.sub(r"\1***@", url)


class Scrubber:
    """Removes every secret this client knows of from text headed for a message."""

    def __init__(self, secrets: list[str]) -> None:
        # Longest first, so a secret containing another is removed whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def with_request(self, request: CallRequest) -> Scrubber:
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
        return Scrubber(self._secrets + extra)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact_url(text)


def json_or_none(response: requests.Response) -> Any:
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
    """An epoch time from a header or detail. Documented in milliseconds (docs/carrier.md,
    429); a value too small to be milliseconds since 1973 is taken as seconds, since
    reading seconds as milliseconds would put the reset in January 1970."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number != number or number <= 0:  # NaN or nonsense
        return None
    return number / 1000.0 if number >= 1e11 else number


def retry_at_of(response: requests.Response, details: dict[str, Any]) -> float | None:
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


# 403 category/code -> action (docs/carrier.md, "Errors").
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


def action_for(status: int, category: str | None, code: str | None, *, creates: bool) -> Action:
    """The Errors table of docs/carrier.md, plus the statuses it does not list."""
    if status == 400:
        return Action.PERMANENT
    if creates and status in (401, 403) and code == "number-access-denied":
        # docs/carrier.md lists it under 401; accounts have been seen to send it as a
        # 403 as well. Either way it is about the ``from`` number, not the account.
        return Action.FROM_REFUSED
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


def from_response(response: requests.Response, *, creates: bool, scrub: Scrubber) -> CarrierError:
    """The error a carrier's non-success answer means, its texts scrubbed."""
    body = json_or_none(response)
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
    action = action_for(status, category, code, creates=creates)
    retry_at = retry_at_of(response, details) if action is Action.RATE_LIMITED else None
    return CarrierError(
        action,
        scrub(message)[:500],
        status=status,
        category=scrub(category) if category else None,
        code=scrub(code) if code else None,
        retry_at=retry_at,
    )


def from_transport(
    method: str,
    path: str,
    exc: requests.RequestException,
    *,
    creates: bool,
    timeout: tuple[float, float],
) -> CarrierError:
    """The error a failed request means, split by whether it can have reached the
    carrier (``timeout``: the client's (connect, read) timeouts, for the message)."""
    seconds = timeout[1]
    if isinstance(exc, requests.ConnectTimeout):
        sent, what = False, f"no connection within {timeout[0]:g} s"
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
        return CarrierError(
            Action.RETRY, f"{method} {path}: {what} ({name}); nothing was sent", unreachable=True
        )
    if creates:
        return CarrierError(
            Action.AMBIGUOUS,
            f"{method} {path}: {what} after sending ({name}); the call may exist",
        )
    # Reads and hang-ups create nothing and may be repeated safely.
    return CarrierError(Action.RETRY, f"{method} {path}: {what} ({name})")


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
