"""Import a generated contacts CSV into PostgreSQL and report rows/s, seconds, peak RSS.

    python benchmarks/import_csv.py [--rows 1000000] [--database-url URL [--fresh]] [--keep-csv PATH]
                                    [--breakdown]

The file has ~2% invalid numbers, ~1% repeats of earlier rows and ~1% of its numbers on a
global do-not-call list, plus three context columns, in mixed spellings. Without
``--database-url`` the local ``dialer_bench`` database is dropped, created and migrated
(``--fresh`` does the same to the one named). The figure is ``import_contacts`` on its
own (CSV generation and the DNC load excluded), with the CPU it took per row in this
process and in the PostgreSQL backend that ran the COPY (``/proc/<pid>/stat``: the
server must be on this machine); peak RSS is the whole process's, generation included
(it streams, so it stays small). ``--breakdown`` then copies the imported rows again with
one thing PostgreSQL does per row taken away at a time (``breakdown``).
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from dialer import clock
from dialer.dev import fleet
from dialer.importing.contacts import import_contacts
from dialer.importing.dnc import add_suppressions
from dialer.store import migrate
from dialer.store.models import Campaign

try:
    from benchmarks.machine import cpu_seconds, describe, load_average
except ImportError:  # run as a script: python benchmarks/import_csv.py
    from machine import cpu_seconds, describe, load_average  # type: ignore[no-redef]

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/dialer_bench"
AREA_CODES = ["212", "312", "415", "617", "702", "919", "984", "305", "206", "512"]


def number(n: int) -> str:
    """A distinct valid US number for each n (exchanges 200-999 of a few area codes)."""
    area = AREA_CODES[n % len(AREA_CODES)]
    n //= len(AREA_CODES)
    return f"{area}{200 + (n // 10_000) % 800}{n % 10_000:04d}"


def spell(digits: str, rng: random.Random) -> str:
    a, b, c = digits[:3], digits[3:6], digits[6:]
    return rng.choice([f"+1{digits}", f"({a}) {b}-{c}", f"{a}-{b}-{c}", digits, f"1 {a} {b} {c}"])


def generate(path: Path, rows: int, seed: int = 1) -> list[str]:
    """Write the CSV; return the numbers that belong on the DNC list."""
    rng = random.Random(seed)
    earlier: list[str] = []  # a sample of earlier numbers to repeat
    dnc: list[str] = []
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["customer_id", "name", "phone", "plan"])
        for n in range(rows):
            roll = rng.random()
            if roll < 0.02:
                phone = rng.choice(["n/a", "555-1212", "123", "call me", "", "+1 123 456 7890"])
            elif roll < 0.03 and earlier:
                phone = spell(rng.choice(earlier), rng)
            else:
                digits = number(n)
                phone = spell(digits, rng)
                if len(earlier) < 10_000:
                    earlier.append(digits)
                elif rng.random() < 0.01:
                    earlier[rng.randrange(len(earlier))] = digits
                if roll < 0.04:
                    dnc.append("+1" + digits)
            out.writerow([f"C{n:08d}", f"Customer {n}", phone, rng.choice(["gold", "basic"])])
    return dnc


def fresh_database(url: str) -> None:
    engine = create_engine(fleet.fresh_database(url))
    migrate.upgrade(engine)
    engine.dispose()


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# The columns a breakdown copies; campaign_id comes from the column's default, set to the
# campaign each variant makes in its own transaction (as `campaign create` does).
_COPIED = "row, phone, e164, status, reason, context, attempts, due_at, zones"

_CONTACT_INDEXES = """
    SELECT i.relname, c.conname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
      LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid
     WHERE x.indrelid = 'contact'::regclass ORDER BY 1
"""
_CONTACT_FK = """
    SELECT conname FROM pg_constraint
     WHERE conrelid = 'contact'::regclass AND confrelid = 'campaign'::regclass AND contype = 'f'
"""


def breakdown(url: str, campaign_id: int, workdir: Path) -> list[tuple[str, float]]:
    """Backend CPU of COPYing the imported contacts again, as they are and with one thing
    PostgreSQL does per row taken away (the foreign key to campaign, the tally trigger,
    each index), each in a transaction rolled back: what each costs an import. Changes
    the schema inside those transactions, so only for a database of its own."""
    data = workdir / "contacts.copy"
    engine = create_engine(url)
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        query = f"SELECT {_COPIED} FROM contact WHERE campaign_id = {int(campaign_id)} ORDER BY row"
        cursor = raw.cursor()  # type: ignore[union-attr]
        with cursor, cursor.copy(f"COPY ({query}) TO STDOUT") as copy, data.open("wb") as f:
            for block in copy:
                f.write(block)
        indexes = conn.execute(text(_CONTACT_INDEXES)).all()
        fk = conn.scalar(text(_CONTACT_FK))
    drop = {
        index: f"ALTER TABLE contact DROP CONSTRAINT {constraint} CASCADE"
        if constraint
        else f"DROP INDEX {index}"
        for index, constraint in indexes
    }
    # contact has no foreign key since migration 0007 (a trigger on campaign deletes
    # its contacts instead); an older schema's is measured too.
    no_fk = [f"ALTER TABLE contact DROP CONSTRAINT {fk}"] if fk else []
    no_tally = "ALTER TABLE contact DISABLE TRIGGER contact_tally_insert"
    variants = [
        ("as it is", []),
        *([(f"without the foreign key {fk}", no_fk)] if fk else []),
        ("without the tally trigger", [no_tally]),
        *((f"without {index}", [statement]) for index, statement in drop.items()),
        ("without all of them (heap, jsonb, WAL only)", [*no_fk, no_tally, *drop.values()]),
    ]
    out = []
    for label, ddl in variants:
        with Session(engine) as session:
            campaign = Campaign(
                name="breakdown", from_number="+19195550000", created_at=clock.now()
            )
            session.add(campaign)
            session.flush()
            for statement in ddl:
                session.execute(text(statement))
            default = f"ALTER TABLE contact ALTER COLUMN campaign_id SET DEFAULT {campaign.id}"
            session.execute(text(default))
            backend = int(session.scalar(text("SELECT pg_backend_pid()")) or 0)
            cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
            before = cpu_seconds(backend)
            statement = f"COPY contact ({_COPIED}) FROM STDIN"
            with cursor, cursor.copy(statement) as copy, data.open("rb") as f:
                while block := f.read(1 << 20):
                    copy.write(block)
            out.append((label, cpu_seconds(backend) - before))
            session.rollback()
    engine.dispose()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", help=f"default: {DEFAULT_URL}, recreated")
    parser.add_argument(
        "--fresh", action="store_true", help="drop, create and migrate --database-url first"
    )
    parser.add_argument("--keep-csv", type=Path, help="write the CSV here and keep it")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="then what the foreign key, the tally trigger and each index cost the COPY",
    )
    args = parser.parse_args(argv)
    if args.breakdown and not (args.database_url is None or args.fresh):
        parser.error("--breakdown changes the schema (rolled back): only with --fresh")

    url = args.database_url or DEFAULT_URL
    load_at_start = load_average()
    if args.database_url is None or args.fresh:
        fresh_database(url)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep_csv or Path(tmp) / "contacts.csv"
        started = time.perf_counter()
        dnc = generate(path, args.rows)
        generated = time.perf_counter() - started
        size_mb = path.stat().st_size / 1e6

        engine = create_engine(url)
        with Session(engine) as session:
            add_suppressions(session, dnc)
            session.commit()
            campaign = Campaign(name="bench", from_number="+19195550000", created_at=clock.now())
            session.add(campaign)
            session.flush()
            backend = int(session.scalar(text("SELECT pg_backend_pid()")) or 0)

            started = time.perf_counter()
            python0, server0 = own_cpu_seconds(), cpu_seconds(backend)
            report = import_contacts(session, campaign, path)
            session.commit()
            seconds = time.perf_counter() - started
            python_cpu = own_cpu_seconds() - python0
            server_cpu = cpu_seconds(backend) - server0
            campaign_id = campaign.id
        engine.dispose()
        costs = breakdown(url, campaign_id, Path(tmp)) if args.breakdown else []

    print(describe(url, load_at_start))
    print(f"file: {args.rows:,} rows, {size_mb:.1f} MB (generated in {generated:.1f} s)")
    print(
        f"report: imported {report.imported:,}, invalid {report.invalid:,}, "
        f"duplicate {report.duplicate:,}, suppressed {report.suppressed:,}"
    )
    print(f"import: {seconds:.2f} s total, {report.rows / seconds:,.0f} rows/s (incl. commit)")
    per_row = 1e6 / max(report.rows, 1)
    print(
        f"per row: {seconds * per_row:.1f} µs wall, CPU {python_cpu * per_row:.1f} µs in Python, "
        f"{server_cpu * per_row:.1f} µs in the PostgreSQL backend"
        + ("" if server_cpu else " (not on this machine?)")
    )
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    if costs:
        print("COPY of the same rows again, PostgreSQL backend CPU (µs per row):")
        whole = costs[0][1]
        for label, cpu in costs:
            print(f"  {label:56s} {cpu * per_row:5.1f}  ({(cpu - whole) * per_row:+5.1f})")


if __name__ == "__main__":
    main()
