"""The database: tables, sessions, migrations, and the reads that must stay cheap.

- ``models``, ``enums``: the tables (SQLAlchemy 2 typed models) and their statuses.
- ``db``: the engine, sessions and publishing after commit.
- ``dialects``: what PostgreSQL and SQLite do differently, one implementation each.
- ``tally``: per-campaign counts kept by PostgreSQL's triggers.
- ``campaign_status``: the status read, with the driver alone (no SQLAlchemy).
- ``export``: the streamed CSV export.
- ``migrate``: ``dialer db upgrade`` (Alembic, ``migrations/``).

Statuses are written only by ``dialer.state``.
"""
