"""contact: no foreign key to campaign, no (campaign_id, status) index: imports write less

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 04:30:00

A ten-million-row import is PostgreSQL's work, ~30 µs of backend CPU a row (issue 13,
benchmarks/README.md, "Import"). Of it, measured by removing one thing at a time:

- the foreign key ``contact.campaign_id → campaign``: 8.5 µs a row. PostgreSQL checks it
  per row (a look-up of the campaign with a KEY SHARE lock), for rows whose campaign the
  same transaction has just created;
- ``ix_contact_campaign_status``: ~2-3 µs a row. Pending contacts are found through
  ``ix_contact_due_id`` (its first column is the campaign), a whole campaign through
  ``uq_contact_campaign_row``, the counts come from the tallies; the one statement that
  needed it, the tick's "is any contact of this campaign being dialed?", gets
  ``ix_contact_dialing``, partial on ``status = 'dialing'``: the contacts in flight only,
  which an import (pending rows) never writes to.

Both go. What the foreign key also did, deleting a campaign's contacts with it, a trigger
on ``campaign`` does instead, once per statement on PostgreSQL (once per campaign row on
SQLite). Nothing in the dialer creates a contact for a campaign it has not just created
or read.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_POSTGRESQL_UP = [
    """CREATE FUNCTION campaign_delete_contacts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM contact WHERE campaign_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END $$""",
    """CREATE TRIGGER campaign_delete_contacts AFTER DELETE ON campaign
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION campaign_delete_contacts()""",
]
_SQLITE_UP = """CREATE TRIGGER campaign_delete_contacts AFTER DELETE ON campaign
FOR EACH ROW BEGIN DELETE FROM contact WHERE campaign_id = OLD.id; END"""


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("contact") as batch_op:
        batch_op.drop_constraint("fk_contact_campaign_id_campaign", type_="foreignkey")
        batch_op.drop_index("ix_contact_campaign_status")
        batch_op.create_index(
            "ix_contact_dialing",
            ["campaign_id"],
            postgresql_where=sa.text("status = 'dialing'"),
            sqlite_where=sa.text("status = 'dialing'"),
        )
    if postgresql:
        for statement in _POSTGRESQL_UP:
            op.execute(statement)
    else:
        op.execute(_SQLITE_UP)


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER campaign_delete_contacts"
        + (" ON campaign" if op.get_bind().dialect.name == "postgresql" else "")
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION campaign_delete_contacts()")
    with op.batch_alter_table("contact") as batch_op:
        batch_op.drop_index("ix_contact_dialing")
        batch_op.create_index("ix_contact_campaign_status", ["campaign_id", "status"])
        batch_op.create_foreign_key(
            "fk_contact_campaign_id_campaign",
            "campaign",
            ["campaign_id"],
            ["id"],
            ondelete="CASCADE",
        )
