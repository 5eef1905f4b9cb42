"""the call script: what an answered call hears, and what the person answered

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 03:00:00

Campaign: ``say`` or ``play``, ``voice``, ``locale``, ``gender``, ``keys``, ``goodbye``,
``transfer_to``, ``max_duration`` (docs/interface.md, "What an answered call hears"), all
NULL for a campaign without a script. Attempt: ``response`` (the label of the key pressed),
``digits`` (the keys), ``hangup_sent_at`` (--max-duration asked the carrier to hang up).
Only nullable columns with no default: on PostgreSQL each is a catalogue change, no rewrite.

``response_tally(campaign_id, run, label, n)``: responses by label, kept by a row-level
trigger on ``attempt`` as ``call_tally`` is (0003, dialer/store/tally.py), so ``status``
reads sums, not a million attempts. SQLite gets the table and counts attempts instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_CAMPAIGN = (
    ("say", sa.Text()),
    ("play", sa.Text()),
    ("voice", sa.String(40)),
    ("locale", sa.String(10)),
    ("gender", sa.String(10)),
    ("keys", _JSON),
    ("goodbye", sa.Text()),
    ("transfer_to", sa.String(255)),
    ("max_duration", sa.Integer()),
)
_ATTEMPT = (
    ("response", sa.String(64)),
    ("digits", sa.String(64)),
    ("hangup_sent_at", sa.DateTime(timezone=True)),
)


_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_POSTGRESQL = [
    """CREATE FUNCTION response_tally_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.response IS NOT NULL THEN
        INSERT INTO response_tally (campaign_id, run, label, n)
        VALUES (OLD.campaign_id, OLD.run, OLD.response, -1);
    END IF;
    IF NEW.response IS NOT NULL THEN
        INSERT INTO response_tally (campaign_id, run, label, n)
        VALUES (NEW.campaign_id, NEW.run, NEW.response, 1);
    END IF;
    RETURN NULL;
END $$""",
    """CREATE FUNCTION response_tally_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO response_tally (campaign_id, run, label, n)
    SELECT campaign_id, run, response, -count(*) FROM old_rows
    WHERE response IS NOT NULL GROUP BY 1, 2, 3;
    RETURN NULL;
END $$""",
    # Row-level with WHEN, as call_tally: the other updates of an attempt skip it.
    """CREATE TRIGGER response_tally_insert AFTER INSERT ON attempt
    FOR EACH ROW WHEN (NEW.response IS NOT NULL) EXECUTE FUNCTION response_tally_row()""",
    """CREATE TRIGGER response_tally_update AFTER UPDATE OF response ON attempt
    FOR EACH ROW WHEN (OLD.response IS DISTINCT FROM NEW.response)
    EXECUTE FUNCTION response_tally_row()""",
    """CREATE TRIGGER response_tally_delete AFTER DELETE ON attempt
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION response_tally_delete()""",
]


def upgrade() -> None:
    op.create_table(
        "response_tally",
        sa.Column("id", _BIGID, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_response_tally")),
    )
    with op.batch_alter_table("response_tally") as batch_op:
        batch_op.create_index("ix_response_tally_campaign", ["campaign_id"], unique=False)
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
        op.execute("DROP TRIGGER response_tally_insert ON attempt")
        op.execute("DROP TRIGGER response_tally_update ON attempt")
        op.execute("DROP TRIGGER response_tally_delete ON attempt")
        op.execute("DROP FUNCTION response_tally_row()")
        op.execute("DROP FUNCTION response_tally_delete()")
    with op.batch_alter_table("attempt") as batch_op:
        for name, _ in reversed(_ATTEMPT):
            batch_op.drop_column(name)
    with op.batch_alter_table("campaign") as batch_op:
        for name, _ in reversed(_CAMPAIGN):
            batch_op.drop_column(name)
    with op.batch_alter_table("response_tally") as batch_op:
        batch_op.drop_index("ix_response_tally_campaign")
    op.drop_table("response_tally")
