"""caller-id pools and every create-call option on a campaign

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 04:00:00

``caller_id(campaign_id, e164, label, state active|removed, reason, removed_at)``: the
campaign's pool of ``from`` numbers (docs/interface.md, "Caller ids"); ``campaign.from_number``
stays, the pool's first number, and ``campaign.from_count`` is the number of active ones
(the tick's pace: DIALER_NUMBER_CPS per number).

Campaign: ``record``, ``record_format``, ``record_max``, ``transcribe``, ``sip_headers``,
``callback_timeout``, ``local_presence`` (docs/interface.md, "Recording and carrier
options"). Attempt: ``from_number`` (the pool number that called), ``recording_url``,
``transcript``, ``transcript_url``. Only nullable columns with no default: catalogue
changes on PostgreSQL, no rewrite.

``number_tally(campaign_id, from_number, n)``: calls per pool number, kept by a row-level
trigger on ``attempt`` as ``call_tally`` is (0003, dialer/store/tally.py): +1 when an
attempt has both a call id and a number, so ``status`` reads sums, never the attempts.
SQLite gets the table and counts attempts instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_CAMPAIGN = (
    ("from_count", sa.Integer()),
    ("local_presence", sa.Boolean()),
    ("record", sa.Boolean()),
    ("record_format", sa.String(8)),
    ("record_max", sa.Integer()),
    ("transcribe", sa.Boolean()),
    ("sip_headers", _JSON),
    ("callback_timeout", sa.Integer()),
)
_ATTEMPT = (
    ("from_number", sa.String(32)),
    ("recording_url", sa.Text()),
    ("transcript", sa.Text()),
    ("transcript_url", sa.Text()),
)

_POSTGRESQL = [
    """CREATE FUNCTION number_tally_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.call_id IS NOT NULL AND OLD.from_number IS NOT NULL THEN
        INSERT INTO number_tally (campaign_id, from_number, n)
        VALUES (OLD.campaign_id, OLD.from_number, -1);
    END IF;
    IF NEW.call_id IS NOT NULL AND NEW.from_number IS NOT NULL THEN
        INSERT INTO number_tally (campaign_id, from_number, n)
        VALUES (NEW.campaign_id, NEW.from_number, 1);
    END IF;
    RETURN NULL;
END $$""",
    """CREATE FUNCTION number_tally_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO number_tally (campaign_id, from_number, n)
    SELECT campaign_id, from_number, -count(*) FROM old_rows
    WHERE call_id IS NOT NULL AND from_number IS NOT NULL GROUP BY 1, 2;
    RETURN NULL;
END $$""",
    # Row-level with WHEN, as call_tally: the many other updates of an attempt skip it.
    """CREATE TRIGGER number_tally_insert AFTER INSERT ON attempt
    FOR EACH ROW WHEN (NEW.call_id IS NOT NULL AND NEW.from_number IS NOT NULL)
    EXECUTE FUNCTION number_tally_row()""",
    """CREATE TRIGGER number_tally_update AFTER UPDATE OF call_id, from_number ON attempt
    FOR EACH ROW WHEN (
        OLD.call_id IS DISTINCT FROM NEW.call_id
        OR OLD.from_number IS DISTINCT FROM NEW.from_number
    ) EXECUTE FUNCTION number_tally_row()""",
    """CREATE TRIGGER number_tally_delete AFTER DELETE ON attempt
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION number_tally_delete()""",
]


def upgrade() -> None:
    op.create_table(
        "caller_id",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("e164", sa.String(32), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_caller_id_campaign_id_campaign"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caller_id")),
    )
    with op.batch_alter_table("caller_id") as batch_op:
        batch_op.create_index("uq_caller_id_campaign_e164", ["campaign_id", "e164"], unique=True)
    op.create_table(
        "number_tally",
        sa.Column("id", _BIGID, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("from_number", sa.String(32), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_number_tally")),
    )
    with op.batch_alter_table("number_tally") as batch_op:
        batch_op.create_index("ix_number_tally_campaign", ["campaign_id"], unique=False)
    with op.batch_alter_table("campaign") as batch_op:
        for name, type_ in _CAMPAIGN:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("attempt") as batch_op:
        for name, type_ in _ATTEMPT:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for statement in _POSTGRESQL:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER number_tally_insert ON attempt")
        op.execute("DROP TRIGGER number_tally_update ON attempt")
        op.execute("DROP TRIGGER number_tally_delete ON attempt")
        op.execute("DROP FUNCTION number_tally_row()")
        op.execute("DROP FUNCTION number_tally_delete()")
    with op.batch_alter_table("attempt") as batch_op:
        for name, _ in reversed(_ATTEMPT):
            batch_op.drop_column(name)
    with op.batch_alter_table("campaign") as batch_op:
        for name, _ in reversed(_CAMPAIGN):
            batch_op.drop_column(name)
    with op.batch_alter_table("number_tally") as batch_op:
        batch_op.drop_index("ix_number_tally_campaign")
    op.drop_table("number_tally")
    with op.batch_alter_table("caller_id") as batch_op:
        batch_op.drop_index("uq_caller_id_campaign_e164")
    op.drop_table("caller_id")
