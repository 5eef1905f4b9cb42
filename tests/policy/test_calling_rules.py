"""Calling windows, do-not-call lists, rule changes and recurring runs, through the
real tasks, state machine and PostgreSQL, on a controlled clock (no sleeping).

Friday 27 November 2026 is the test day: New York is UTC-5, Los Angeles UTC-8.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from dialer import api, clock
from dialer.dev.simulator import Simulator
from dialer.state import runs as run_state
from dialer.store import db
from dialer.store.models import (
    Attempt,
    AttemptStatus,
    Campaign,
    CampaignRun,
    CampaignState,
    Contact,
)
from dialer.worker import scheduling, tasks
from tests.factories import (
    LA,
    NY,
    apply_callback,
    at,
    attempt,
    campaign_with,
    dial_all,
    finish_run,
    queued,
    recurring,
)


def contacts(campaign_id: int) -> dict[str, Contact]:
    with db.session_scope() as session:
        rows = session.scalars(select(Contact).where(Contact.campaign_id == campaign_id)).all()
        return {c.e164: c for c in rows}


def statuses(campaign_id: int) -> dict[str, str]:
    return {n: c.status for n, c in contacts(campaign_id).items()}


def dialed(sim: Simulator) -> list[str]:
    return sorted(c["to"] for c in sim.calls())


def test_contacts_outside_their_window_wait_in_the_table_until_it_opens(sim: Simulator) -> None:
    at(2026, 11, 27, 16, 0)  # New York 11:00 (open), Los Angeles 08:00 (shut)
    cid = campaign_with(NY + LA, window="09:00-17:00", days="mon-fri")
    dial_all(scheduling.release(cid))
    assert dialed(sim) == sorted(NY), "only the open zone is dialed"
    la = contacts(cid)
    for n in LA:
        assert la[n].status == "pending"
        assert la[n].due_at == datetime(2026, 11, 27, 17, 0, tzinfo=UTC)  # LA 09:00
        assert la[n].ready_at == datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
    st = api.status(cid)
    assert st["window"] == {
        "waiting": 2,
        "next_opening": "2026-11-27T17:00:00+00:00",
        "never_opens": 0,
    }
    assert scheduling.release(cid) == [], "nothing is released while the window is shut"

    at(2026, 11, 27, 16, 59, 59)
    assert scheduling.release(cid) == []
    at(2026, 11, 27, 17, 0)
    dial_all(scheduling.release(cid))
    assert dialed(sim) == sorted(NY + LA)
    assert api.status(cid)["window"]["waiting"] == 0


def test_the_window_is_checked_again_right_before_sending(sim: Simulator) -> None:
    at(2026, 11, 27, 21, 59, 59)  # New York 16:59:59, a second before closing
    cid = campaign_with(NY[:1], window="09:00-17:00", days="mon-fri")
    [aid] = scheduling.release(cid)
    at(2026, 11, 27, 22, 0, 1)  # the worker gets to it after the window shut
    tasks.dial.run(aid)
    assert sim.calls() == []
    a = attempt(aid)
    assert (a.status, a.error) == (AttemptStatus.WITHDRAWN, "outside calling hours")
    c = contacts(cid)[NY[0]]
    assert (c.status, c.attempts) == ("pending", 0), "a withdrawn attempt does not count"
    assert c.due_at == datetime(2026, 11, 30, 14, 0, tzinfo=UTC)  # Monday 09:00


def test_a_retry_after_hours_waits_for_the_next_day(sim: Simulator) -> None:
    at(2026, 11, 27, 21, 30)  # New York 16:30
    sim.configure(outcome_by_number={NY[0]: ["busy"]})
    cid = campaign_with(NY[:1], window="09:00-17:00", days="mon-fri", retry_delay=1800)
    [aid] = scheduling.release(cid)
    tasks.dial.run(aid)
    call_id = attempt(aid).call_id
    apply_callback({"eventType": "hangup", "callId": call_id, "cause": "USER_BUSY"})
    c = contacts(cid)[NY[0]]
    assert (c.status, c.attempts) == ("pending", 1)
    assert c.due_at == datetime(2026, 11, 30, 14, 0, tzinfo=UTC), "ready 17:00, shut: Monday"
    assert c.ready_at == datetime(2026, 11, 27, 22, 0, tzinfo=UTC)


def test_a_number_added_to_do_not_call_mid_campaign_is_not_called(
    sim: Simulator, tmp_path: Path
) -> None:
    at(2026, 11, 27, 16, 0)
    cid = campaign_with(NY + LA)
    ids = scheduling.release(cid)
    queued_for = {contacts(cid)[n].last_attempt_id: n for n in NY + LA}
    dnc = tmp_path / "dnc.csv"
    dnc.write_text(f"phone\n{NY[1]}\n{LA[0]}\n")
    report = api.add_dnc(dnc)
    assert report["added"] == 2
    dial_all(ids)  # the attempts were queued before the list grew
    assert dialed(sim) == sorted([NY[0], NY[2], LA[1]])
    st = statuses(cid)
    assert st[NY[1]] == st[LA[0]] == "suppressed"
    withdrawn = [aid for aid, n in queued_for.items() if n in (NY[1], LA[0])]
    assert {attempt(a).error for a in withdrawn} == {"on the do-not-call list"}
    # A campaign's own list works the same way, for contacts waiting to be dialed.
    other = campaign_with(["+13125550001", "+13125550002"])
    own = tmp_path / "own.csv"
    own.write_text("phone\n+13125550002\n")
    assert api.add_dnc(own, campaign_id=other)["suppressed_contacts"] == 1
    dial_all(scheduling.release(other))
    assert "+13125550002" not in dialed(sim) and "+13125550001" in dialed(sim)
    # Taken off the list, a number can be called again in later campaigns.
    assert api.remove_dnc(dnc)["removed"] == 2


def test_widening_the_window_releases_waiting_contacts(sim: Simulator) -> None:
    at(2026, 11, 28, 16, 0)  # Saturday
    cid = campaign_with(NY + LA, window="09:00-17:00", days="mon-fri")
    assert scheduling.release(cid) == []
    assert api.status(cid)["window"]["waiting"] == 5
    result = api.update(cid, days="mon-sat", window="08:00-20:00")
    assert result["changed"] == ["window", "days"]
    scheduling.release(cid)  # (update released them already; a tick finds nothing more)
    dial_all(queued(cid))  # NY 11:00, LA 08:00 Saturday: both open now
    assert dialed(sim) == sorted(NY + LA)


def test_narrowing_the_window_holds_queued_work(sim: Simulator) -> None:
    at(2026, 11, 27, 16, 0)
    cid = campaign_with(NY)
    ids = scheduling.release(cid)
    api.update(cid, window="12:00-13:00")  # New York is at 11:00
    dial_all(ids)
    assert sim.calls() == []
    assert statuses(cid) == dict.fromkeys(NY, "pending")
    assert api.status(cid)["window"]["next_opening"] == "2026-11-27T17:00:00+00:00"


def test_update_changes_retry_and_attempt_rules_for_work_not_yet_sent(sim: Simulator) -> None:
    at(2026, 11, 27, 16, 0)
    sim.configure(outcome_by_number={n: ["busy"] for n in NY})
    cid = campaign_with(NY, retry_delay=3600, max_attempts=3)
    dial_all(scheduling.release(cid))
    for a in sim.calls():
        apply_callback({"eventType": "hangup", "callId": a["id"], "cause": "USER_BUSY"})
    assert {c.due_at for c in contacts(cid).values()} == {clock.now() + timedelta(hours=1)}
    api.update(cid, retry_delay=60)
    assert {c.due_at for c in contacts(cid).values()} == {clock.now() + timedelta(minutes=1)}
    api.update(cid, max_attempts=1, cps=2.5, max_concurrent=4)
    assert statuses(cid) == dict.fromkeys(NY, "unanswered"), "no attempt left"
    st = api.status(cid)
    assert (st["rules"]["cps"], st["rules"]["max_concurrent"]) == (2.5, 4)
    assert api.update(cid, cps=None)["rules"]["cps"] is None


def test_bad_updates_name_the_option_and_change_nothing(sim: Simulator) -> None:
    import pytest

    cid = campaign_with(NY[:1])
    for kw, message in [
        ({"window": "9-5"}, "--window"),
        ({"timezone": "Mars/Olympus"}, "--timezone"),
        ({"schedule": "every day"}, "--schedule"),
        ({"max_attempts": 0}, "--max-attempts"),
        ({"timezone": None}, "--timezone cannot be removed"),
    ]:
        with pytest.raises(api.ApiError, match=message):
            api.update(cid, **kw)
    assert api.status(cid)["rules"]["window"] is None


# ------------------------------------------------------------------ recurring runs


def runs(campaign_id: int) -> list[int]:
    with db.session_scope() as session:
        return list(
            session.scalars(
                select(CampaignRun.number)
                .where(CampaignRun.campaign_id == campaign_id)
                .order_by(CampaignRun.number)
            )
        )


def test_a_schedule_starts_each_run_once_even_with_two_beats(sim: Simulator) -> None:
    at(2026, 11, 27, 14, 30)  # 09:30 in New York
    cid = recurring()
    st = api.status(cid)
    assert st["run"] == 1 and st["next_run"] == "2026-11-27T15:00:00+00:00"
    finish_run(cid)
    at(2026, 11, 27, 14, 59)
    tasks.tick.run()
    assert runs(cid) == [1], "not before its time"

    at(2026, 11, 27, 15, 0, 1)
    barrier = threading.Barrier(2)
    started: list[list[int]] = []

    def beat() -> None:  # two beats' ticks, in two workers, at the same moment
        with db.session_scope() as session:
            barrier.wait()
            started.append(run_state.start_due_runs(session, clock.now()))

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(started) == [[], [cid]]
    tasks.tick.run()  # and a third tick later
    assert runs(cid) == [1, 2]
    st = api.status(cid)
    assert st["state"] == "running" and st["run"] == 2
    assert st["next_run"] == "2026-11-28T15:00:00+00:00"
    again = st["contacts"]["pending"] + st["contacts"]["dialing"]
    assert again == 3, "every good contact is dialed again"
    assert (st["contacts"]["invalid"], st["contacts"]["duplicate"]) == (1, 1)
    past = api.status(cid, run=1)
    assert past["contacts"]["answered"] == 3 and past["finished_at"] is not None


def test_a_beat_outage_starts_one_run_not_one_per_missed_occurrence(sim: Simulator) -> None:
    at(2026, 11, 27, 14, 30)
    cid = recurring()
    finish_run(cid)
    at(2026, 11, 30, 18, 0)  # three occurrences missed
    tasks.tick.run()
    tasks.tick.run()
    assert runs(cid) == [1, 2]
    with db.session_scope() as session:
        run = session.scalars(select(CampaignRun).where(CampaignRun.number == 2)).one()
        assert run.scheduled_for == datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
        assert session.get(Campaign, cid).next_run_at == datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def test_a_run_still_going_at_its_next_occurrence_is_followed_once(sim: Simulator) -> None:
    at(2026, 11, 27, 14, 30)
    cid = recurring()
    at(2026, 11, 29, 16, 0)  # two occurrences pass while run 1 is still dialing
    tasks.tick.run()
    assert runs(cid) == [1]
    finish_run(cid)
    tasks.tick.run()
    assert runs(cid) == [1, 2]


def test_each_run_is_exported_on_its_own(sim: Simulator, tmp_path: Path) -> None:
    import csv

    at(2026, 11, 27, 14, 30)
    cid = recurring()
    dial_all(queued(cid))
    first_calls = {c["to"]: c["id"] for c in sim.calls()}
    for call_id in first_calls.values():
        apply_callback({"eventType": "answer", "callId": call_id})
        apply_callback({"eventType": "hangup", "callId": call_id, "cause": "NORMAL_CLEARING"})
    scheduling.release(cid)
    assert api.status(cid)["state"] == "completed"
    at(2026, 11, 27, 15, 0, 5)
    tasks.tick.run()
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Attempt)) == 6
        assert set(session.scalars(select(Attempt.run))) == {1, 2}
    api.export(cid, tmp_path / "run1.csv", run=1)
    api.export(cid, tmp_path / "run2.csv", run=2)
    one = list(csv.DictReader((tmp_path / "run1.csv").open()))
    two = list(csv.DictReader((tmp_path / "run2.csv").open()))
    assert [r["status"] for r in one] == ["answered"] * 3 + ["invalid", "duplicate"]
    assert {r["e164"]: r["call_id"] for r in one[:3]} == first_calls
    assert [r["status"] for r in two[:3]] == ["dialing"] * 3
    assert not {r["call_id"] for r in two[:3]} & set(first_calls.values())
    with db.session_scope() as session:
        assert session.get(Campaign, cid).state == CampaignState.RUNNING
