"""SQLite: the embedded default (``dialer demo``, trials). The same effects as PostgreSQL's
statements in portable ones: no arrays, no COPY, no row locks (``BEGIN IMMEDIATE`` takes
the write lock, so writers are serialised and a conditional write is enough)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    Engine,
    Table,
    Text,
    bindparam,
    column,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy import table as sql_table
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from dialer.store import db
from dialer.store.dialects.base import Created, Queries
from dialer.store.dialects.drivers import SqliteDriver
from dialer.store.models import Attempt, AttemptStatus, Contact, ContactStatus
from dialer.store.models import CallEvent as CallEventRow

# Rows per executemany in a bulk insert: large enough that statement overhead vanishes,
# small enough that a batch's dicts stay a few MB.
_BULK_BATCH = 5_000


class SqliteQueries(Queries):
    name = "sqlite"
    driver = SqliteDriver()

    def create_engine(self, url: str) -> Engine:
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

    def among(self, column: ColumnElement[Any], values: Sequence[object]) -> ColumnElement[bool]:
        return column.in_(values)

    def release_due(
        self, session: Session, campaign_id: int, run: int, limit: int, now: datetime
    ) -> list[int]:
        # The conditional UPDATE on ``status = 'pending'`` makes it safe without SKIP
        # LOCKED (SQLite serialises writers instead).
        ids = session.scalars(
            select(Contact.id)
            .where(
                Contact.campaign_id == campaign_id,
                Contact.status == ContactStatus.PENDING,
                Contact.due_at <= now,
            )
            .order_by(Contact.due_at, Contact.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not ids:
            return []
        claimed = session.execute(
            update(Contact)
            .where(Contact.id.in_(ids), Contact.status == ContactStatus.PENDING)
            .values(status=ContactStatus.DIALING, due_at=None, ready_at=None)
            .returning(Contact.id, Contact.attempts)
            .execution_options(synchronize_session=False)
        ).all()
        if not claimed:
            return []
        created = session.execute(
            insert(Attempt).returning(Attempt.id, Attempt.contact_id),
            [
                {
                    "contact_id": cid,
                    "campaign_id": campaign_id,
                    "number": made + 1,
                    "run": run,
                    "status": AttemptStatus.QUEUED,
                    "queued_at": now,
                    "sends": 0,
                }
                for cid, made in claimed
            ],
        ).all()
        session.execute(
            update(Contact), [{"id": cid, "last_attempt_id": aid} for aid, cid in created]
        )
        return [aid for aid, _ in created]

    def claim(
        self, session: Session, tags: Mapping[int, str], lease: datetime, now: datetime
    ) -> set[int]:
        claimed = set(
            session.scalars(
                update(Attempt)
                .where(Attempt.id.in_(list(tags)), Attempt.status == AttemptStatus.QUEUED)
                .values(
                    status=AttemptStatus.SENDING,
                    lease_until=lease,
                    sends=Attempt.sends + 1,
                    sent_at=now,
                    not_before=None,
                )
                .returning(Attempt.id)
                .execution_options(synchronize_session=False)
            ).all()
        )
        if claimed:
            session.execute(
                update(Attempt).execution_options(synchronize_session=False),
                [{"id": aid, "tag": tags[aid]} for aid in claimed],
            )
        return claimed

    def record_created(
        self, session: Session, created: Sequence[Created], now: datetime
    ) -> dict[int, int]:
        session.execute(
            select(Contact.id)
            .where(Contact.id.in_(sorted({c[1] for c in created})))
            .order_by(Contact.id)
            .with_for_update()
        ).all()
        orphaned = set(
            session.scalars(
                select(CallEventRow.call_id).where(
                    CallEventRow.disposition == "orphan",
                    CallEventRow.call_id.in_([c[2] for c in created]),
                )
            ).all()
        )
        done: dict[int, int] = {}
        for attempt_id, contact_id, call_id, lease, from_number in created:
            if call_id in orphaned:
                continue
            moved = session.execute(
                update(Attempt)
                .where(
                    Attempt.id == attempt_id,
                    Attempt.call_id.is_(None),
                    Attempt.status.in_([AttemptStatus.SENDING, AttemptStatus.UNKNOWN]),
                )
                .values(
                    call_id=call_id,
                    status=AttemptStatus.CREATED,
                    created_at=now,
                    lease_until=lease,
                    from_number=from_number,
                )
                .execution_options(synchronize_session=False)
            )
            if db.rowcount(moved) == 1:
                done[attempt_id] = contact_id
        if done:
            session.execute(
                update(Contact)
                .where(Contact.id.in_(list(done.values())))
                .values(attempts=Contact.attempts + 1)
                .execution_options(synchronize_session=False)
            )
        return done

    def insert_events(self, session: Session, rows: list[dict[str, object]]) -> None:
        for row in rows:
            row.pop("raw", None)
        session.execute(insert(cast(Table, CallEventRow.__table__)), rows)

    def write_back(
        self,
        session: Session,
        table: Table,
        columns: tuple[str, ...],
        changed: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    ) -> None:
        """Grouped by which columns changed, an executemany each."""
        shapes: dict[tuple[str, ...], list[dict[str, object]]] = {}
        for values, diff in changed:
            shapes.setdefault(tuple(sorted(diff)), []).append(
                {"_id": values["id"], **{f"_{k}": v for k, v in diff.items()}}
            )
        for shape, params in shapes.items():
            session.execute(
                update(table)
                .where(table.c.id == bindparam("_id"))
                .values({c: bindparam(f"_{c}") for c in shape}),
                params,
            )

    def compact_tallies(self, conn: Session | Connection) -> int:
        return 0  # the tally tables exist but stay empty: status counts the rows here

    def limit_statement_time(self, session: Session, milliseconds: int) -> None:
        pass  # no statement timeout in SQLite; its tables are small

    def bulk_insert(
        self, session: Session, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        """Batched executemany. JSON columns are written as the text given: the statement
        types them as Text, so SQLAlchemy does not encode the JSON a second time."""
        typed = [
            column(c, Text() if isinstance(table.c[c].type, JSON) else table.c[c].type)
            for c in columns
        ]
        statement = insert(sql_table(table.name, *typed))
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(dict(zip(columns, row, strict=True)))
            if len(batch) >= _BULK_BATCH:
                session.execute(statement, batch)
                batch = []
        if batch:
            session.execute(statement, batch)

    def insert_ignoring_conflicts(self, table: Any) -> sqlite.Insert:
        return sqlite.insert(table).on_conflict_do_nothing()

    def analyze(self, session: Session, table_name: str) -> None:
        pass  # the demo's tables are small: the planner does well without statistics
