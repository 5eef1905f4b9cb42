"""Every statement the tick, a dial batch, an event batch and the sweep run, with its plan
at ten million rows, written to docs/statements.md.

    python benchmarks/plans.py                       # the 10,000,000-contact campaign
    python benchmarks/plans.py --contacts 1000000 --output /tmp/statements.md

It clones big_campaign.py's template database (importing it first if it is not there),
adds an earlier campaign's ``--contacts`` ended attempts and as many call events (so
``attempt`` and ``call_event`` are as big as ``contact``), refreshes the statistics,
starts the campaign, and runs one pass of the flow in this process against the
simulator (dialer/dev/plans.py ``run_flow``). Each statement is then explained with
``EXPLAIN (ANALYZE, BUFFERS)`` in a rolled-back transaction; the document lists them by
stage with the rows each scan read. tests/store/test_plans.py checks the same statements
at 20,000 rows on every CI run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.big_campaign import template  # noqa: E402
from benchmarks.harness import CALLBACK_SECRET, Bench, database_url, log  # noqa: E402
from benchmarks.machine import describe, load_average  # noqa: E402
from dialer.dev.plans import Capture, Explained, normalized, run_flow  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIG = ("contact", "attempt", "call_event")


def bulk_history(url: str, campaign_id: int) -> dict[str, int]:
    """An earlier, finished campaign as big as this one: one ended attempt and one call
    event per contact, then fresh statistics. Rows per table."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        done = conn.scalar(
            text(
                "INSERT INTO campaign (name, from_number, state, region, phone_column, columns,"
                " tag_fields, max_attempts, retry_delay, timezone, run, zone_keys, created_at,"
                " rows, imported, invalid, duplicate, suppressed)"
                " SELECT 'history', from_number, 'completed', region, phone_column, columns,"
                " tag_fields, max_attempts, retry_delay, timezone, 1, zone_keys, created_at,"
                " rows, imported, invalid, duplicate, suppressed"
                " FROM campaign WHERE id = :c RETURNING id"
            ),
            {"c": campaign_id},
        )
        log("adding an ended attempt and a call event per contact (a finished campaign)")
        conn.execute(
            text(
                "INSERT INTO attempt (contact_id, campaign_id, number, run, status, call_id,"
                " queued_at, created_at, ended_at, sends, result)"
                " SELECT id, :d, 1, 1, 'ended', 'old-' || id, now(), now(), now(), 1, 'answered'"
                " FROM contact WHERE campaign_id = :c"
            ),
            {"c": campaign_id, "d": done},
        )
        conn.execute(
            text(
                "INSERT INTO call_event (attempt_id, call_id, event_type, received_at,"
                " applied_at, disposition, payload) SELECT id, call_id, 'hangup', now(), now(),"
                " 'applied', '{}' FROM attempt WHERE campaign_id = :d"
            ),
            {"d": done},
        )
        conn.execute(text("VACUUM ANALYZE"))
        sizes = {
            t: int(conn.scalar(text(f"SELECT count(*) FROM {t}")) or 0)
            for t in ("contact", "attempt", "call_event")
        }
    engine.dispose()
    return sizes


def document(explained: list[Explained], sizes: dict[str, int], handled: dict[str, int]) -> str:
    lines = [
        "# The statements of a call, and their plans at ten million rows",
        "",
        "Written by `python benchmarks/plans.py` (see its docstring); do not edit by hand.",
        "Tables: " + ", ".join(f"`{t}` {n:,} rows" for t, n in sizes.items()) + ".",
        f"The pass handled {handled['released']} released attempts, {handled['created']} calls"
        f" created and {handled['events']} events. Each plan is `EXPLAIN (ANALYZE, BUFFERS)`"
        " of the statement with the parameters the flow ran it with, in a transaction rolled"
        " back after the pass (so an UPDATE may find its rows already moved on).",
        "",
        "Not listed: the event batch's `COPY call_event FROM STDIN` (writes, reads nothing)"
        " and the statements of the tally triggers (they read the transition tables and",
        " update `contact_tally`/`call_tally` rows by index).",
        "",
        "| stage | statement | runs | rows read from contact / attempt / call_event | scans |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n, e in enumerate(explained, 1):
        reads = " / ".join(f"{e.read_from(t):,.0f}" for t in BIG)
        kinds = ", ".join(sorted({f"{s.node} {s.index or s.table}" for s in e.scans}))
        sql = normalized(e.statement.sql)
        lines.append(
            f"| {e.statement.stage} | [{n}](#s{n}) `{sql[:60]}…` | {e.statement.count}"
            f" | {reads} | {kinds} |"
        )
    for n, e in enumerate(explained, 1):
        lines += [
            "",
            f'<a id="s{n}"></a>',
            f"## {n}. {e.statement.stage}",
            "",
            "```sql",
            normalized(e.statement.sql),
            "```",
            "",
            "```",
            e.text if e.error is None else f"(not explained: {e.error})",
            "```",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000_000)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "statements.md")
    args = parser.parse_args(argv)

    load_at_start = load_average()
    name, campaign_id, _ = template(args.contacts, 60, 100.0, False)
    with Bench(f"{name}_plans", template=name) as bench:
        started = time.perf_counter()
        sizes = bulk_history(bench.db_url, campaign_id)
        log(f"history added in {time.perf_counter() - started:.0f} s: {sizes}")
        sim = bench.fleet.start_simulator("--answer-delay", "0.01", "--talk-time", "0.01")

        from dialer import api, settings
        from dialer.store import db
        from dialer.worker import clients

        s = settings.load(
            {
                "DIALER_DATABASE_URL": bench.db_url,
                "DIALER_BROKER_URL": bench.redis.url,
                "DIALER_REDIS_URL": bench.redis.url,
                "CATAPULT_USER_ID": "u-sim",
                "CATAPULT_API_TOKEN": "sim-token",
                "CATAPULT_API_SECRET": "sim-secret",
                "DIALER_CALLBACK_SECRET": CALLBACK_SECRET,
                "DIALER_CALLBACK_URL": "http://127.0.0.1:9/callbacks",
                # The campaign's own --cps (100) paces it, as in big_campaign.py.
                "DIALER_ACCOUNT_CPS": "1000",
                "DIALER_NUMBER_CPS": "1000",
            }
        )
        settings.override(dataclasses.replace(s, catapult_api_url=sim))
        clients.reset_clients()
        api.start(campaign_id)
        capture = Capture(db.engine())
        handled = run_flow(capture, campaign_id)
        explained = capture.explain_all(text=True)
        db.engine().dispose()
    args.output.write_text(document(explained, sizes, handled))
    print(describe(database_url(name), load_at_start))
    print(f"{len(explained)} statements, {handled}; written to {args.output}")
    for e in explained:
        reads = ", ".join(f"{t} {e.read_from(t):,.0f}" for t in BIG if e.read_from(t))
        print(f"  {e.statement.stage:<12} {reads or '-':<40} {normalized(e.statement.sql)[:70]}")


if __name__ == "__main__":
    main()
