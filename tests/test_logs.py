"""Log lines: JSON with the ids where known, and never a secret, in every process kind.

The formatter tests run here; the receiver and the CLI are run as the real commands
with ``DIALER_LOG_FORMAT=json`` (the worker and beat: tests/e2e/test_ops_e2e.py).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from dialer import api, logs
from dialer.callbacks.gate import PATH
from dialer.dev.fleet import free_port, wait_for_port, wait_until

SECRET = "cb/secret:with odd chars"
TOKEN = "metrics-token-0123456789"


def secret_spellings(*secrets: str, users: tuple[str, ...] = ("dialer", "")) -> list[str]:
    """Each secret as it may travel: as is, percent-encoded, inside Basic credentials."""
    out = []
    for s in secrets:
        out += [s, quote(s, safe=""), quote(s)]
        out += [base64.b64encode(f"{u}:{s}".encode()).decode() for u in users]
    return out


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"dialer.test.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_json_lines_carry_the_bound_ids_and_extras() -> None:
    logger, stream = capture(logs.JsonFormatter(logs.Redactor([])))
    with logs.bound(attempt=7):
        logger.info("claimed %s", "it")
        logs.bind(campaign=2, contact=3)
        logger.warning("carrier said no", extra={"status": 503, "ms": 12})
        logger.error("about another", extra={"attempt": 9})
    logger.info("outside")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [
        "claimed it",
        "carrier said no",
        "about another",
        "outside",
    ]
    first, second, third, fourth = lines
    assert set(first) >= {"time", "level", "logger", "message"} and first["level"] == "INFO"
    assert first["time"].endswith("Z") and first["logger"].startswith("dialer.test.")
    assert (first["attempt"], "campaign" in first) == (7, False)
    assert {k: second[k] for k in ("campaign", "contact", "attempt", "status", "ms")} == {
        "campaign": 2,
        "contact": 3,
        "attempt": 7,
        "status": 503,
        "ms": 12,
    }
    assert third["attempt"] == 9, "an explicit extra wins over the bound id"
    assert not {"campaign", "contact", "attempt"} & set(fourth), "ids end with their block"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_every_spelling_of_a_secret_is_redacted(fmt: str) -> None:
    redact = logs.Redactor(["carrier-secret", SECRET, TOKEN], users=["carrier-token"])
    formatter = (
        logs.JsonFormatter(redact) if fmt == "json" else logs.RedactingFormatter(None, redact)
    )
    logger, stream = capture(formatter)
    header = "Basic " + base64.b64encode(b"carrier-token:carrier-secret").decode()
    logger.warning("raw %s and %s", SECRET, TOKEN)
    logger.warning("url http://dialer:%s@host/callbacks", quote(SECRET, safe=""))
    logger.warning("header %s", header, extra={"auth": header})
    logger.warning("someone's Authorization: Bearer Zm9vYmFyOmJhejEyMw==")
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        logger.exception("boom")
    out = stream.getvalue()
    for spelling in secret_spellings("carrier-secret", SECRET, TOKEN) + [header.split()[1]]:
        assert spelling not in out, spelling
    assert "Zm9vYmFyOmJhejEyMw" not in out, "any header credential is taken out"
    assert out.count(logs.REDACTED) >= 5
    if fmt == "json":
        lines = [json.loads(line) for line in out.splitlines()]
        assert len(lines) == 5 and "RuntimeError" in lines[-1]["exc"]


# ------------------------------------------------------------- real processes


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a log line is not JSON: {line!r}")
    return parsed


def server_processes(supervisor: int) -> list[int]:
    """The receiver's server processes: the supervisor's spawned children (not
    multiprocessing's resource tracker)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def test_receiver_and_uvicorn_log_json_without_secrets(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "receiver.log"
    env = {
        **os.environ,
        "DIALER_LOG_FORMAT": "json",
        "DIALER_CALLBACK_SECRET": SECRET,
        "DIALER_METRICS_TOKEN": TOKEN,
        "DIALER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # down: the 503 path logs
    }
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dialer.cli", "receiver", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, 20)
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": "Basic " + base64.b64encode(f"dialer:{SECRET}".encode()).decode()}
        event = {"eventType": "hangup", "callId": "c-1", "cause": "USER_BUSY"}
        assert requests.post(base + PATH, json=event, headers=auth, timeout=30).status_code == 503
        token = quote(SECRET, safe="")
        assert requests.post(f"{base}{PATH}/t/{token}", json=event, timeout=30).status_code == 503
        requests.get(base + "/metrics", headers={"Authorization": f"Bearer {SECRET}"}, timeout=10)
        # uvicorn's own logger: its supervisor reports a server process killed under it.
        [worker] = server_processes(proc.pid)
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: b"died" in log_path.read_bytes(), 20, what="uvicorn")
    finally:
        proc.terminate()
        proc.wait(10)
    text = log_path.read_text()
    lines = json_lines(text)
    loggers = {line["logger"] for line in lines}
    assert {"dialer.callbacks.gate", "uvicorn.error"} <= loggers, loggers
    handover = [line for line in lines if "could not hand over" in line["message"]]
    assert handover and all(
        line["level"] == "ERROR" and line["logger"] == "dialer.callbacks.gate" for line in handover
    )
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    for spelling in secret_spellings(SECRET, TOKEN):
        assert spelling not in text, spelling


def test_cli_logs_json(tmp_path: Path, clean_db: None) -> None:
    report = api.create_campaign("logs", "+19195550000", [{"phone": "+19197200001"}])
    env = {
        **os.environ,
        "DIALER_LOG_FORMAT": "json",
        "DIALER_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",  # down: the start logs it
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "dialer.cli", "campaign", "start", str(report["id"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "is running" in result.stdout, "the command's own output stays plain"
    lines = json_lines(result.stderr)
    assert lines, f"expected a logged warning (took {time.monotonic() - started:.1f}s)"
    assert all(line["level"] in ("WARNING", "ERROR") for line in lines)
    assert any(line.get("campaign") == report["id"] for line in lines), lines
    for spelling in secret_spellings("sim-token", "sim-secret", "test-callback-secret"):
        assert spelling not in result.stderr


def test_the_cli_handler_writes_to_stderr_as_it_is_now() -> None:
    """``dialer.logs.configure``'s handler follows ``sys.stderr``: bound to the stream of
    the day, it wrote into a closed file once that stream was swapped out and closed
    (pytest's captured output between tests printed "--- Logging error ---")."""
    root = logging.getLogger()
    saved_handlers, saved_level, saved_stderr = root.handlers[:], root.level, sys.stderr
    first, second = io.StringIO(), io.StringIO()
    try:
        sys.stderr = first
        logs.configure("text")
        logging.getLogger("dialer.test").warning("one")
        sys.stderr = second
        first.close()
        logging.getLogger("dialer.test").warning("two")
    finally:
        sys.stderr = saved_stderr
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert second.getvalue().strip().endswith("two")
    assert "Logging error" not in second.getvalue()
