"""Who may use the console, and proof that a change came from the console's own pages.

- **Credentials**: one operator account, ``DIALER_WEB_USER`` / ``DIALER_WEB_PASSWORD``,
  compared in constant time. A browser logs in through a form and gets a session cookie;
  a script sends the same credentials as HTTP Basic on each request.
- **The session cookie** is ``payload.signature``: the payload (user, issue time, the
  session's CSRF token) in URL-safe base64, signed with HMAC-SHA256. The signing key is
  derived from the credentials with scrypt, so every console process (and a restarted
  one) accepts the same cookies, a changed password ends every session at once, and a
  stolen cookie is no cheap test of password guesses. ``HttpOnly``, ``SameSite=Strict``,
  ``Path=/``, ``Secure`` when the request came over https; valid for ``SESSION_SECONDS``.
- **CSRF**: every state-changing request carries a token, as the form field ``csrf`` or
  the header ``X-CSRF-Token``: the session's own (random, in the signed cookie), or for
  HTTP Basic a token derived from the key (``GET /csrf`` hands it to a script, as
  Jenkins hands out its crumb). The login form has one too, from a short-lived signed
  cookie set with the form, so a third-party page cannot log a browser in either.
- **Guessing**: failed logins (form or Basic) are counted per client address; after
  ``MAX_FAILURES`` within ``FAILURE_WINDOW`` seconds that address is refused (429) until
  the window has passed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

SESSION_COOKIE = "dialer_session"
LOGIN_COOKIE = "dialer_login"
SESSION_SECONDS = 12 * 3600
LOGIN_FORM_SECONDS = 3600
MAX_FAILURES = 10
FAILURE_WINDOW = 300.0
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Identity:
    """Who a request is: ``csrf`` is the token its changes must carry."""

    user: str
    csrf: str
    via: str  # "session" or "basic"


class Authenticator:
    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self._user = user.encode("utf-8")
        self._password = password.encode("utf-8")
        # ~30 ms once per process: what each guess at the password from a stolen cookie
        # would cost too.
        self._key = hashlib.scrypt(
            self._password, salt=b"dialer-web-session\0" + self._user, n=2**14, r=8, p=1, dklen=32
        )
        self._basic_csrf = self._mac(b"basic-csrf\0" + self._user)
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ credentials
    def check(self, user: str, password: str) -> bool:
        """Both compared in full, in constant time, whatever the first mismatch."""
        user_ok = hmac.compare_digest(user.encode("utf-8"), self._user)
        password_ok = hmac.compare_digest(password.encode("utf-8"), self._password)
        return user_ok and password_ok

    def basic(self, header: str | None) -> Identity | None | bool:
        """The identity an ``Authorization: Basic`` header proves; None when there is no
        such header; False when there is one and it is wrong."""
        if not header or header[:6].lower() != "basic ":
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep or not self.check(user, password):
            return False
        return Identity(self.user, self._basic_csrf, "basic")

    # ------------------------------------------------------------------ sessions
    def _mac(self, data: bytes) -> str:
        return _b64(hmac.new(self._key, data, hashlib.sha256).digest())

    def _sign(self, payload: dict[str, object]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
        return f"{body}.{self._mac(body.encode('ascii'))}"

    def _unsign(self, value: str | None, max_age: float) -> dict[str, object] | None:
        if not value or value.count(".") != 1:
            return None
        body, signature = value.split(".")
        if not hmac.compare_digest(signature, self._mac(body.encode("ascii"))):
            return None
        try:
            payload = json.loads(_unb64(body))
        except (ValueError, binascii.Error):
            return None
        issued = payload.get("t") if isinstance(payload, dict) else None
        if not isinstance(issued, int | float) or not 0 <= time.time() - issued <= max_age:
            return None
        return payload

    def new_session(self) -> str:
        """A session cookie's value for the operator, with a fresh CSRF token."""
        return self._sign({"u": self.user, "t": int(time.time()), "c": secrets.token_urlsafe(24)})

    def session(self, cookie: str | None) -> Identity | None:
        payload = self._unsign(cookie, SESSION_SECONDS)
        if (
            payload is None
            or payload.get("u") != self.user
            or not isinstance(payload.get("c"), str)
        ):
            return None
        return Identity(self.user, str(payload["c"]), "session")

    # ------------------------------------------------------------------ the login form
    def login_form(self, cookie: str | None = None) -> tuple[str, str]:
        """(cookie value, form token) for a login form: the form's POST must carry both.
        The browser's login cookie is kept while it is valid, so two login forms (two
        tabs) carry the same token."""
        payload = self._unsign(cookie, LOGIN_FORM_SECONDS / 2)
        if payload is not None and isinstance(payload.get("l"), str) and cookie:
            return cookie, str(payload["l"])
        token = secrets.token_urlsafe(24)
        return self._sign({"t": int(time.time()), "l": token}), token

    def login_token_ok(self, cookie: str | None, token: str | None) -> bool:
        payload = self._unsign(cookie, LOGIN_FORM_SECONDS)
        expected = payload.get("l") if payload else None
        return (
            isinstance(expected, str) and bool(token) and hmac.compare_digest(expected, token or "")
        )

    # ------------------------------------------------------------------ guessing
    def refused(self, client: str) -> bool:
        """Too many failures from this address lately."""
        with self._lock:
            seen = self._prune(client)
            return seen is not None and len(seen) >= MAX_FAILURES

    def failed(self, client: str) -> None:
        with self._lock:
            seen = self._prune(client)
            if seen is None:
                if len(self._failures) > 10_000:  # bounded: forget the oldest addresses
                    for old in list(self._failures)[:1000]:
                        del self._failures[old]
                seen = self._failures[client] = deque(maxlen=MAX_FAILURES)
            seen.append(time.monotonic())

    def _prune(self, client: str) -> deque[float] | None:
        seen = self._failures.get(client)
        if seen is not None:
            while seen and time.monotonic() - seen[0] > FAILURE_WINDOW:
                seen.popleft()
            if not seen:
                del self._failures[client]
                return None
        return seen


def csrf_ok(identity: Identity, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(identity.csrf.encode(), (token or "").encode())
