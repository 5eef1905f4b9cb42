"""Engine, session factory, and publishing after commit.

Callers own a session's life: ``with session_scope() as session:`` at the edge (a task,
a command, a request), never a session opened inside a helper.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from dialer import settings

log = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        # One connection per process: SQLite lets one writer in at a time anyway, and
        # threads queueing for the pool wake at once, where SQLite's busy handler sleeps.
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            poolclass=QueuePool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=120,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Transactions are begun by hand below, not by the driver.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            # WAL lets the receiver's readers run beside a worker's writes.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            # SQLite has no row locks: take the write lock at BEGIN, so a transaction
            # that reads then writes waits its turn instead of failing with "locked".
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # As many connections as a worker has threads, kept: a checkout above pool_size
    # would open (and close) a PostgreSQL connection, a backend start each. No ping per
    # checkout (it doubles the server's transactions): a connection lost to a server
    # restart fails its statement, SQLAlchemy invalidates the pool, and the task's
    # retry gets a fresh one. Recycled hourly against idle-connection killers.
    size = settings.get().worker_threads + 4
    return create_engine(url, pool_size=size, max_overflow=10, pool_recycle=3600)


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


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Run ``fn`` once the session's current transaction commits; drop it on rollback.

    Tasks are published this way so a worker never looks for a row that is not committed
    yet, and nothing is published for a transaction that rolled back (field-notes.md,
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
