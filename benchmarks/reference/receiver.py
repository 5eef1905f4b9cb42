"""The plain design's callback receiver: a WSGI app, one Celery task per event.

    uvicorn --interface wsgi --workers 2 benchmarks.reference.receiver:app

The carrier signs nothing; the shared secret comes as the password of Basic credentials
(put into each call's callbackUrl by ``dial_contact``), compared in constant time, as
the dialer's receiver does. An event is answered 200 once its task is on the broker; if
the broker refuses it the answer is 500 and the carrier tries again.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from benchmarks.reference.app import apply_event

SECRET = os.environ.get("REF_CALLBACK_SECRET", "").encode()
MAX_BODY = 64 * 1024


def authorized(header: str) -> bool:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not SECRET:
        return False
    try:
        password = base64.b64decode(value.strip(), validate=True).partition(b":")[2]
    except binascii.Error:
        return False
    return hmac.compare_digest(password, SECRET)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    def answer(status: str) -> list[bytes]:
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]

    if environ["PATH_INFO"] != "/callbacks":
        return answer("404 Not Found")
    if environ["REQUEST_METHOD"] != "POST":
        return answer("405 Method Not Allowed")
    if not authorized(environ.get("HTTP_AUTHORIZATION", "")):
        return answer("401 Unauthorized")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return answer("400 Bad Request")
    if length > MAX_BODY:
        return answer("413 Content Too Large")
    try:
        event = json.loads(environ["wsgi.input"].read(length))
        if not isinstance(event.get("callId"), str) or not isinstance(event.get("eventType"), str):
            return answer("400 Bad Request")
    except (ValueError, AttributeError):
        return answer("400 Bad Request")
    apply_event.delay(event)  # an exception here is a 500: the carrier retries
    return answer("200 OK")
