"""Engine, session factory, and publishing after commit.

Callers own a session's life: ``with session_scope() as session:`` at the edge (a task,
a command, a request), never a session opened inside a helper.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, event
from sqlalchemy.orm import Session, sessionmaker

from dialer import settings
from dialer.store import dialects

log = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """The process's engine for ``url``, made by its dialect (pool and connection set-up:
    ``dialer.store.dialects``)."""
    return dialects.for_url(url).create_engine(url)


def engine() -> Engine:
    return engine_for(settings.get().database_url)


@lru_cache(maxsize=8)
def _factory(bound: Engine) -> sessionmaker[Session]:
    return sessionmaker(bound, expire_on_commit=False)


def new_session() -> Session:
    return _factory(engine())()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session in a transaction: committed on success, rolled back on error."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def after_commit(session: Session, fn: Callable[[], object]) -> None:
    """Run ``fn`` once the session's current transaction commits; drop it on rollback.

    Tasks are published this way so a worker never looks for a row that is not committed
    yet, and nothing is published for a transaction that rolled back (docs/field-notes.md,
    "Publishing after commit"). A crash between commit and publish is covered by the
    sweep, which re-finds queued work in the database.
    """
    session.info.setdefault("after_commit", []).append(fn)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    pending = session.info.pop("after_commit", [])
    for fn in pending:
        try:
            fn()
        except Exception:  # the sweep re-publishes; a failed publish must not fail the commit
            log.exception("publishing after commit failed; the sweep will pick the work up")


@event.listens_for(Session, "after_rollback")
def _drop_after_rollback(session: Session) -> None:
    session.info.pop("after_commit", None)


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched (a DML statement's result is a cursor result)."""
    return cast(CursorResult[Any], result).rowcount
