"""``Queries``: what the state machine and the store ask of a database dialect.

Each method does the same thing on every dialect (the same rows end the same way); an
implementation chooses the statements. Methods take the caller's session and never
commit. PostgreSQL's are tuned for round trips and parse cost (one statement over
arrays, COPY); SQLite's are portable statements the demo runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Table
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.orm import Session

from dialer.store.dialects.drivers import Driver

# record_created_many's rows: (attempt id, contact id, call id, lease_until).
# (attempt id, contact id, call id, lease, the from number it went from)
Created = tuple[int, int, str, datetime, str | None]


class Queries(ABC):
    """One dialect's statements. Stateless: one instance per engine (``dialects.of``)."""

    name: str
    driver: Driver  # the DB-API side, for ``campaign status``

    # ------------------------------------------------------------- the engine

    @abstractmethod
    def create_engine(self, url: str) -> Engine:
        """The process's engine for ``url``, with this dialect's pool and connection set-up."""

    # ------------------------------------------------------ the state machine

    @abstractmethod
    def among(self, column: ColumnElement[Any], values: Sequence[object]) -> ColumnElement[bool]:
        """``column`` is one of ``values`` (``IN``, or ``= ANY(array)``)."""

    @abstractmethod
    def release_due(
        self, session: Session, campaign_id: int, run: int, limit: int, now: datetime
    ) -> list[int]:
        """Up to ``limit`` due pending contacts of the campaign become dialing, each with a
        new queued attempt (its number: the contact's attempts + 1) as its last attempt,
        in due order; contacts another transaction holds are skipped. Returns the new
        attempts' ids, in due order."""

    def release_due_many(
        self, session: Session, wanted: Sequence[tuple[int, int, int]], now: datetime
    ) -> dict[int, list[int]]:
        """``release_due`` for many campaigns: ``wanted`` is (campaign id, run, limit)
        each. Returns the new attempts' ids by campaign (campaigns that released nothing
        left out). This form runs ``release_due`` for each; a dialect may do it at once."""
        made = {cid: self.release_due(session, cid, run, n, now) for cid, run, n in wanted}
        return {cid: ids for cid, ids in made.items() if ids}

    @abstractmethod
    def claim(
        self, session: Session, tags: Mapping[int, str], lease: datetime, now: datetime
    ) -> set[int]:
        """The queued ones of these attempts become sending, each with its tag, under a
        lease (a conditional write: one another claim took is left out). Returns the ids
        moved."""

    @abstractmethod
    def record_created(
        self, session: Session, created: Sequence[Created], now: datetime
    ) -> dict[int, int]:
        """The common case of recording created calls: lock the contacts (id order), then
        each attempt still ours (sending or unknown), without a call id and with no orphan
        event waiting for its call, becomes created with its call id and lease, and its
        contact's attempts count one more. Returns {attempt id: contact id} of those
        recorded; the caller takes the rest the careful way."""

    @abstractmethod
    def insert_events(self, session: Session, rows: list[dict[str, object]]) -> None:
        """Store a batch's ``call_event`` rows. A row's ``raw`` (the JSON text the receiver
        stored, or None) is popped; it may stand in for ``payload``."""

    @abstractmethod
    def write_back(
        self,
        session: Session,
        table: Table,
        columns: tuple[str, ...],
        changed: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    ) -> None:
        """UPDATE rows by primary key. ``changed``: (the row's values, id and every one of
        ``columns`` included; the values that changed) per row."""

    # --------------------------------------------------------------- the store

    @abstractmethod
    def compact_tallies(self, conn: Session | Connection) -> int:
        """Fold the status tallies into one row per key (``dialer.store.tally``); returns
        the rows written back (0 where no tallies are kept)."""

    @abstractmethod
    def limit_statement_time(self, session: Session, milliseconds: int) -> None:
        """Bound the statements of the session's current transaction, where the database
        can (a metrics scrape must never hold a connection for long)."""

    # --------------------------------------------------------- bulk loading

    @abstractmethod
    def bulk_insert(
        self, session: Session, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        """Insert many rows, streamed: each a tuple of ``columns``' values, a JSON column's
        value already as its JSON text (what COPY takes, so no row is encoded twice)."""

    # Whether ``copy_text`` takes rows as PostgreSQL COPY text (else ``bulk_insert`` only).
    takes_copy_text = False

    def copy_text(
        self, session: Session, table: Table, columns: Sequence[str], chunks: Iterable[str]
    ) -> None:
        """Insert rows given as PostgreSQL COPY text (text format: a line a row, fields in
        the order of ``columns``, tab-separated, ``\\N`` for NULL), streamed in chunks of
        whole lines; for a caller that formats big imports itself (importing/copytext.py).
        Only where ``takes_copy_text``."""
        raise NotImplementedError(f"{self.name} takes rows through bulk_insert, not COPY text")

    @abstractmethod
    def insert_ignoring_conflicts(self, table: Any) -> PostgresInsert | SqliteInsert:
        """An INSERT into ``table`` (a model or Table) that skips rows conflicting with any
        unique index (``ON CONFLICT DO NOTHING``, no target)."""

    @abstractmethod
    def analyze(self, session: Session, table_name: str) -> None:
        """Refresh the planner's statistics after a bulk load, where the database keeps any
        worth refreshing."""
