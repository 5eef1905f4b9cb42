"""What the database does for a piece of the flow: every statement it ran, and each one's
plan with the rows its scans read, on PostgreSQL.

Development only. ``tests/store/test_plans.py`` runs the tick, a dial batch, an event
batch and the sweep beside tables of tens of thousands of rows and fails when any
statement's scan reads rows that grow with the table; ``benchmarks/plans.py`` runs the
same at ten million rows and writes docs/statements.md. Capturing uses SQLAlchemy's own
``before_cursor_execute`` event, so nothing in the dialer changes for it.

Rows read by a scan are ``(actual rows + rows removed by a filter or a recheck) x loops``
from ``EXPLAIN (ANALYZE)``, which runs the statement: each is explained in a transaction
that is rolled back, after the flow ran, so it sees the tables as the flow left them.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

_DML = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)
_SCANS = {
    "Seq Scan",
    "Index Scan",
    "Index Only Scan",
    "Bitmap Heap Scan",
    "Bitmap Index Scan",
    "Tid Scan",
}


@dataclass
class Statement:
    sql: str
    params: Any
    stage: str
    count: int = 1  # times the stage ran it


@dataclass
class Scan:
    node: str
    table: str | None
    index: str | None
    rows_read: float


@dataclass
class Explained:
    statement: Statement
    plan: dict[str, Any] | None = None  # EXPLAIN (ANALYZE, FORMAT JSON)'s "Plan"
    text: str = ""  # EXPLAIN (ANALYZE, BUFFERS) as text, for the docs
    error: str | None = None
    scans: list[Scan] = field(default_factory=list)

    def read_from(self, table: str) -> float:
        return sum(s.rows_read for s in self.scans if s.table == table)


def normalized(sql: str) -> str:
    return " ".join(sql.split())


class Capture:
    """Collects the distinct DML statements run on ``engine`` while ``stage(name)`` is
    open, with the first parameters each was run with."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: dict[tuple[str, str], Statement] = {}
        self._stage: str | None = None

    def _listen(
        self, conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool
    ) -> None:
        if self._stage is None or not _DML.match(sql):
            return
        key = (self._stage, normalized(sql))
        if key in self.statements:
            self.statements[key].count += 1
            return
        first = params[0] if many and params else params
        self.statements[key] = Statement(sql, first, self._stage)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._stage = name
        event.listen(self.engine, "before_cursor_execute", self._listen)
        try:
            yield
        finally:
            event.remove(self.engine, "before_cursor_execute", self._listen)
            self._stage = None

    def explain_all(self, *, text: bool = False) -> list[Explained]:
        return [explain(self.engine, s, text=text) for s in self.statements.values()]


def explain(engine: Engine, statement: Statement, *, text: bool = False) -> Explained:
    """EXPLAIN ANALYZE ``statement`` with its parameters, in a rolled-back transaction."""
    out = Explained(statement)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        try:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement.sql, statement.params)
            row = cursor.fetchone()
            assert row is not None
            document = row[0]
            plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
            out.plan = plan
            out.scans = list(_scans(plan))
            if text:
                raw.rollback()
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement.sql, statement.params)
                out.text = "\n".join(row[0] for row in cursor.fetchall())
        except Exception as exc:  # e.g. a unique key the flow has since taken
            out.error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        finally:
            raw.rollback()
    finally:
        raw.close()
    return out


def _scans(node: dict[str, Any]) -> Iterator[Scan]:
    if node["Node Type"] in _SCANS and node["Node Type"] != "Bitmap Index Scan":
        loops = node.get("Actual Loops", 1)
        per_loop = (
            node.get("Actual Rows", 0)
            + node.get("Rows Removed by Filter", 0)
            + node.get("Rows Removed by Index Recheck", 0)
        )
        yield Scan(
            node["Node Type"], node.get("Relation Name"), node.get("Index Name"), per_loop * loops
        )
    for child in node.get("Plans", []):
        yield from _scans(child)


def run_flow(capture: Capture, campaign_id: int) -> dict[str, int]:
    """One pass of what the fleet does for a started campaign, each stage captured: a
    dial batch of what it has queued (against the carrier the settings name: the
    simulator), an event batch answering and hanging up those calls, the tick that
    releases the next ones, and the sweep. Returns how many attempts were handled."""
    from sqlalchemy import select

    from dialer import clock
    from dialer.callbacks.eventstream import Entry
    from dialer.store import db
    from dialer.store.models import Attempt, AttemptStatus
    from dialer.worker import applier, dialing, scheduling
    from dialer.worker import sweep as sweeping

    with db.session_scope() as session:
        queued = list(
            session.scalars(
                select(Attempt.id).where(
                    Attempt.campaign_id == campaign_id, Attempt.status == AttemptStatus.QUEUED
                )
            )
        )
    with capture.stage("dial batch"):
        dialing.dial_batch(queued)
    with db.session_scope() as session:
        calls = list(
            session.scalars(
                select(Attempt.call_id).where(Attempt.id.in_(queued), Attempt.call_id.is_not(None))
            )
        )
    entries: list[Entry] = []
    for n, call_id in enumerate(calls):
        for kind, extra in (("answer", {}), ("hangup", {"cause": "NORMAL_CLEARING"})):
            payload = {"eventType": kind, "callId": call_id, **extra}
            entries.append(
                Entry(
                    id=f"{n + 1}-{len(entries)}",
                    payload=json.dumps(payload),
                    received_at=clock.now().isoformat(),
                )
            )
    with capture.stage("event batch"):
        applier.apply_entries(entries)
    # The tick after the calls it released ended, so it releases again (a tick with a
    # full backlog releases nothing and would not show its release statement).
    with capture.stage("tick"):
        scheduling.release_running(clock.now())
    with capture.stage("sweep"):
        sweeping.sweep(clock.now())
    return {"released": len(queued), "created": len(calls), "events": len(entries)}
