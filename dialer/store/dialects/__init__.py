"""One place per dialect: what PostgreSQL and SQLite do differently, behind one interface.

    base.py        ``Queries``, the interface: the statements and operations that differ
    postgresql.py  PostgreSQL (production): one statement over arrays, COPY, tallies
    sqlite.py      SQLite (the demo, trials): the same effects in portable statements
    drivers.py     the driver-level part (DB-API, no SQLAlchemy) for ``campaign status``

The pattern of Prefect's ``server/database/query_components.py``: the implementation is
chosen once per engine (``of``: cached by the engine's SQLAlchemy dialect object) and
the rest of the code asks it for the statement it needs; nothing outside this package
asks which database it is on.

This ``__init__`` imports nothing heavy, so ``drivers`` (and with it the lean
``dialer campaign status``) is importable without SQLAlchemy: the implementations are
imported the first time an engine of their dialect is seen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.orm import Session

    from dialer.store.dialects.base import Queries

# One entry per engine (its Dialect object: a Connection shares its Engine's).
_chosen: dict[Any, Queries] = {}


def of(session: Session) -> Queries:
    """The queries for the database this session is bound to."""
    return of_bind(session.get_bind())


def of_bind(bind: Engine | Connection) -> Queries:
    """The queries for an engine or connection (``of`` for code without a session)."""
    queries = _chosen.get(bind.dialect)
    if queries is None:
        queries = _chosen[bind.dialect] = for_name(bind.dialect.name)
    return queries


def for_url(url: str) -> Queries:
    """The queries for a ``DIALER_DATABASE_URL``, before any engine exists (to make one)."""
    return for_name(url.partition(":")[0].split("+", 1)[0])


def for_name(name: str) -> Queries:
    if name in ("postgresql", "postgres"):
        from dialer.store.dialects.postgresql import PostgresQueries

        return PostgresQueries()
    if name == "sqlite":
        from dialer.store.dialects.sqlite import SqliteQueries

        return SqliteQueries()
    raise ValueError(f"no dialect layer for {name!r} databases (PostgreSQL or SQLite)")
