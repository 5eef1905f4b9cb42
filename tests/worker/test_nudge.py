"""The nudge (dialer.worker.nudge) is the message Celery itself publishes, and kombu reads
it from every kind of broker URL the way the workers will: a Celery or kombu upgrade
that changes the format, or how a URL is read, fails here. (A real worker acting on it:
tests/e2e/test_start_e2e.py.)"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import kombu
import pytest
import redis

from dialer import settings
from dialer.dev.fleet import RedisServer, free_port
from dialer.worker import nudge, tasks

# What differs between two messages of the same task: their ids, and when they expire.
IDS = {"id", "root_id", "correlation_id", "delivery_tag", "reply_to", "expires"}


def shape(value: Any) -> Any:
    """The keys and value types of a message, its values left out."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return type(value).__name__


def without_ids(message: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in message.items() if k not in ("headers", "properties", "body")}
    out["body"] = json.loads(base64.b64decode(message["body"]))
    for part in ("headers", "properties"):
        out[part] = {k: v for k, v in message[part].items() if k not in IDS}
    return out


def test_the_nudge_is_the_message_celery_publishes(test_settings: settings.Settings) -> None:
    r = redis.Redis.from_url(test_settings.broker_url)
    r.delete(nudge.CONTROL_QUEUE)
    tasks.release.apply_async((42,), expires=nudge.EXPIRES)  # what Celery makes of it
    nudge.release(test_settings.broker_url, 42)
    # LPUSH: the newest first. Nothing else went to the control queue.
    ours, celerys = (json.loads(m) for m in r.lrange(nudge.CONTROL_QUEUE, 0, -1))
    assert shape(ours) == shape(celerys)
    assert without_ids(ours) == without_ids(celerys)
    for message in (ours, celerys):
        headers, properties = message["headers"], message["properties"]
        assert headers["id"] == headers["root_id"] == properties["correlation_id"]
    expires = [datetime.fromisoformat(m["headers"]["expires"]) for m in (ours, celerys)]
    assert abs((expires[0] - expires[1]).total_seconds()) < 5
    assert ours["headers"]["id"] != celerys["headers"]["id"]
    r.delete(nudge.CONTROL_QUEUE)


def test_the_release_task_is_routed_where_the_nudge_goes() -> None:
    assert tasks.app.amqp.router.route({}, nudge.RELEASE_TASK)["queue"].name == (
        nudge.CONTROL_QUEUE
    )
    assert nudge.RELEASE_TASK in tasks.app.tasks


@pytest.mark.parametrize(
    "url",
    [
        "redis://",
        "redis://localhost",
        "redis://10.0.0.7:6380/7",
        "redis://:p%40ss%3Aw%2Ford@host/1",
        "redis://alice:pw@host:1234/2",
        "redis://host/",
        "rediss://host:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem",
        "rediss://:pw@host",
    ],
)
def test_a_broker_url_is_read_as_kombu_reads_it(url: str) -> None:
    c = kombu.Connection(url)
    ours = nudge.address(url)
    assert (ours["host"], ours["port"]) == (c.hostname or "127.0.0.1", c.port or 6379)
    assert (ours["username"], ours["password"]) == (c.userid, c.password)
    vhost = c.virtual_host
    assert ours["db"] == (0 if vhost in (None, "", "/") else int(vhost))
    assert ours["tls"] == (c.transport_cls == "rediss")
    if ours["tls"]:  # kombu's default for rediss:// without options: no verification
        kombu_ssl = dict(c.ssl)
        verify = kombu_ssl.pop("ssl_cert_reqs")
        theirs = {"ssl_cert_reqs": {ssl.CERT_REQUIRED: "required", ssl.CERT_NONE: "none"}[verify]}
        assert {"ssl_cert_reqs": "none", **ours["ssl"]} == theirs | kombu_ssl


# ------------------------------------------------- kombu reads it, from each kind of URL


def read_back(url: str) -> kombu.Message:
    """The next message on the control queue, as a worker's kombu consumer gets it."""
    with kombu.Connection(url, connect_timeout=5) as conn:
        queue = conn.SimpleQueue(nudge.CONTROL_QUEUE)
        try:
            message = queue.get(timeout=5)
            message.ack()
            return message
        finally:
            queue.close()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Redis that wants a password and knows a user, one on a Unix socket, and one
    that speaks TLS only."""
    tmp = Path(tmp_path_factory.mktemp("redis-tls"))
    password = RedisServer(
        options=[
            "--requirepass",
            "s3cr:et@/",
            "--user",
            "alice",
            "on",
            ">alice-pw",
            "~*",
            "&*",
            "+@all",
        ]
    )
    password.start()
    unix = RedisServer(options=["--unixsocket", str(tmp / "redis.sock")])
    unix.start()
    urls = {
        "password": f"redis://:s3cr%3Aet%40%2F@127.0.0.1:{password.port}/2",
        "user": f"redis://alice:alice-pw@127.0.0.1:{password.port}/3",
        # Not read by the nudge: published through Celery.
        "unix socket": f"redis+socket://{tmp / 'redis.sock'}?virtual_host=1",
    }
    tls: subprocess.Popen[bytes] | None = None
    if shutil.which("openssl"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem"),
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        port = free_port()
        tls = subprocess.Popen(
            ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(tmp / "cert.pem"), "--tls-key-file", str(tmp / "key.pem"),
             "--tls-auth-clients", "no", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        from dialer.dev.fleet import wait_for_port

        wait_for_port(port)
        ca = tmp / "cert.pem"
        urls["tls verified"] = (
            f"rediss://127.0.0.1:{port}/1?ssl_cert_reqs=required&ssl_ca_certs={ca}"
        )
        urls["tls unverified"] = f"rediss://127.0.0.1:{port}/4"
    yield urls
    password.stop()
    unix.stop()
    if tls is not None:
        tls.kill()
        tls.wait()


@pytest.mark.parametrize(
    "kind", ["database", "password", "user", "unix socket", "tls verified", "tls unverified"]
)
def test_kombu_reads_the_nudge_from_the_same_place(
    kind: str, secured: dict[str, str], redis_server: RedisServer
) -> None:
    url = secured.get(kind, f"redis://127.0.0.1:{redis_server.port}/5")
    if kind.startswith("tls") and kind not in secured:
        pytest.skip("no openssl to make a certificate with")
    nudge.release(url, 7)
    message = read_back(url)
    assert message.headers["task"] == nudge.RELEASE_TASK
    assert message.payload == [
        [7],
        {},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]
    assert message.delivery_info["routing_key"] == nudge.CONTROL_QUEUE


def test_a_refused_nudge_names_why_but_not_the_password(secured: dict[str, str]) -> None:
    wrong = secured["password"].replace("s3cr%3Aet", "nope")
    with pytest.raises(nudge.NudgeFailed) as failed:
        nudge.release(wrong, 7, timeout=2)
    assert "WRONGPASS" in str(failed.value) or "invalid" in str(failed.value)
    assert "nope" not in str(failed.value)
    with pytest.raises(nudge.NudgeFailed, match="ConnectionRefused"):
        nudge.release(f"redis://127.0.0.1:{free_port()}/0", 7)


def test_a_broker_inside_the_process_is_not_nudged() -> None:
    nudge.release("memory://", 7)  # the demo's: nothing outside this process could hear it
