"""release in index order: the due-contacts index carries ``id``

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 06:00:00

The tick releases a campaign's due contacts ``ORDER BY due_at, id LIMIT n``. Contacts
imported together share one ``due_at``, and ``ix_contact_due`` (campaign_id, due_at)
could not give the ``id`` order, so PostgreSQL read and sorted every pending contact of
the campaign on every tick: 98 ms for 200,000 pending contacts, 687 ms for 800,000
(issue 13). With ``id`` in the index the scan is in the statement's own order and stops
after ``n`` rows.

On PostgreSQL the index is built inside the migration's transaction, which holds writes
to ``contact`` while it builds (tens of seconds for ten million rows). To avoid that on
a large table, create it first, outside a transaction, with the same definition::

    CREATE INDEX CONCURRENTLY ix_contact_due_id ON contact (campaign_id, due_at, id)
     WHERE status = 'pending';

and this migration only drops the old one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_contact_due_id",
        "contact",
        ["campaign_id", "due_at", "id"],
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
        if_not_exists=True,
    )
    op.drop_index("ix_contact_due", table_name="contact")


def downgrade() -> None:
    op.create_index(
        "ix_contact_due",
        "contact",
        ["campaign_id", "due_at"],
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    )
    op.drop_index("ix_contact_due_id", table_name="contact")
