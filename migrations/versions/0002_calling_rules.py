"""calling rules: contact time zones, window deferral, recurring runs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 17:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        # Campaigns from before this revision have contacts without zones: one key, None
        # (the campaign's --timezone).
        batch_op.add_column(
            sa.Column("zone_keys", _JSON, nullable=False, server_default=sa.text("'[null]'"))
        )
        batch_op.add_column(sa.Column("run", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE campaign SET run = 1 WHERE state <> 'draft'")

    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("zones", sa.Text(), nullable=True))
        batch_op.create_index(
            "ix_contact_zone_due",
            ["campaign_id", "zones", "due_at"],
            unique=False,
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        )

    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run", sa.Integer(), nullable=False, server_default="1"))

    op.create_table(
        "campaign_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("summary", _JSON, nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_campaign_run_campaign_id_campaign"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_run")),
    )
    with op.batch_alter_table("campaign_run", schema=None) as batch_op:
        batch_op.create_index("uq_campaign_run_number", ["campaign_id", "number"], unique=True)
    # Campaigns already started have had their first run.
    op.execute(
        "INSERT INTO campaign_run (campaign_id, number, started_at, finished_at) "
        "SELECT id, 1, COALESCE(started_at, created_at), finished_at FROM campaign "
        "WHERE state <> 'draft'"
    )

    op.create_table(
        "run_contact",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", _BIGID, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contact.id"],
            name=op.f("fk_run_contact_contact_id_contact"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["campaign_run.id"],
            name=op.f("fk_run_contact_run_id_campaign_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "contact_id", name=op.f("pk_run_contact")),
    )


def downgrade() -> None:
    op.drop_table("run_contact")
    with op.batch_alter_table("campaign_run", schema=None) as batch_op:
        batch_op.drop_index("uq_campaign_run_number")
    op.drop_table("campaign_run")
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.drop_column("run")
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_zone_due")
        batch_op.drop_column("zones")
        batch_op.drop_column("ready_at")
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_column("next_run_at")
        batch_op.drop_column("run")
        batch_op.drop_column("zone_keys")
