"""``campaign status --json`` on a million-contact campaign: the CLI and the API call.

    python benchmarks/status.py                 # imports the campaign once, then reuses it
    python benchmarks/status.py --rebuild       # import it again (and time that import)

The campaign is imported once, by ``dialer campaign create`` as a user would, into the
database ``dialer_bench_1m`` (the other benchmarks that need a million contacts clone
it), then vacuumed and analysed as autovacuum would leave it. The script times, each
``--repeat`` times, ``dialer campaign status ID --json`` as a subprocess (what a user
waits for: interpreter start and imports included) and ``api.status(ID)`` in this
process (the queries alone), and prints median and max of each, the interpreter's bare
start for scale, and the plan of the counting query.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (  # noqa: E402
    MILLION_DB,
    code_env,
    database_url,
    median,
    million_campaign,
)
from benchmarks.machine import describe, load_average  # noqa: E402


def time_subprocess(argv: list[str], env: dict[str, str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        out.append(time.perf_counter() - started)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--rebuild", action="store_true", help="import the campaign again")
    args = p.parse_args()
    load_at_start = load_average()

    db_name, campaign_id, import_seconds = million_campaign(args.rows, rebuild=args.rebuild)
    url = database_url(db_name)
    env = {**os.environ, "DIALER_DATABASE_URL": url, **code_env()}
    # An installed dialer has its bytecode cached; a sandbox that forbids writing it
    # (PYTHONDONTWRITEBYTECODE) would time compiling the package from source instead.
    nocache = env.pop("PYTHONDONTWRITEBYTECODE", None)

    cli = [sys.executable, "-m", "dialer.cli", "campaign", "status", str(campaign_id), "--json"]
    # The first run writes the bytecode cache and warms PostgreSQL's buffers.
    shown = json.loads(subprocess.run(cli, env=env, check=True, capture_output=True).stdout)
    cli_times = time_subprocess(cli, env, args.repeat)
    bare = time_subprocess([sys.executable, "-c", "pass"], env, args.repeat)
    imports = time_subprocess([sys.executable, "-c", "import dialer.cli, dialer.api"], env, 3)

    os.environ["DIALER_DATABASE_URL"] = url
    from dialer import api, settings

    settings.override(None)
    api.status(campaign_id)  # the first call connects and compiles
    api_times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        api.status(campaign_id)
        api_times.append(time.perf_counter() - started)

    engine = create_engine(url)
    with engine.connect() as conn:
        plan = conn.execute(
            text(
                "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) SELECT status, count(*) FROM contact "
                "WHERE campaign_id = :c GROUP BY status"
            ),
            {"c": campaign_id},
        ).all()
    engine.dispose()

    print(f"status: campaign {campaign_id} in {MILLION_DB}, {shown['total']:,} contacts")
    if import_seconds:
        print(f"import by `dialer campaign create` (this run): {import_seconds:.1f} s")
    print(
        f"`dialer campaign status {campaign_id} --json`: median "
        f"{1000 * median(cli_times):.0f} ms, max {1000 * max(cli_times):.0f} ms "
        f"({args.repeat} runs)"
    )
    print(
        f"api.status({campaign_id}) in process: median {1000 * median(api_times):.0f} ms, "
        f"max {1000 * max(api_times):.0f} ms ({args.repeat} runs)"
    )
    print(
        f"for scale: bare interpreter start {1000 * median(bare):.0f} ms; "
        f"`import dialer.cli, dialer.api` {1000 * median(imports):.0f} ms"
    )
    if nocache:
        print("(PYTHONDONTWRITEBYTECODE was set here; unset for the subprocesses timed)")
    print("plan of the count by status:")
    for (line,) in plan:
        print(f"  {line}")
    print(describe(url, load_at_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
