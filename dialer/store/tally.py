"""Contacts by status and calls made, per campaign, kept by PostgreSQL itself.

``campaign status`` on a million contacts cannot count them (a ``GROUP BY status`` over
the campaign's contacts costs 50 ms on a quiet table and 200-450 ms on a running one),
so PostgreSQL keeps the counts as it changes the rows (migration 0003):

- ``contact_tally(campaign_id, status, zones, n)``: statement-level AFTER INSERT, UPDATE
  and DELETE triggers on ``contact`` (transition tables) add one row per (campaign,
  status, zones) a statement changed, with the difference: a statement that moves 2,000
  contacts from ``pending`` to ``dialing`` adds a row of -2,000 and one of +2,000
  (per zone key for ``pending``); one that changes no status adds nothing. ``zones`` is
  the contact's time-zone key for ``pending`` contacts, NULL for every other status, so
  the calling-window part of the status is counted here too. ``COPY`` fires the
  INSERT trigger like any insert; ``TRUNCATE contact`` empties the tally.
- ``call_tally(campaign_id, run, n)``: +1 when an attempt gets its call id (row-level,
  ``UPDATE OF call_id`` with a ``WHEN``: the many other updates of an attempt never run
  it), -1 per call when attempts are deleted.
- ``number_tally(campaign_id, from_number, n)``: calls per caller-id pool number, kept
  the same way once an attempt has both a call id and a number (migration 0006).
- ``response_tally(campaign_id, run, label, n)``: the call script's responses by label,
  kept the same way as ``call_tally`` (row-level, ``UPDATE OF response`` with a ``WHEN``;
  migration 0005).

The tables are insert-only: concurrent workers never wait for each other on a counter
row, and a row is committed or rolled back with the change it counts, so the sums are
exact in any snapshot. The sum for a campaign is its count; ``compact`` (called by the
sweep) folds each campaign's rows into one per key. A campaign deleted takes its contacts
and attempts along, their triggers bring its sums to zero, and compaction drops them
(no foreign key: an FK check would take a KEY SHARE lock on the campaign row, which
pause and cancel hold FOR UPDATE while they change contacts).

On SQLite (the demo, trials) the tables exist but stay empty: ``dialer.store.campaign_status``
counts the rows there directly. Whether to compact is the dialect's to say
(``dialer.store.dialects``).
"""

from __future__ import annotations

from sqlalchemy import Column, Connection, Index, Integer, String, Table, Text
from sqlalchemy.orm import Session

from dialer.store import dialects
from dialer.store.models import Base, BigId

contact_tally = Table(
    "contact_tally",
    Base.metadata,
    Column("id", BigId, primary_key=True),
    Column("campaign_id", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("zones", Text),  # the time-zone key of pending contacts; NULL otherwise
    Column("n", Integer, nullable=False),
    Index("ix_contact_tally_campaign", "campaign_id"),
)

call_tally = Table(
    "call_tally",
    Base.metadata,
    Column("id", BigId, primary_key=True),
    Column("campaign_id", Integer, nullable=False),
    Column("run", Integer, nullable=False),
    Column("n", Integer, nullable=False),
    Index("ix_call_tally_campaign", "campaign_id"),
)

response_tally = Table(
    "response_tally",
    Base.metadata,
    Column("id", BigId, primary_key=True),
    Column("campaign_id", Integer, nullable=False),
    Column("run", Integer, nullable=False),
    Column("label", String(64), nullable=False),  # Attempt.response: a key's label
    Column("n", Integer, nullable=False),
    Index("ix_response_tally_campaign", "campaign_id"),
)

number_tally = Table(
    "number_tally",
    Base.metadata,
    Column("id", BigId, primary_key=True),
    Column("campaign_id", Integer, nullable=False),
    Column("from_number", String(32), nullable=False),  # Attempt.from_number: a pool number
    Column("n", Integer, nullable=False),
    Index("ix_number_tally_campaign", "campaign_id"),
)

# PostgreSQL, one statement per table (run by dialects.postgresql): take every row of the campaigns that have more than one
# row for a key, put back their sums (none where it is zero). Rows committed after
# the statement's snapshot are not seen and stay; a row another compaction deleted
# first is skipped. So the sums are the same before and after, whoever runs at once.
COMPACT = {
    "contact_tally": """
        WITH d AS (
            DELETE FROM contact_tally
            WHERE campaign_id IN (
                SELECT campaign_id FROM contact_tally
                GROUP BY campaign_id, status, zones HAVING count(*) > 1
            )
            RETURNING campaign_id, status, zones, n
        )
        INSERT INTO contact_tally (campaign_id, status, zones, n)
        SELECT campaign_id, status, zones, sum(n) FROM d
        GROUP BY campaign_id, status, zones HAVING sum(n) <> 0
    """,
    "call_tally": """
        WITH d AS (
            DELETE FROM call_tally
            WHERE campaign_id IN (
                SELECT campaign_id FROM call_tally
                GROUP BY campaign_id, run HAVING count(*) > 1
            )
            RETURNING campaign_id, run, n
        )
        INSERT INTO call_tally (campaign_id, run, n)
        SELECT campaign_id, run, sum(n) FROM d
        GROUP BY campaign_id, run HAVING sum(n) <> 0
    """,
    "response_tally": """
        WITH d AS (
            DELETE FROM response_tally
            WHERE campaign_id IN (
                SELECT campaign_id FROM response_tally
                GROUP BY campaign_id, run, label HAVING count(*) > 1
            )
            RETURNING campaign_id, run, label, n
        )
        INSERT INTO response_tally (campaign_id, run, label, n)
        SELECT campaign_id, run, label, sum(n) FROM d
        GROUP BY campaign_id, run, label HAVING sum(n) <> 0
    """,
    "number_tally": """
        WITH d AS (
            DELETE FROM number_tally
            WHERE campaign_id IN (
                SELECT campaign_id FROM number_tally
                GROUP BY campaign_id, from_number HAVING count(*) > 1
            )
            RETURNING campaign_id, from_number, n
        )
        INSERT INTO number_tally (campaign_id, from_number, n)
        SELECT campaign_id, from_number, sum(n) FROM d
        GROUP BY campaign_id, from_number HAVING sum(n) <> 0
    """,
}


def compact(conn: Session | Connection) -> int:
    """Fold the tallies into one row per key (the sweep calls this every 10 s).

    ``conn`` is a SQLAlchemy Session or Connection in the caller's transaction; it is
    not committed here. Returns the rows written back; 0 on SQLite (nothing is kept).
    """
    if isinstance(conn, Session):
        return dialects.of(conn).compact_tallies(conn)
    return dialects.of_bind(conn).compact_tallies(conn)
