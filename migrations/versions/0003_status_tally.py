"""status tally: contacts by status and calls per campaign, kept by triggers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 09:00:00

``campaign status`` reads these sums instead of counting a campaign's contacts and
attempts (dialer/tally.py explains the design). On PostgreSQL the triggers are created
before the backfill, in the migration's transaction: CREATE TRIGGER locks ``contact``
and ``attempt`` against writes until it commits, so every change is counted exactly
once, by the backfill or by a trigger. SQLite gets the tables (one schema for both) but
no triggers: the status counts rows directly there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The zone key is kept for pending contacts only: the calling-window part of the status
# needs no more, and each campaign compacts to ~9 rows plus one per key, not 9 per key.
_ZONES = "CASE WHEN status = 'pending' THEN zones END"


def _function(name: str, body: str) -> str:
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n{body}\n    RETURN NULL;\nEND $$"
    )


_FUNCTIONS = [
    _function(
        "contact_tally_insert",
        f"""
    INSERT INTO contact_tally (campaign_id, status, zones, n)
    SELECT campaign_id, status, {_ZONES}, count(*) FROM new_rows GROUP BY 1, 2, 3;""",
    ),
    # A statement that changes no status (attempts + 1, due_at) nets to nothing: no row.
    _function(
        "contact_tally_update",
        f"""
    INSERT INTO contact_tally (campaign_id, status, zones, n)
    SELECT campaign_id, status, zones, sum(n) FROM (
        SELECT campaign_id, status, {_ZONES} AS zones, -1 AS n FROM old_rows
        UNION ALL
        SELECT campaign_id, status, {_ZONES} AS zones, 1 AS n FROM new_rows
    ) AS d
    GROUP BY 1, 2, 3 HAVING sum(n) <> 0;""",
    ),
    _function(
        "contact_tally_delete",
        f"""
    INSERT INTO contact_tally (campaign_id, status, zones, n)
    SELECT campaign_id, status, {_ZONES}, -count(*) FROM old_rows GROUP BY 1, 2, 3;""",
    ),
    _function("contact_tally_truncate", "    DELETE FROM contact_tally;"),
    _function(
        "call_tally_row",
        """
    IF TG_OP = 'UPDATE' THEN
        IF OLD.call_id IS NOT NULL THEN
            INSERT INTO call_tally (campaign_id, run, n) VALUES (OLD.campaign_id, OLD.run, -1);
        END IF;
    END IF;
    IF NEW.call_id IS NOT NULL THEN
        INSERT INTO call_tally (campaign_id, run, n) VALUES (NEW.campaign_id, NEW.run, 1);
    END IF;""",
    ),
    _function(
        "call_tally_delete",
        """
    INSERT INTO call_tally (campaign_id, run, n)
    SELECT campaign_id, run, -count(*) FROM old_rows WHERE call_id IS NOT NULL GROUP BY 1, 2;""",
    ),
    _function("call_tally_truncate", "    DELETE FROM call_tally;"),
]

# A trigger with transition tables serves one event, hence three on contact.
_TRIGGERS = [
    """CREATE TRIGGER contact_tally_insert AFTER INSERT ON contact
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION contact_tally_insert()""",
    """CREATE TRIGGER contact_tally_update AFTER UPDATE ON contact
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION contact_tally_update()""",
    """CREATE TRIGGER contact_tally_delete AFTER DELETE ON contact
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION contact_tally_delete()""",
    """CREATE TRIGGER contact_tally_truncate AFTER TRUNCATE ON contact
    FOR EACH STATEMENT EXECUTE FUNCTION contact_tally_truncate()""",
    # Row-level, with WHEN: an attempt is updated ~6 times per call, and an UPDATE that
    # does not set call_id (or run, campaign_id) does not even evaluate the WHEN.
    """CREATE TRIGGER call_tally_insert AFTER INSERT ON attempt
    FOR EACH ROW WHEN (NEW.call_id IS NOT NULL) EXECUTE FUNCTION call_tally_row()""",
    """CREATE TRIGGER call_tally_update AFTER UPDATE OF call_id, campaign_id, run ON attempt
    FOR EACH ROW WHEN (
        (OLD.call_id IS NULL) <> (NEW.call_id IS NULL)
        OR (OLD.call_id IS NOT NULL
            AND (OLD.campaign_id, OLD.run) IS DISTINCT FROM (NEW.campaign_id, NEW.run))
    ) EXECUTE FUNCTION call_tally_row()""",
    """CREATE TRIGGER call_tally_delete AFTER DELETE ON attempt
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION call_tally_delete()""",
    """CREATE TRIGGER call_tally_truncate AFTER TRUNCATE ON attempt
    FOR EACH STATEMENT EXECUTE FUNCTION call_tally_truncate()""",
]

_BACKFILL = [
    f"""INSERT INTO contact_tally (campaign_id, status, zones, n)
    SELECT campaign_id, status, {_ZONES}, count(*) FROM contact GROUP BY 1, 2, 3""",
    """INSERT INTO call_tally (campaign_id, run, n)
    SELECT campaign_id, run, count(*) FROM attempt WHERE call_id IS NOT NULL GROUP BY 1, 2""",
]


def upgrade() -> None:
    op.create_table(
        "contact_tally",
        sa.Column("id", _BIGID, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("zones", sa.Text(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_tally")),
    )
    with op.batch_alter_table("contact_tally", schema=None) as batch_op:
        batch_op.create_index("ix_contact_tally_campaign", ["campaign_id"], unique=False)
    op.create_table(
        "call_tally",
        sa.Column("id", _BIGID, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_tally")),
    )
    with op.batch_alter_table("call_tally", schema=None) as batch_op:
        batch_op.create_index("ix_call_tally_campaign", ["campaign_id"], unique=False)

    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in _FUNCTIONS + _TRIGGERS + _BACKFILL:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger, table in [
            ("contact_tally_insert", "contact"),
            ("contact_tally_update", "contact"),
            ("contact_tally_delete", "contact"),
            ("contact_tally_truncate", "contact"),
            ("call_tally_insert", "attempt"),
            ("call_tally_update", "attempt"),
            ("call_tally_delete", "attempt"),
            ("call_tally_truncate", "attempt"),
        ]:
            op.execute(f"DROP TRIGGER {trigger} ON {table}")
        for function in [
            "contact_tally_insert",
            "contact_tally_update",
            "contact_tally_delete",
            "contact_tally_truncate",
            "call_tally_row",
            "call_tally_delete",
            "call_tally_truncate",
        ]:
            op.execute(f"DROP FUNCTION {function}()")
    with op.batch_alter_table("call_tally", schema=None) as batch_op:
        batch_op.drop_index("ix_call_tally_campaign")
    op.drop_table("call_tally")
    with op.batch_alter_table("contact_tally", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_tally_campaign")
    op.drop_table("contact_tally")
