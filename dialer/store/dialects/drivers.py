"""The dialects at the driver level (DB-API: psycopg 3, sqlite3), for what runs without
SQLAlchemy: ``dialer campaign status`` (``dialer.store.campaign_status``) and ``dialer
campaign start|resume`` (``dialer.state.starting``). Imports nothing heavy; each driver
module is imported when a connection is made.

A driver connects for a ``DIALER_DATABASE_URL``, reads a campaign's status rows in one
snapshot (campaign columns, runs, calls by run, contacts by status and zone key), and
runs the statements of a campaign's start in a transaction of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from dialer.errors import ApiError

COLUMNS = (
    'id, name, state, state_reason, from_number, "window", days, timezone, cps, '
    "max_concurrent, max_attempts, retry_delay, call_timeout, schedule, run, "
    "say, play, voice, locale, gender, keys, goodbye, transfer_to, max_duration, zone_keys, "
    "created_at, started_at, finished_at, next_run_at, "
    # The caller ids and create-call options (migration 0006): CALL_COLUMNS of them.
    "local_presence, record, record_format, record_max, transcribe, sip_headers, "
    "callback_timeout"
)
CALL_COLUMNS = 7
RUN_COLUMNS = "number, scheduled_for, started_at, finished_at, summary"

Rows = list[Any]
# campaign, runs, calls, contacts, responses (run, label, n), caller ids (e164, label,
# state, reason, removed_at, calls)
Found = tuple[tuple[Any, ...], Rows, Rows, Rows, Rows, Rows, Rows]
Starting = tuple[str, int, str | None, str]  # state, run, schedule, timezone

# A campaign's start (dialer.state.starting), "{p}" the driver's placeholder and "{lock}"
# what locks the row read until the transaction ends.
_START = {
    "lock": "SELECT state, run, schedule, timezone FROM campaign WHERE id = {p}{lock}",
    "running": "UPDATE campaign SET state = {p}, state_reason = NULL, "
    "started_at = coalesce(started_at, {p}) WHERE id = {p}",
    "first_run": "UPDATE campaign SET state = {p}, state_reason = NULL, "
    "started_at = coalesce(started_at, {p}), run = {p}, next_run_at = {p} WHERE id = {p}",
    "insert_run": "INSERT INTO campaign_run (campaign_id, number, started_at) VALUES ({p}, {p}, {p})",
}


class Driver:
    """One dialect's DB-API side."""

    name: str
    param = "%s"  # the driver's placeholder
    lock = " FOR UPDATE"

    def __init__(self) -> None:
        self._start = {k: sql.format(p=self.param, lock=self.lock) for k, sql in _START.items()}

    def connect(self, rest: str) -> Any:
        """A connection for the URL's part after ``scheme://``, not in a transaction."""
        raise NotImplementedError

    def fetch_status(self, cursor: Any, campaign_id: int) -> Found | None:
        """The campaign's status rows in one snapshot, or None if there is no campaign."""
        raise NotImplementedError

    def connection_errors(self) -> tuple[type[BaseException], ...]:
        """The errors that mean the connection is lost (open another)."""
        raise NotImplementedError

    def transaction(self, conn: Any) -> AbstractContextManager[Any]:
        """A cursor in a transaction on ``conn`` (one of ``connect``'s, or a pool's not in
        a transaction): committed when the block ends, rolled back if it raises. Inside
        a transaction already open on ``conn`` it is a savepoint of it."""
        raise NotImplementedError

    def timestamp(self, at: datetime) -> Any:
        """A timestamp parameter as the column stores it (``at`` is timezone-aware)."""
        return at

    # ------------------------------------------------- a campaign's start (dialer.state)

    def lock_campaign(self, cursor: Any, campaign_id: int) -> Starting | None:
        """(state, run, schedule, timezone) of a campaign, its row locked until the
        transaction ends (campaign first: the lock order of dialer.state); None if none."""
        cursor.execute(self._start["lock"], (campaign_id,))
        row = cursor.fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def set_running(
        self,
        cursor: Any,
        campaign_id: int,
        state: str,
        now: datetime,
        first_run: tuple[int, datetime | None] | None = None,
    ) -> None:
        """Set the campaign's state (its reason cleared, ``started_at`` kept from its
        first start); ``first_run``: (the run it begins, the next one's time) as well."""
        at = self.timestamp(now)
        if first_run is None:
            cursor.execute(self._start["running"], (state, at, campaign_id))
        else:
            number, next_run_at = first_run
            following = None if next_run_at is None else self.timestamp(next_run_at)
            cursor.execute(self._start["first_run"], (state, at, number, following, campaign_id))

    def insert_run(self, cursor: Any, campaign_id: int, number: int, now: datetime) -> None:
        """The row of a run started by the command (``scheduled_for`` empty)."""
        cursor.execute(self._start["insert_run"], (campaign_id, number, self.timestamp(now)))


# The campaign's attempts waiting to be sent again because nothing was created (the
# carrier out of reach, a 5xx, a rate limit: dialer.worker.dialing): how many, and the
# newest one's reason; a few rows at most (the queued ones), by ix_attempt_campaign_status.
_RESEND = (
    "(SELECT count(*) FROM attempt WHERE campaign_id = {p} AND status = 'queued' "
    "AND error IS NOT NULL), "
    "(SELECT error FROM attempt WHERE campaign_id = {p} AND status = 'queued' "
    "AND error IS NOT NULL ORDER BY id DESC LIMIT 1)"
)

# PostgreSQL: everything in one statement, so one round trip (a loaded machine makes
# each one wait for the server to be scheduled) and one snapshot (the state, the counts
# and the calls agree). The contacts by (status, zone key of pending ones) and the calls
# by run are the sums of the tallies the triggers keep (dialer.store.tally).
_POSTGRESQL = f"""
SELECT {COLUMNS},
    (SELECT coalesce(json_agg(json_build_array({RUN_COLUMNS}) ORDER BY number), '[]')
     FROM campaign_run WHERE campaign_id = c.id),
    (SELECT coalesce(json_agg(json_build_array(run, n)), '[]') FROM (
        SELECT run, sum(n) AS n FROM call_tally WHERE campaign_id = c.id GROUP BY run
    ) AS calls),
    (SELECT coalesce(json_agg(json_build_array(status, zones, n)), '[]') FROM (
        SELECT status, zones, sum(n) AS n FROM contact_tally WHERE campaign_id = c.id
        GROUP BY status, zones
    ) AS contacts),
    (SELECT coalesce(json_agg(json_build_array(run, label, n)), '[]') FROM (
        SELECT run, label, sum(n) AS n FROM response_tally WHERE campaign_id = c.id
        GROUP BY run, label HAVING sum(n) <> 0
    ) AS responses),
    (SELECT coalesce(json_agg(json_build_array(
        i.e164, i.label, i.state, i.reason, i.removed_at,
        (SELECT coalesce(sum(n), 0) FROM number_tally AS t
         WHERE t.campaign_id = c.id AND t.from_number = i.e164)
     ) ORDER BY i.id), '[]')
     FROM caller_id AS i WHERE i.campaign_id = c.id),
    (SELECT json_build_array({_RESEND.format(p="c.id")}))
FROM campaign AS c WHERE id = %s
"""


class PostgresDriver(Driver):
    name = "postgresql"

    def connect(self, rest: str) -> Any:
        import psycopg

        # Autocommit: the one statement is its own snapshot; no BEGIN, no ROLLBACK. Never
        # a prepared statement: a short-lived connection gains nothing from one, and
        # behind a transaction pooler it would outlive its server connection.
        return psycopg.connect(
            "postgresql://" + rest, autocommit=True, prepare_threshold=None, connect_timeout=5
        )

    def fetch_status(self, cursor: Any, campaign_id: int) -> Found | None:
        cursor.execute(_POSTGRESQL, (campaign_id,))
        row = cursor.fetchone()
        if row is None:
            return None
        *campaign, runs, calls, contacts, responses, callers, resend = row
        return (
            tuple(campaign),
            decode_json(runs),
            decode_json(calls),
            decode_json(contacts),
            decode_json(responses),
            decode_json(callers),
            [tuple(decode_json(resend))],
        )

    def connection_errors(self) -> tuple[type[BaseException], ...]:
        import psycopg

        return (psycopg.OperationalError, psycopg.InterfaceError)

    @contextmanager
    def transaction(self, conn: Any) -> Iterator[Any]:
        # psycopg's own block: BEGIN ... COMMIT in autocommit mode or from idle, a
        # savepoint inside a transaction.
        with conn.transaction(), conn.cursor() as cursor:
            yield cursor


# SQLite (the demo, trials; small): the same rows counted from the tables, in one
# transaction.
def _one(campaign_id: int) -> tuple[int]:
    return (campaign_id,)


def _two(campaign_id: int) -> tuple[int, int]:
    return (campaign_id, campaign_id)


_SQLITE = (
    (f"SELECT {COLUMNS} FROM campaign WHERE id = ?", _one),
    (f"SELECT {RUN_COLUMNS} FROM campaign_run WHERE campaign_id = ? ORDER BY number", _one),
    (
        "SELECT run, count(*) FROM attempt WHERE campaign_id = ? AND call_id IS NOT NULL "
        "GROUP BY run",
        _one,
    ),
    (
        "SELECT status, CASE WHEN status = 'pending' THEN zones END, count(*) FROM contact "
        "WHERE campaign_id = ? GROUP BY 1, 2",
        _one,
    ),
    (
        "SELECT run, response, count(*) FROM attempt WHERE campaign_id = ? "
        "AND response IS NOT NULL GROUP BY 1, 2",
        _one,
    ),
    (
        "SELECT i.e164, i.label, i.state, i.reason, i.removed_at, (SELECT count(*) FROM "
        "attempt AS a WHERE a.campaign_id = i.campaign_id AND a.from_number = i.e164 AND "
        "a.call_id IS NOT NULL) FROM caller_id AS i WHERE i.campaign_id = ? ORDER BY i.id",
        _one,
    ),
    (f"SELECT {_RESEND.format(p='?')}", _two),
)


class SqliteDriver(Driver):
    name = "sqlite"
    param = "?"
    lock = ""  # no row locks: BEGIN IMMEDIATE takes the database's write lock at once

    def connect(self, rest: str) -> Any:
        import sqlite3

        path, _, query = rest.partition("?")
        # sqlite:///relative.db, sqlite:////absolute.db; nothing: in memory.
        path = path[1:] if path.startswith("/") else path
        params = dict(parse_qsl(query))
        uri = params.pop("uri", "").lower() in ("true", "1")
        timeout = float(params.pop("timeout", 30))
        for driver_only in ("check_same_thread", "isolation_level", "detect_types"):
            params.pop(driver_only, None)
        if uri and params:
            path += "?" + urlencode(params)
        return sqlite3.connect(path or ":memory:", timeout=timeout, uri=uri, isolation_level=None)

    def fetch_status(self, cursor: Any, campaign_id: int) -> Found | None:
        cursor.execute("BEGIN")
        campaign, runs, calls, contacts, responses, callers, resend = (
            cursor.execute(sql, params(campaign_id)).fetchall() for sql, params in _SQLITE
        )
        if not campaign:
            return None
        return (campaign[0], runs, calls, contacts, responses, callers, resend)

    def connection_errors(self) -> tuple[type[BaseException], ...]:
        import sqlite3

        return (sqlite3.OperationalError,)

    @contextmanager
    def transaction(self, conn: Any) -> Iterator[Any]:
        # Statements by hand: both connect()'s connections and the engine's (see
        # dialects.sqlite) are in autocommit mode (isolation_level None).
        cursor = conn.cursor()
        nested = conn.in_transaction
        cursor.execute("SAVEPOINT dialer_driver" if nested else "BEGIN IMMEDIATE")
        try:
            yield cursor
        except BaseException:
            if nested:
                cursor.execute("ROLLBACK TO dialer_driver")
                cursor.execute("RELEASE dialer_driver")
            else:
                cursor.execute("ROLLBACK")
            raise
        else:
            cursor.execute("RELEASE dialer_driver" if nested else "COMMIT")
        finally:
            cursor.close()

    def timestamp(self, at: datetime) -> Any:
        # As SQLAlchemy stores a DateTime on SQLite (UTC, dialer.store.models.UTCDateTime).
        return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


_DRIVERS: dict[str, Driver] = {
    "postgresql": PostgresDriver(),
    "postgres": PostgresDriver(),
    "sqlite": SqliteDriver(),
}


def connect(url: str) -> tuple[Any, Driver]:
    """A DB-API connection for a ``DIALER_DATABASE_URL`` (a SQLAlchemy URL), and its
    driver: ``postgresql+psycopg://…`` becomes the libpq URI ``postgresql://…`` (the
    query string passes through: libpq takes the same parameters), ``sqlite:///path``
    the file SQLAlchemy would open."""
    scheme, sep, rest = url.partition("://")
    driver = _DRIVERS.get(scheme.split("+", 1)[0]) if sep else None
    if driver is None:
        raise ApiError(f"DIALER_DATABASE_URL: no status reader for {scheme!r} URLs")
    return driver.connect(rest), driver


def decode_json(value: Any) -> Any:
    """JSON columns: parsed by psycopg (jsonb), text on SQLite."""
    return json.loads(value) if isinstance(value, str | bytes) else value
