"""Tables: campaign, contact, attempt, call event, suppression.

Statuses are plain strings checked by the enums of ``dialer.store.enums`` (re-exported here);
only ``dialer.state`` writes them (the state machine, campaign controls included).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# The statuses live in dialer.store.enums, free of SQLAlchemy; re-exported here, where every
# existing import finds them.
from dialer.store.enums import (  # noqa: F401
    FINAL_ATTEMPT,
    FINAL_CONTACT,
    LIVE_ATTEMPT,
    AttemptStatus,
    CampaignState,
    ContactStatus,
    Result,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        # Stored in UTC: SQLite's DATETIME keeps the wall time and drops the zone (as it
        # did when it was stripped here), PostgreSQL's timestamptz keeps the instant.
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = JSON().with_variant(JSONB(), "postgresql")
# SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Campaign(Base):
    __tablename__ = "campaign"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    from_number: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default=CampaignState.DRAFT)
    state_reason: Mapped[str | None] = mapped_column(Text)
    region: Mapped[str] = mapped_column(String(2), default="US")
    phone_column: Mapped[str] = mapped_column(String(200), default="phone")
    columns: Mapped[list[str]] = mapped_column(Json, default=list)
    tag_fields: Mapped[list[str]] = mapped_column(Json, default=list)
    cps: Mapped[float | None] = mapped_column(Float)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    retry_delay: Mapped[int] = mapped_column(Integer, default=600)
    call_timeout: Mapped[int | None] = mapped_column(Integer)
    window: Mapped[str | None] = mapped_column(String(11))
    days: Mapped[str | None] = mapped_column(String(40))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    schedule: Mapped[str | None] = mapped_column(String(120))
    # The call script (dialer.script; docs/interface.md, "What an answered call hears").
    # None everywhere: no script, the call is left to the person.
    say: Mapped[str | None] = mapped_column(Text)  # a template: {column} from the contact
    play: Mapped[str | None] = mapped_column(Text)  # or an audio URL
    voice: Mapped[str | None] = mapped_column(String(40))
    locale: Mapped[str | None] = mapped_column(String(10))
    gender: Mapped[str | None] = mapped_column(String(10))
    keys: Mapped[list[list[str]] | None] = mapped_column(Json)  # [[key, label], ...]
    goodbye: Mapped[str | None] = mapped_column(Text)  # a template too
    transfer_to: Mapped[str | None] = mapped_column(String(255))
    max_duration: Mapped[int | None] = mapped_column(Integer)  # seconds after the answer
    # The caller-id pool (CallerId rows; docs/interface.md, "Caller ids"): ``from_number``
    # is its first number, ``from_count`` how many are active (None: one, a campaign from
    # before pools), ``local_presence`` whether the callee's area code picks the number.
    from_count: Mapped[int | None] = mapped_column(Integer)
    local_presence: Mapped[bool | None] = mapped_column(Boolean)
    # Every call's create-call options (docs/interface.md, "Recording and carrier options").
    record: Mapped[bool | None] = mapped_column(Boolean)
    record_format: Mapped[str | None] = mapped_column(String(8))  # wav|mp3
    record_max: Mapped[int | None] = mapped_column(Integer)  # seconds
    transcribe: Mapped[bool | None] = mapped_column(Boolean)
    sip_headers: Mapped[dict[str, str] | None] = mapped_column(Json)  # X-NAME -> value
    callback_timeout: Mapped[int | None] = mapped_column(Integer)  # milliseconds
    # The distinct time-zone keys of its contacts (``Contact.zones``; None for "the
    # campaign's --timezone"): the tick checks the calling window once per key.
    zone_keys: Mapped[list[str | None]] = mapped_column(Json, default=list)
    run: Mapped[int] = mapped_column(Integer, default=0)  # the current run; 0 before start
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # --schedule
    rows: Mapped[int] = mapped_column(Integer, default=0)
    imported: Mapped[int] = mapped_column(Integer, default=0)
    invalid: Mapped[int] = mapped_column(Integer, default=0)
    duplicate: Mapped[int] = mapped_column(Integer, default=0)
    suppressed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Contact(Base):
    __tablename__ = "contact"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # No foreign key: PostgreSQL checked it row by row, 8.5 µs of an import's ~30 µs a
    # row; a trigger on campaign deletes a campaign's contacts instead (migration 0007).
    campaign_id: Mapped[int] = mapped_column(Integer)
    row: Mapped[int] = mapped_column(Integer)  # 1-based data row in the file: export order
    phone: Mapped[str] = mapped_column(Text)  # as given
    e164: Mapped[str | None] = mapped_column(String(255))  # E.164 number or SIP URI
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    context: Mapped[dict[str, str]] = mapped_column(Json, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # calls placed to this person
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When it was ready to dial, if its calling window moved ``due_at`` later: a change
    # of --window, --days or --timezone puts it back to this and decides again.
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    zones: Mapped[str | None] = mapped_column(Text)  # rules.zones_for(e164)
    last_attempt_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("uq_contact_campaign_row", "campaign_id", "row", unique=True),
        # The tick's query: due pending contacts of one campaign, oldest first, in
        # (due_at, id) order. ``id`` is in the index so the scan gives that order and
        # stops at the LIMIT: contacts imported together share a due_at, and without it
        # every pending contact of the campaign was read and sorted each tick (0004).
        Index(
            "ix_contact_due_id",
            "campaign_id",
            "due_at",
            "id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("ix_contact_e164", "e164"),
        # The tick's "is any contact of this campaign being dialed?": the contacts in
        # flight only, so an import (pending rows) never writes to it (migration 0007).
        Index(
            "ix_contact_dialing",
            "campaign_id",
            postgresql_where=text("status = 'dialing'"),
            sqlite_where=text("status = 'dialing'"),
        ),
        # The tick's window check: due pending contacts of one zone whose window is shut.
        Index(
            "ix_contact_zone_due",
            "campaign_id",
            "zones",
            "due_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )


class Attempt(Base):
    __tablename__ = "attempt"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 1 for the first attempt on the contact
    run: Mapped[int] = mapped_column(Integer, default=1)  # the campaign run it belongs to
    status: Mapped[str] = mapped_column(String(16), default=AttemptStatus.QUEUED)
    tag: Mapped[str | None] = mapped_column(Text)  # set when claimed for sending
    call_id: Mapped[str | None] = mapped_column(String(80), unique=True)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)  # carrier push-back
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sends: Mapped[int] = mapped_column(Integer, default=0)  # create requests made
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timed_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hangup_cause: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[str | None] = mapped_column(String(16))
    cause: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    # What the person did with the call script: the label of the key pressed (None: no
    # key, or one not listed) and the keys as given.
    response: Mapped[str | None] = mapped_column(String(64))
    digits: Mapped[str | None] = mapped_column(String(64))
    # When the dialer asked the carrier to hang up (--max-duration), so it asks once.
    hangup_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The pool number the call went from (recorded with the call id), and what the
    # carrier's recording and transcription events said (dialer.state.media).
    from_number: Mapped[str | None] = mapped_column(String(32))
    recording_url: Mapped[str | None] = mapped_column(Text)
    transcript: Mapped[str | None] = mapped_column(Text)
    transcript_url: Mapped[str | None] = mapped_column(Text)  # the whole text, when cut

    __table_args__ = (
        Index("ix_attempt_campaign_status", "campaign_id", "status"),
        Index("ix_attempt_status_lease", "status", "lease_until"),
        Index("ix_attempt_contact", "contact_id"),
    )


class CallEvent(Base):
    """Every authenticated, well-formed callback as received, applied or not."""

    __tablename__ = "call_event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    attempt_id: Mapped[int | None] = mapped_column(BigInteger)
    call_id: Mapped[str | None] = mapped_column(String(80))
    event_type: Mapped[str] = mapped_column(String(40))
    event_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disposition: Mapped[str] = mapped_column(String(16))  # applied|repeat|orphan|ignored
    payload: Mapped[dict[str, Any]] = mapped_column(Json)

    __table_args__ = (
        Index("ix_call_event_attempt", "attempt_id"),
        Index("ix_call_event_call", "call_id"),
        Index(
            "ix_call_event_orphan",
            "received_at",
            postgresql_where=text("disposition = 'orphan'"),
            sqlite_where=text("disposition = 'orphan'"),
        ),
    )


class Suppression(Base):
    """A do-not-call entry: global when ``campaign_id`` is NULL."""

    __tablename__ = "suppression"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    e164: Mapped[str] = mapped_column(String(255))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index(
            "uq_suppression_global",
            "e164",
            unique=True,
            postgresql_where=text("campaign_id IS NULL"),
            sqlite_where=text("campaign_id IS NULL"),
        ),
        Index(
            "uq_suppression_campaign",
            "campaign_id",
            "e164",
            unique=True,
            postgresql_where=text("campaign_id IS NOT NULL"),
            sqlite_where=text("campaign_id IS NOT NULL"),
        ),
    )


class CallerId(Base):
    """One ``from`` number of a campaign's pool; ``removed`` when the carrier refused it."""

    __tablename__ = "caller_id"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    e164: Mapped[str] = mapped_column(String(32))
    label: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="active")  # active|removed
    reason: Mapped[str | None] = mapped_column(Text)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("uq_caller_id_campaign_e164", "campaign_id", "e164", unique=True),)


class CampaignRun(Base):
    """One run of a campaign: the first at ``start``, then one per --schedule occurrence."""

    __tablename__ = "campaign_run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: by start
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Contacts by status when it finished, for status and the list of runs.
    summary: Mapped[dict[str, int] | None] = mapped_column(Json)

    __table_args__ = (
        # Two beats, or a beat catching up, can never start the same run twice.
        Index("uq_campaign_run_number", "campaign_id", "number", unique=True),
    )


class RunContact(Base):
    """A contact's outcome in a past run, kept when the next run resets the contact."""

    __tablename__ = "run_contact"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("campaign_run.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("contact.id", ondelete="CASCADE"),
        primary_key=True,
    )
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    last_attempt_id: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(Text)


# The status tallies (contact_tally, call_tally) are tables of this schema too, declared
# beside their upkeep in dialer.store.tally; imported here so Base.metadata holds every table.
from dialer.store import tally as _tally  # noqa: E402, F401
