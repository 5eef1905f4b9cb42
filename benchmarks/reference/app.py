"""The plain design's Celery app, table and tasks (see the package docstring).

    celery -A benchmarks.reference.app worker --pool threads -Q ref.events,ref.dial

Configured from the environment: ``REF_DATABASE_URL``, ``REF_BROKER_URL``,
``REF_CALLBACK_URL`` (the receiver's base URL) and ``REF_CALLBACK_SECRET``, ``REF_FROM``,
and the carrier's ``CATAPULT_API_URL``, ``CATAPULT_USER_ID``, ``CATAPULT_API_TOKEN``,
``CATAPULT_API_SECRET``. Events and dials have queues of their own, so that a backlog
of dials does not hold up the callbacks.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from celery import Celery
from sqlalchemy import DateTime, Engine, String, create_engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

env = os.environ.get

app = Celery("reference", broker=env("REF_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_acks_late=True,  # a worker that dies mid-task leaves the message for another
    task_ignore_result=True,
    task_routes={
        "ref.dial_contact": {"queue": "ref.dial"},
        "ref.apply_event": {"queue": "ref.events"},
    },
    broker_connection_retry_on_startup=True,
)


class Base(DeclarativeBase):
    pass


class Contact(Base):
    __tablename__ = "ref_contact"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    call_id: Mapped[str | None] = mapped_column(String(80), unique=True)
    cause: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(String(500))
    dialed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@cache
def engine() -> Engine:
    """One pooled engine per worker process, made on first use. The pool holds more
    connections than a worker has threads (8): above it, SQLAlchemy's overflow opens a
    connection per checkout and closes it after, a PostgreSQL backend started each time."""
    return create_engine(env("REF_DATABASE_URL", ""), pool_size=10)


@cache
def carrier() -> tuple[requests.Session, str, dict[str, Any]]:
    """The shared HTTP session, the create-call URL and the fixed part of its body."""
    session = requests.Session()
    session.auth = (env("CATAPULT_API_TOKEN", ""), env("CATAPULT_API_SECRET", ""))
    url = f"{env('CATAPULT_API_URL', '').rstrip('/')}/v1/users/{env('CATAPULT_USER_ID')}/calls"
    # The secret rides in the callback URL as Basic credentials; the carrier turns it
    # into an Authorization header on every callback.
    base = urlsplit(env("REF_CALLBACK_URL", ""))
    netloc = f"ref:{quote(env('REF_CALLBACK_SECRET', ''), safe='')}@{base.netloc}"
    callback = urlunsplit((base.scheme, netloc, base.path.rstrip("/") + "/callbacks", "", ""))
    return session, url, {"from": env("REF_FROM"), "callbackUrl": callback}


def now() -> datetime:
    return datetime.now(UTC)


@app.task(
    name="ref.dial_contact",
    # The carrier's 429s and 5xx, and a database that refuses a connection for a while.
    autoretry_for=(
        requests.ConnectionError,
        requests.Timeout,
        requests.HTTPError,
        OperationalError,
    ),
    retry_backoff=True,
    max_retries=5,
)
def dial_contact(contact_id: int) -> None:
    """Place one call: load the contact, create the call, record its id, commit."""
    http, url, fixed = carrier()
    with Session(engine()) as session, session.begin():
        contact = session.get(Contact, contact_id)
        if contact is None or contact.call_id is not None or contact.status != "pending":
            return  # gone, or already dialed (a redelivered message)
        response = http.post(
            url, json={**fixed, "to": contact.phone, "tag": str(contact.id)}, timeout=10
        )
        if 400 <= response.status_code < 500 and response.status_code != 429:
            contact.status, contact.error = "failed", response.text[:500]
            return
        response.raise_for_status()  # 429 and 5xx: retried with backoff
        contact.call_id = response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
        contact.status, contact.dialed_at = "created", now()


@app.task(
    name="ref.apply_event",
    bind=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=10,
    default_retry_delay=1,
)
def apply_event(self: Any, event: dict[str, Any]) -> None:
    """Apply one callback to its contact, found by call id, in one transaction. The row
    is locked: a call's answer and hangup may be applied at once by two threads, and the
    later commit would otherwise write back the status it read before the other's."""
    with Session(engine()) as session, session.begin():
        contact = session.scalars(
            select(Contact).where(Contact.call_id == event["callId"]).with_for_update()
        ).one_or_none()
        if contact is None:
            # The callback came before dial_contact committed the call id: try again.
            raise self.retry()
        kind = event["eventType"]
        if kind == "answer":
            contact.answered_at = now()
            if contact.status != "ended":  # its hangup may have been applied first
                contact.status = "answered"
        elif kind == "hangup":
            contact.status, contact.ended_at = "ended", now()
            contact.cause = event.get("cause")
