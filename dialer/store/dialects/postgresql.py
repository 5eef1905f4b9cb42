"""PostgreSQL: the production database. Statements tuned for round trips and parse cost:
one statement over arrays where the portable form takes several or an executemany,
``= ANY(array)`` instead of IN lists, COPY for bulk rows, triggers keeping tallies."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    Engine,
    Table,
    TextClause,
    any_,
    bindparam,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from dialer import settings
from dialer.store import tally
from dialer.store.dialects.base import Created, Queries
from dialer.store.dialects.drivers import PostgresDriver

log = logging.getLogger(__name__)


class PostgresQueries(Queries):
    name = "postgresql"
    driver = PostgresDriver()

    def create_engine(self, url: str) -> Engine:
        # As many connections as a worker has threads, kept: a checkout above pool_size
        # would open (and close) a PostgreSQL connection, a backend start each. No ping per
        # checkout (it doubles the server's transactions): a connection lost to a server
        # restart fails its statement, SQLAlchemy invalidates the pool, and the task's
        # retry gets a fresh one. Recycled hourly against idle-connection killers.
        #
        # Three planner settings for the dialer's own sessions, so that its key look-ups
        # use their indexes at every table size and plan in microseconds
        # (benchmarks/big_campaign.py --auto-explain and benchmarks/plans.py found them;
        # docs/design.md, "Work per call"):
        # - plan_cache_mode: a plan for each statement's own values, never a generic one.
        #   psycopg prepares a statement after 5 runs, and PostgreSQL may then switch to
        #   a plan for "any array": made while ``attempt`` was small, the event batch's
        #   look-up became a sequential scan and stayed one as the table grew.
        # - random_page_cost 1.1 (the default, 4, prices a disk seek): the rows these
        #   statements touch are recent and cached, and at 4 a batch of 40 ids on a table
        #   of a few thousand rows was planned as a scan of all of them.
        # Together: 336 rows read per call at 10,000 contacts became 42.
        # - jit off: the tick's release statement takes each campaign's LIMIT from an
        #   array, so the planner guesses a tenth of the campaign's pending contacts; at
        #   ten million that passes jit_above_cost, and every tick spent 13 ms compiling
        #   a 200-row statement (docs/statements.md showed it). The dialer's statements
        #   are all short; none gains from JIT.
        #
        # Behind a pooler in transaction mode (DIALER_DATABASE_POOLER=transaction) each
        # transaction may run on another server connection: a statement psycopg
        # prepared on one is unknown on the next ("prepared statement _pg3_0 does not
        # exist"), and PgBouncer refuses the ``options`` startup parameter outright. So
        # neither is used; the three settings are then the database's own
        # (``ALTER DATABASE ... SET``, docs/operations.md), checked at the first connection.
        s = settings.get()
        size = s.worker_threads + 4
        pooled = s.database_pooler == "transaction"
        connect_args: dict[str, Any] = (
            {"prepare_threshold": None} if pooled else {"options": _SESSION_OPTIONS}
        )
        # A server that does not answer (a failover's old address, a dropped route) is
        # an error in seconds, as a refused connection is, not a worker thread stuck in
        # connect() for the kernel's two minutes.
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
        engine = create_engine(
            url,
            pool_size=size,
            max_overflow=10,
            pool_recycle=3600,
            connect_args=connect_args,
        )
        if pooled:
            event.listen(engine, "first_connect", _check_database_settings)
        return engine

    def among(self, column: ColumnElement[Any], values: Sequence[object]) -> ColumnElement[bool]:
        """``column = ANY(array)``: one parameter however many values, so the statement's
        text is the same for every batch (an IN list of N values is a new statement for
        psycopg to parse each time: 12% of apply_events)."""
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))

    def release_due(
        self, session: Session, campaign_id: int, run: int, limit: int, now: datetime
    ) -> list[int]:
        # One statement: lock, insert the attempts, point the contacts at them.
        made = session.scalars(_RELEASE, {"c": campaign_id, "now": now, "n": limit, "run": run})
        return sorted(made.all())  # ids in insertion order, which is due order

    def release_due_many(
        self, session: Session, wanted: Sequence[tuple[int, int, int]], now: datetime
    ) -> dict[int, list[int]]:
        # One statement for every campaign of the tick: per campaign the same index
        # range as _RELEASE, stopped at its own limit (a LATERAL subquery each).
        params = {
            "cs": [w[0] for w in wanted],
            "runs": [w[1] for w in wanted],
            "ns": [w[2] for w in wanted],
            "now": now,
        }
        made: dict[int, list[int]] = {}
        for cid, aid in session.execute(_RELEASE_MANY, params).all():
            made.setdefault(cid, []).append(aid)
        return {cid: sorted(ids) for cid, ids in made.items()}  # insertion order: due order

    def claim(
        self, session: Session, tags: Mapping[int, str], lease: datetime, now: datetime
    ) -> set[int]:
        params = {"ids": list(tags), "tags": list(tags.values()), "lease": lease, "now": now}
        return set(session.scalars(_CLAIM, params).all())

    def record_created(
        self, session: Session, created: Sequence[Created], now: datetime
    ) -> dict[int, int]:
        # Three statements for the whole batch.
        session.execute(_LOCK_CONTACTS, {"ids": sorted({c[1] for c in created})}).all()
        params = {
            "now": now,
            "ids": [c[0] for c in created],
            "calls": [c[2] for c in created],
            "leases": [c[3] for c in created],
            "froms": [c[4] for c in created],
        }
        done: dict[int, int] = dict(session.execute(_RECORD_CREATED, params).all())
        if done:
            session.execute(_COUNT_ATTEMPT, {"ids": list(done.values())})
        return done

    def insert_events(self, session: Session, rows: list[dict[str, object]]) -> None:
        """COPY, the payload as the JSON text the receiver stored, when known."""
        cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY call_event ({', '.join(_EVENT_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                raw = row.pop("raw", None)
                row["payload"] = raw if raw is not None else json.dumps(row["payload"])
                copy.write_row(tuple(row[c] for c in _EVENT_COLUMNS))

    def write_back(
        self,
        session: Session,
        table: Table,
        columns: tuple[str, ...],
        changed: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    ) -> None:
        """One statement over arrays, every changed row with all of ``columns``."""
        params = {c: [values[c] for values, _ in changed] for c in ("id", *columns)}
        session.execute(_write_back_sql(table, columns), params)

    def compact_tallies(self, conn: Session | Connection) -> int:
        return sum(int(getattr(conn.execute(s), "rowcount", 0) or 0) for s in _COMPACT)

    def limit_statement_time(self, session: Session, milliseconds: int) -> None:
        session.execute(text(f"SET LOCAL statement_timeout = {int(milliseconds)}"))

    def bulk_insert(
        self, session: Session, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        """COPY: one statement, rows streamed to the server as they are read."""
        cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
        names = ", ".join(f'"{c}"' for c in columns)
        with cursor, cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            write = copy.write_row
            for row in rows:
                write(row)

    takes_copy_text = True

    def copy_text(
        self, session: Session, table: Table, columns: Sequence[str], chunks: Iterable[str]
    ) -> None:
        """COPY, the caller's text as it is: big chunks, no per-row call here."""
        cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
        names = ", ".join(f'"{c}"' for c in columns)
        with cursor, cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for chunk in chunks:
                copy.write(chunk)

    def insert_ignoring_conflicts(self, table: Any) -> postgresql.Insert:
        return postgresql.insert(table).on_conflict_do_nothing()

    def analyze(self, session: Session, table_name: str) -> None:
        session.execute(text(f"ANALYZE {table_name}"))


CONNECT_TIMEOUT = 5  # seconds (libpq's connect_timeout)
PLANNER_SETTINGS = _WANTED = {
    "plan_cache_mode": "force_custom_plan",
    "random_page_cost": "1.1",
    "jit": "off",
}
_SESSION_OPTIONS = " ".join(f"-c {name}={value}" for name, value in _WANTED.items())


def _check_database_settings(dbapi_connection: Any, _record: Any) -> None:
    """Behind a pooler the planner settings must be the database's own: say so, once
    per process, when they are not (the dialer still works, but its look-ups may turn
    into scans as tables grow: docs/design.md, "Work per call")."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(f"current_setting('{name}')" for name in _WANTED))
        found = dict(zip(_WANTED, cursor.fetchone() or (), strict=False))
    dbapi_connection.rollback()
    wrong = {k: v for k, v in _WANTED.items() if found.get(k) != v}
    if wrong:
        log.warning(
            "DIALER_DATABASE_POOLER=transaction: the database does not set %s; run %s",
            ", ".join(f"{k} (is {found.get(k)})" for k in wrong),
            "; ".join(f"ALTER DATABASE <name> SET {k} = {v}" for k, v in wrong.items()),
        )


_RELEASE = text(
    """
    WITH picked AS (
        SELECT id, attempts, due_at FROM contact
         WHERE campaign_id = :c AND status = 'pending' AND due_at <= :now
         ORDER BY due_at, id
         LIMIT :n
           FOR UPDATE SKIP LOCKED
    ), made AS (
        INSERT INTO attempt (contact_id, campaign_id, number, run, status, queued_at, sends)
        SELECT id, :c, attempts + 1, :run, 'queued', :now, 0 FROM picked ORDER BY due_at, id
        RETURNING id, contact_id
    )
    UPDATE contact AS c
       SET status = 'dialing', due_at = NULL, ready_at = NULL, last_attempt_id = made.id
      FROM made
     WHERE c.id = ANY(ARRAY(SELECT contact_id FROM made)) AND c.id = made.contact_id
    RETURNING made.id
    """
)

_RELEASE_MANY = text(
    """
    WITH picked AS (
        SELECT p.id, p.attempts, p.due_at, w.c, w.run
          FROM unnest(CAST(:cs AS integer[]), CAST(:runs AS integer[]),
                      CAST(:ns AS integer[])) AS w(c, run, n)
         CROSS JOIN LATERAL (
            SELECT id, attempts, due_at FROM contact
             WHERE campaign_id = w.c AND status = 'pending' AND due_at <= :now
             ORDER BY due_at, id
             LIMIT w.n
               FOR UPDATE SKIP LOCKED
         ) AS p
    ), made AS (
        INSERT INTO attempt (contact_id, campaign_id, number, run, status, queued_at, sends)
        SELECT id, c, attempts + 1, run, 'queued', :now, 0 FROM picked ORDER BY c, due_at, id
        RETURNING id, contact_id, campaign_id
    )
    UPDATE contact AS c
       SET status = 'dialing', due_at = NULL, ready_at = NULL, last_attempt_id = made.id
      FROM made
     WHERE c.id = ANY(ARRAY(SELECT contact_id FROM made)) AND c.id = made.contact_id
    RETURNING made.campaign_id, made.id
    """
)

_CLAIM = text(
    """
    UPDATE attempt AS a
       SET status = 'sending', lease_until = :lease, sends = a.sends + 1, sent_at = :now,
           not_before = NULL, tag = v.tag
      FROM unnest(CAST(:ids AS bigint[]), CAST(:tags AS text[])) AS v(id, tag)
     WHERE a.id = v.id AND a.status = 'queued'
    RETURNING a.id
    """
)

# The common case of record_created_many in one statement: every created call whose
# attempt is still ours (sending, or unknown after a timeout) and has no call id yet,
# and for which no event is waiting as an orphan. The rest go the careful way.
_RECORD_CREATED = text(
    """
    UPDATE attempt AS a
       SET call_id = v.call_id, status = 'created', created_at = :now, lease_until = v.lease,
           from_number = v.from_number
      FROM unnest(CAST(:ids AS bigint[]), CAST(:calls AS varchar[]),
                  CAST(:leases AS timestamptz[]), CAST(:froms AS varchar[]))
           AS v(id, call_id, lease, from_number)
     WHERE a.id = v.id AND a.call_id IS NULL AND a.status IN ('sending', 'unknown')
       AND NOT EXISTS (SELECT 1 FROM call_event AS e
                        WHERE e.call_id = v.call_id AND e.disposition = 'orphan')
    RETURNING a.id, a.contact_id
    """
)
_LOCK_CONTACTS = text("SELECT id FROM contact WHERE id = ANY(:ids) ORDER BY id FOR UPDATE")
_COUNT_ATTEMPT = text("UPDATE contact SET attempts = attempts + 1 WHERE id = ANY(:ids)")

_EVENT_COLUMNS = (
    "attempt_id", "call_id", "event_type", "event_time", "received_at", "applied_at",
    "disposition", "payload",
)  # fmt: skip

_COMPACT = [text(sql) for sql in tally.COMPACT.values()]


@lru_cache(maxsize=4)
def _write_back_sql(table: Table, columns: tuple[str, ...]) -> TextClause:
    """One UPDATE of every changed row of the batch, from arrays."""
    dialect = postgresql.dialect()
    arrays = ", ".join(
        f"CAST(:{c} AS {table.c[c].type.compile(dialect)}[])" for c in ("id", *columns)
    )
    sets = ", ".join(f"{c} = v.{c}" for c in columns)
    return text(
        f"UPDATE {table.name} AS t SET {sets} FROM unnest({arrays}) "
        f"AS v(id, {', '.join(columns)}) WHERE t.id = v.id"
    )
