"""Every statement the fleet runs for a call reads a bounded number of rows, however
large the tables are. The tick, a dial batch, an event batch and the sweep run for real
(the simulator as the carrier) on a campaign of SIZE pending contacts, beside an earlier
campaign's SIZE contacts, attempts and call events, and do-not-call lists of SIZE
numbers; each statement they ran is then explained with ``EXPLAIN ANALYZE``
(dialer/dev/plans.py), and every scan of the big tables must read at most a few rows
per attempt the stage handled. A plan that turns into a scan of a campaign or of a
table (a dropped index, a predicate the index cannot take, a sort of every pending
contact) reads thousands here and fails: the dial batch's do-not-call check, by
``e164`` alone, read the whole list each batch until it named the lists. docs/statements.md has
the same statements' plans at ten million rows (benchmarks/plans.py)."""

from __future__ import annotations

from sqlalchemy import text

from dialer import api, clock
from dialer.dev.plans import Capture, run_flow
from dialer.dev.simulator import Simulator
from dialer.store import db

SIZE = 20_000
BIG = ("contact", "attempt", "call_event", "run_contact", "suppression")


def fill(campaign_id: int, done_id: int) -> None:
    """SIZE more pending contacts for ``campaign_id``; SIZE ended attempts with their
    events for ``done_id``; SIZE numbers on the global do-not-call list and as many on
    the campaign's own; fresh planner statistics, as autovacuum keeps them."""
    now = clock.now()
    with db.session_scope() as session:
        for cid, offset, status in ((campaign_id, 0, "pending"), (done_id, SIZE, "answered")):
            session.execute(
                text(
                    'INSERT INTO contact (campaign_id, "row", phone, e164, status, context,'
                    " attempts, due_at) SELECT :c, 100 + g, '+1212' || lpad((:o + g)::text, 7, '0'),"
                    " '+1212' || lpad((:o + g)::text, 7, '0'), CAST(:s AS text), '{}', 0,"
                    " CASE WHEN CAST(:s AS text) = 'pending' THEN CAST(:due AS timestamptz) END"
                    " FROM generate_series(1, :n) AS g"
                ),
                {"c": cid, "o": offset, "s": status, "n": SIZE, "due": now},
            )
        session.execute(
            text(
                "INSERT INTO attempt (contact_id, campaign_id, number, run, status, call_id,"
                " queued_at, created_at, ended_at, sends, result)"
                " SELECT id, :c, 1, 1, 'ended', 'old-' || id, :now, :now, :now, 1, 'answered'"
                " FROM contact WHERE campaign_id = :c"
            ),
            {"c": done_id, "now": now},
        )
        session.execute(
            text(
                "INSERT INTO call_event (attempt_id, call_id, event_type, received_at,"
                " applied_at, disposition, payload) SELECT id, call_id, 'hangup', :now, :now,"
                " 'applied', '{}' FROM attempt WHERE campaign_id = :c"
            ),
            {"c": done_id, "now": now},
        )
        session.execute(
            text(
                "INSERT INTO suppression (campaign_id, e164, added_at)"
                " SELECT CASE WHEN g % 2 = 0 THEN NULL ELSE :c END,"
                " '+1646' || lpad(g::text, 7, '0'), :now FROM generate_series(1, :n) AS g"
            ),
            {"c": campaign_id, "n": 2 * SIZE, "now": now},
        )
    with db.engine().connect() as conn:
        conn.execute(text("COMMIT"))
        for table in BIG:
            conn.execute(text(f"ANALYZE {table}"))


def test_no_statement_of_the_flow_reads_rows_that_grow_with_the_tables(sim: Simulator) -> None:
    numbers = [{"phone": f"+1917555{n:04d}"} for n in range(20)]
    done = api.create_campaign("done", "+19195550000", numbers)["id"]
    campaign = api.create_campaign("big", "+19195550000", numbers, cps=40)["id"]
    fill(campaign, done)
    api.start(campaign)

    capture = Capture(db.engine())
    handled = run_flow(capture, campaign)
    assert handled["created"] >= 40 and handled["events"] == 2 * handled["created"]

    explained = capture.explain_all()
    stages = {e.statement.stage for e in explained}
    assert stages == {"tick", "dial batch", "event batch", "sweep"}
    bound = 5 * handled["events"] + 100  # a few rows per attempt, never the table's SIZE
    scanned = 0
    for e in explained:
        assert e.error is None, (e.error, e.statement.sql)
        for scan in e.scans:
            if scan.table in BIG:
                scanned += 1
                assert scan.rows_read <= bound, (scan, e.statement.stage, e.statement.sql)
    # The release statement was among them (a tick with a full backlog runs none).
    assert any("FOR UPDATE SKIP LOCKED" in e.statement.sql for e in explained)
    assert scanned >= 15, "the stages scanned the big tables fewer times than they do"
