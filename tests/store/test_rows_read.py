"""The statements the fleet runs for every call read a bounded number of rows, however
large the table: each runs on PostgreSQL beside 20,000 rows it must not read, and the
rows its scans read in the test's transaction (``pg_stat_xact_user_tables``: sequential
scan rows plus index fetches) are compared with what it had to touch. A statement whose
plan turns into a scan or a sort of the campaign fails here; the planner's statistics
are refreshed first, as autovacuum keeps them in production.

The first statement caught this way was the tick's release: ``ORDER BY due_at, id`` over
contacts that share one due_at read and sorted every pending contact of the campaign,
each tick, until ``id`` joined the index (migration 0004, issue 13)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from dialer import clock
from dialer.carrier import events
from dialer.state import events as applying
from dialer.state import release
from dialer.store.models import Campaign
from tests.helpers import rows_read

SIZE = 20_000  # rows that must not be read
LIMIT = 100


def big_campaign(session: Session, size: int = SIZE) -> Campaign:
    """A running campaign with ``size`` pending contacts, all due at one moment (as an
    import makes them), and statistics that know it."""
    now = clock.now()
    campaign = Campaign(
        name="big", from_number="+19195550000", state="running", region="US",
        phone_column="phone", columns=[], tag_fields=[], max_attempts=3, retry_delay=600,
        timezone="UTC", run=1, zone_keys=[None], created_at=now, started_at=now,
    )  # fmt: skip
    session.add(campaign)
    session.flush()
    session.execute(
        text(
            'INSERT INTO contact (campaign_id, "row", phone, e164, status, context, attempts,'
            " due_at) SELECT :c, g, '+1212' || lpad(g::text, 7, '0'),"
            " '+1212' || lpad(g::text, 7, '0'), 'pending', '{}', 0, :due"
            " FROM generate_series(1, :n) AS g"
        ),
        {"c": campaign.id, "n": size, "due": now - timedelta(minutes=1)},
    )
    session.execute(text("ANALYZE contact"))  # counts this transaction's own rows
    return campaign


def test_the_ticks_release_reads_only_the_contacts_it_releases(session: Session) -> None:
    campaign = big_campaign(session)
    before = rows_read(session, "contact")
    released = release.release_due(session, campaign, LIMIT, clock.now())
    assert len(released) == LIMIT
    read = rows_read(session, "contact") - before
    # Each released contact is read three times, whatever the campaign's size: by the
    # scan that picks it, by the foreign-key check of its new attempt, and by the UPDATE
    # that points it at that attempt.
    assert read <= 3 * LIMIT, f"release read {read} contact rows to release {LIMIT}"


def test_an_event_batch_reads_only_its_own_attempts(session: Session) -> None:
    campaign = big_campaign(session)
    session.execute(
        text(
            "INSERT INTO attempt (contact_id, campaign_id, number, run, status, call_id,"
            " queued_at, sends, lease_until)"
            " SELECT id, :c, 1, 1, 'created', 'c-' || id, :now, 1, :lease FROM contact"
            " WHERE campaign_id = :c"
        ),
        {"c": campaign.id, "now": clock.now(), "lease": clock.now() + timedelta(minutes=5)},
    )
    session.execute(text("ANALYZE attempt"))
    batch = [
        events.parse({"eventType": "hangup", "callId": call_id, "cause": "USER_BUSY"})
        for call_id in session.scalars(
            text("SELECT call_id FROM attempt WHERE campaign_id = :c ORDER BY id LIMIT 20"),
            {"c": campaign.id},
        )
    ]
    before = {t: rows_read(session, t) for t in ("attempt", "contact")}
    now = clock.now()
    dispositions = applying.apply_events(session, batch, [now] * len(batch), now)
    assert dispositions == ["applied"] * len(batch)
    for table, start in before.items():
        read = rows_read(session, table) - start
        # Found by call id, then locked and read again, then written back: a few reads
        # per event, whatever the table's size.
        assert read <= 5 * len(batch), f"an event batch of {len(batch)} read {read} {table} rows"
