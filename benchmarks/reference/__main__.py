"""Set up and start the plain design's campaign.

    python -m benchmarks.reference load CONTACTS.csv   # create the table, insert contacts
    python -m benchmarks.reference launch [--cps N]    # one dial_contact per contact

Both read the settings ``app.py`` names from the environment. ``load`` is set-up (one
bulk insert); ``launch`` is the "start" a benchmark measures. With ``--cps`` it sends
the dials at that pace and returns after the last; without, all at once.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from benchmarks.reference.app import Base, Contact, dial_contact, engine


def load(path: str) -> int:
    Base.metadata.create_all(engine())
    with open(path, newline="") as f:
        rows = [{"phone": row["phone"]} for row in csv.DictReader(f)]
    with Session(engine()) as session, session.begin():
        session.execute(insert(Contact), rows)
    return len(rows)


def launch(cps: float) -> int:
    with Session(engine()) as session:
        ids = session.scalars(
            select(Contact.id).where(Contact.status == "pending").order_by(Contact.id)
        ).all()
    started = time.monotonic()
    for n, contact_id in enumerate(ids):
        if cps > 0:
            wait = started + n / cps - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        dial_contact.delay(contact_id)
    return len(ids)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reference")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("load").add_argument("contacts")
    sub.add_parser("launch").add_argument("--cps", type=float, default=0.0)
    args = parser.parse_args()
    if args.command == "load":
        print(f"loaded {load(args.contacts)} contacts")
    else:
        print(f"enqueued {launch(args.cps)} dials")
    return 0


if __name__ == "__main__":
    sys.exit(main())
