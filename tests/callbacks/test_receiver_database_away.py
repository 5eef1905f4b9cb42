"""A scripted call's answer when the database is away: ``dialer receiver`` answers 503
(the carrier asks again) within its patience, never a hung callback or a 500.

Two ways a database is away: nothing listens (a restart: refused at once), and a
server that takes the connection but never answers (a pooler holding the query until
its server returns, a failover's dead address): SCRIPT_PATIENCE bounds the wait.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
import redis
import requests

from dialer.callbacks import eventstream
from dialer.callbacks.gate import PATH
from dialer.callbacks.receiver import SCRIPT_PATIENCE
from dialer.dev.fleet import RedisServer, free_port, receiver_command, wait_for_port
from tests.helpers import fresh_redis

SECRET = "test-callback-secret"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port whose connections the kernel accepts and nobody ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def start_receiver(
    redis_server: RedisServer, database_url: str
) -> tuple[str, redis.Redis, subprocess.Popen[bytes]]:
    url_ = fresh_redis(redis_server.port, 4)
    r = redis.Redis.from_url(url_)
    port = free_port()
    env = {
        **os.environ,
        "DIALER_REDIS_URL": url_,
        "DIALER_CALLBACK_SECRET": SECRET,
        "DIALER_DATABASE_URL": database_url,
    }
    proc = subprocess.Popen(receiver_command(port, 1), env=env)
    wait_for_port(port, 20)
    return f"http://127.0.0.1:{port}", r, proc


def answer(url: str) -> tuple[requests.Response, float]:
    tag = json.dumps({"attempt": 7, "campaign": 3})
    query = {"eventType": "answer", "callId": "c-away", "tag": tag, "time": "2026-12-07T06:00:00Z"}
    auth = base64.b64encode(f"dialer:{SECRET}".encode()).decode()
    started = time.monotonic()
    response = requests.get(
        f"{url}{PATH}?{urlencode(query)}", headers={"Authorization": f"Basic {auth}"}, timeout=30
    )
    return response, time.monotonic() - started


@pytest.mark.parametrize("away", ["refused", "silent"])
def test_a_scripted_answer_without_its_database_is_a_prompt_503(
    redis_server: RedisServer, silent_server: int, away: str
) -> None:
    port = free_port() if away == "refused" else silent_server
    url, r, proc = start_receiver(
        redis_server, f"postgresql+psycopg://postgres@127.0.0.1:{port}/dialer"
    )
    try:
        response, took = answer(url)
        assert response.status_code == 503, response.text
        assert response.headers.get("Retry-After") == "1"
        assert took < SCRIPT_PATIENCE + 1.5, f"{away}: answered after {took:.1f} s"
        # The event itself is in the stream (handed over before the script is read):
        # the carrier's retry is a repeat the applier recognises.
        assert r.xlen(eventstream.STREAM) == 1
        # The process is still serving: the next one is answered the same way.
        again, _ = answer(url)
        assert again.status_code == 503 and proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
