"""The Catapult v1 Voice API client: the only code that speaks the carrier's HTTP.

Everything the carrier calls a "call" and every camelCase field stays in ``dialer.carrier``;
the rest of the dialer talks about attempts and reads an :class:`~dialer.carrier.errors.Action`
off a :class:`~dialer.carrier.errors.CarrierError` to decide what to do next. The request
and its rules are in ``dialer.carrier.request``, what a failure means in
``dialer.carrier.errors``. The facts this module matches are in ``docs/catapult-v1.md``
(sections "Create a call", "Errors", "Read calls").

Secrets: the API secret travels in the Basic ``Authorization`` header and the callback URL
carries the receiver's credentials. Errors are built by ``dialer.carrier.errors`` from
parsed fields, scrubbed of every known secret, and transport exceptions are not chained.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from dialer import metrics
from dialer.carrier.errors import (
    Action,
    CarrierError,
    Scrubber,
    from_response,
    from_transport,
    json_or_none,
    redact_url,
)
from dialer.carrier.request import CallRequest, is_int
from dialer.policy.requests import CONTROL, READ, RequestBudget, RequestsBusy

if TYPE_CHECKING:
    from dialer.settings import Settings

log = logging.getLogger(__name__)


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
        budget: RequestBudget | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be greater than 0")
        self._base = base_url.rstrip("/")
        self._user_id = user_id
        # Every request but a create spends from the account's non-create budget
        # (dialer.policy.requests); None: unpaced (tests, scripts).
        self._budget = budget
        self._calls_path = f"/v1/users/{quote(user_id, safe='')}/calls"
        # (connect, read): a connect that takes longer than ~3 s is a lost SYN, and 3.05
        # sits just past TCP's 3 s retransmit; the read gets the whole budget.
        self._timeout = (min(3.05, timeout), timeout)
        basic = base64.b64encode(f"{token}:{secret}".encode()).decode()
        self._scrub = Scrubber([secret, token, basic])
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
    def from_settings(cls, s: Settings, budget: RequestBudget | None = None) -> CatapultClient:
        s.require("CATAPULT_USER_ID", "CATAPULT_API_TOKEN", "CATAPULT_API_SECRET")
        assert s.catapult_user_id and s.catapult_api_token and s.catapult_api_secret
        return cls(
            s.catapult_api_url,
            s.catapult_user_id,
            s.catapult_api_token,
            s.catapult_api_secret,
            timeout=s.http_timeout,
            pool_size=max(64, s.worker_threads),
            budget=budget,
        )

    def __repr__(self) -> str:
        return f"CatapultClient(base_url={redact_url(self._base)!r}, user_id={self._user_id!r})"

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
        lost after sending is AMBIGUOUS (docs/carrier.md: "the call may exist").
        """
        request.validate()
        body = json.dumps(request.to_json(), allow_nan=False).encode()
        prepared = self._create.copy()
        prepared.body = body
        prepared.headers["Content-Length"] = str(len(body))
        response = self._send("POST", self._calls_path, prepared=prepared, creates=True)
        if not 200 <= response.status_code < 300:
            # The request's callback URLs carry the receiver's secret: scrubbed too.
            raise from_response(response, creates=True, scrub=self._scrub.with_request(request))
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
        return body

    def _spend(self, kind: str) -> None:
        """A slot in the account's non-create budget for one request, or CarrierError
        (RATE_LIMITED) when there is none for now."""
        if self._budget is None:
            return
        try:
            self._budget.take(kind)
        except RequestsBusy as exc:
            metrics.control_request(kind, "no-slot")
            raise CarrierError(Action.RATE_LIMITED, str(exc)) from None

    def _refused(self, response: requests.Response, kind: str) -> CarrierError:
        """The error of a non-create request's answer; a 429 holds the fleet's budget."""
        error = from_response(response, creates=False, scrub=self._scrub)
        if error.action is Action.RATE_LIMITED:
            metrics.control_request(kind, "rate-limited")
            if self._budget is not None:
                self._budget.pushed_back(error.retry_at or time.time() + 1.0)
        else:
            metrics.control_request(kind, "error")
        return error

    def get_call_events(self, call_id: str) -> list[dict[str, Any]]:
        """The call's events as the carrier lists them: ``[{id, time, name, data}]``."""
        body = self._get_json(
            self._call_path(call_id) + "/events", list, "/…/events", "a JSON array"
        )
        return [item for item in body if isinstance(item, dict)]

    def _get_json(self, path: str, kind: type, shown: str, expected: str) -> Any:
        self._spend(READ)
        return self._json_of(self._send("GET", path), kind, shown, expected)

    def _json_of(self, response: requests.Response, kind: type, shown: str, expected: str) -> Any:
        """A GET's body, if it answered 200 with JSON of ``kind``; else the CarrierError."""
        if response.status_code != 200:
            raise self._refused(response, READ)
        metrics.control_request(READ, "ok")
        body = json_or_none(response)
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

        Follows a ``Link: <…>; rel="next"`` header when the carrier sends one (docs/carrier.md,
        "Read calls"), but only to the API's own origin, since the session would hand our
        Basic credentials to any host; otherwise asks for the next page number and stops on
        a page shorter than ``size``.
        """
        if not (is_int(size) and 1 <= size <= 1000):
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
            self._spend(READ)
            if url is None:
                response = self._send("GET", self._calls_path, params={**params, "page": pages})
            else:
                response = self._send("GET", url, absolute=True)
            pages += 1
            body = self._json_of(response, list, "", "a JSON array")
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
        self._spend(CONTROL)
        response = self._send("POST", self._call_path(call_id), json_body={"state": "completed"})
        if not 200 <= response.status_code < 300:
            raise self._refused(response, CONTROL)
        metrics.control_request(CONTROL, "ok")

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
            error = from_transport(method, path, exc, creates=creates, timeout=self._timeout)
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
