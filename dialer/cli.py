"""``dialer``: argument parsing and printing, nothing else (the work is in dialer.api)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from dialer import logs, settings

FINAL_STATES = ("completed", "cancelled")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dialer", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dbp = sub.add_parser("db", help="database schema")
    dbsub = dbp.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    dbsub.add_parser("upgrade", help="create or migrate the schema (Alembic)")

    camp = sub.add_parser("campaign", help="create and control campaigns")
    csub = camp.add_subparsers(dest="campaign_command", required=True, metavar="ACTION")
    create = csub.add_parser("create", help="create a campaign from a CSV of contacts")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--from", dest="from_number", metavar="E164[,E164...]", help="one number or a pool"
    )
    create.add_argument(
        "--from-file", metavar="FILE.csv", help="caller-id pool: column phone, optional label"
    )
    create.add_argument("--contacts", required=True, metavar="FILE.csv")
    create.add_argument("--json", action="store_true", help="print the report as JSON")
    create.add_argument("--phone-column", default="phone")
    create.add_argument("--region", default="US")
    create.add_argument("--cps", type=float)
    create.add_argument("--max-concurrent", type=int)
    create.add_argument("--max-attempts", type=int, default=3)
    create.add_argument("--retry-delay", type=int, default=600, metavar="SECONDS")
    create.add_argument("--call-timeout", type=int, metavar="SECONDS")
    create.add_argument("--window", metavar="HH:MM-HH:MM")
    create.add_argument("--days", metavar="mon-fri")
    create.add_argument("--timezone", default="UTC", metavar="ZONE")
    create.add_argument("--schedule", metavar="CRON")
    create.add_argument("--dnc", action="append", default=[], metavar="FILE.csv")
    create.add_argument("--tag-field", action="append", default=[], metavar="COLUMN")
    _script_options(create, str, int)
    _call_options(create, update=False)
    upd = csub.add_parser(
        "update",
        help="change a campaign's rules for work not yet sent",
        description="Change a campaign's rules; they apply to work not yet sent. "
        "Give 'none' to remove an optional rule (--window, --days, --cps, "
        "--max-concurrent, --schedule).",
    )
    upd.add_argument("id", type=int)
    upd.add_argument("--json", action="store_true")
    upd.add_argument("--window", type=_or_none(str), metavar="HH:MM-HH:MM")
    upd.add_argument("--days", type=_or_none(str), metavar="mon-fri")
    upd.add_argument("--timezone", metavar="ZONE")
    upd.add_argument("--cps", type=_or_none(float))
    upd.add_argument("--max-concurrent", type=_or_none(int))
    upd.add_argument("--max-attempts", type=int)
    upd.add_argument("--retry-delay", type=int, metavar="SECONDS")
    upd.add_argument("--schedule", type=_or_none(str), metavar="CRON")
    _script_options(upd, _or_none(str), _or_none(int))
    _call_options(upd, update=True)
    for action in ("start", "pause", "resume", "cancel"):
        a = csub.add_parser(action, help=f"{action} a campaign")
        a.add_argument("id", type=int)
        a.add_argument("--json", action="store_true")
    st = csub.add_parser("status", help="a campaign's state and contacts by status")
    st.add_argument("id", type=int)
    st.add_argument("--json", action="store_true")
    st.add_argument("--watch", action="store_true", help="follow it live until it finishes")
    st.add_argument("--run", type=int, help="a finished run of a recurring campaign")
    ex = csub.add_parser("export", help="one CSV row per contact, in file order")
    ex.add_argument("id", type=int)
    ex.add_argument("-o", "--output", metavar="FILE.csv", help="default: standard output")
    ex.add_argument("--run", type=int, help="a finished run of a recurring campaign")
    ex.add_argument(
        "--raw",
        action="store_true",
        help="values exactly as stored: no ' before a value starting with = + - @ "
        "(the default guards a spreadsheet against formulas; docs/interface.md)",
    )
    ls = csub.add_parser("list", help="every campaign")
    ls.add_argument("--json", action="store_true")

    dnc = sub.add_parser("dnc", help="the global do-not-call list")
    dsub = dnc.add_subparsers(dest="dnc_command", required=True, metavar="ACTION")
    for action in ("add", "remove"):
        d = dsub.add_parser(action, help=f"{action} the numbers in a CSV file")
        d.add_argument("file", metavar="FILE.csv")
        d.add_argument("--campaign", type=int, help="a campaign's own list instead")
        d.add_argument("--region", default="US")
        d.add_argument("--json", action="store_true")

    rec = sub.add_parser("receiver", help="serve the carrier's callbacks (uvicorn)")
    rec.add_argument("--host", default="0.0.0.0")
    rec.add_argument("--port", type=int, default=8080)
    rec.add_argument("--workers", type=int, default=2)

    sim = sub.add_parser("simulator", help="a local stand-in for the carrier", add_help=False)
    sim.add_argument("args", nargs=argparse.REMAINDER)

    demo = sub.add_parser("demo", help="a whole campaign on the embedded default, no services")
    demo.add_argument(
        "--web", action="store_true", help="then keep the operator's console up on it until Ctrl-C"
    )

    web = sub.add_parser("web", help="the operator's web console (DIALER_WEB_PASSWORD)")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8000)
    return p


_NONE = object()
# The call script's options (docs/interface.md, "What an answered call hears").
SCRIPT_OPTIONS = (
    "say", "play", "voice", "locale", "gender", "keys", "goodbye", "transfer_to", "max_duration",
)  # fmt: skip


def _script_options(p: argparse.ArgumentParser, text: Any, number: Any) -> None:
    g = p.add_argument_group("call script (what an answered call hears)")
    say = g.add_mutually_exclusive_group()
    say.add_argument("--say", type=text, metavar="TEXT", help="spoken; {column} from the row")
    say.add_argument("--play", type=text, metavar="URL", help="a WAV or MP3 played instead")
    g.add_argument("--voice", type=text, metavar="NAME")
    g.add_argument("--locale", type=text, metavar="L")
    g.add_argument("--gender", type=text, metavar="G")
    g.add_argument("--keys", type=text, metavar='"1=confirmed,9=opt-out"')
    g.add_argument("--goodbye", type=text, metavar="TEXT")
    g.add_argument("--transfer-to", type=text, metavar="E164")
    g.add_argument("--max-duration", type=number, metavar="SECONDS")


# Caller ids and every call's create-call options (docs/interface.md, "Caller ids",
# "Recording and carrier options").
CALL_OPTIONS = (
    "local_presence", "record", "record_format", "record_max", "transcribe", "sip_headers",
    "callback_timeout",
)  # fmt: skip


def _call_options(p: argparse.ArgumentParser, *, update: bool) -> None:
    g = p.add_argument_group("caller ids, recording and carrier options")
    flag: dict[str, Any] = (
        {"action": argparse.BooleanOptionalAction, "default": None}
        if update
        else {"action": "store_true"}
    )
    number = _or_none(int) if update else int
    g.add_argument("--local-presence", help="prefer a pool number in the callee's area", **flag)
    g.add_argument("--record", help="record every call", **flag)
    g.add_argument("--record-format", type=_or_none(str) if update else str, metavar="wav|mp3")
    g.add_argument("--record-max", type=number, metavar="SECONDS")
    g.add_argument("--transcribe", help="transcribe every recording", **flag)
    g.add_argument(
        "--sip-header",
        dest="sip_headers",
        action="append",
        metavar="X-NAME=VALUE",
        help="repeatable, at most 5" + ("; 'none' removes them all" if update else ""),
    )
    g.add_argument("--callback-timeout", type=number, metavar="MS")


def _or_none(kind: Any) -> Any:
    """An option value where 'none' removes the rule."""

    def parse(value: str) -> Any:
        return _NONE if value.strip().lower() in ("none", "off") else kind(value)

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulator"]:  # the simulator parses its own flags
        from dialer.dev import simulator

        return simulator.main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        settings.get()
        logs.configure(level=logging.WARNING)  # DIALER_LOG_FORMAT, secrets redacted
        return _run(args)
    except settings.SettingsError as exc:
        print(f"dialer: configuration: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # ApiError, CampaignStateError, ContactFileError
        print(f"dialer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "db":
        from dialer.store import migrate

        migrate.upgrade()
        print("database is at the latest schema")
        return 0
    if args.command == "receiver":
        from dialer.callbacks import receiver

        receiver.serve(args.host, args.port, workers=args.workers)
        return 0
    if args.command == "demo":
        from dialer.dev import demo

        return demo.main(web=args.web)
    if args.command == "web":
        from dialer.web import app as web

        web.serve(args.host, args.port)
        return 0
    if args.command == "campaign" and args.campaign_command == "status":
        return _status(args)
    if args.command == "campaign" and args.campaign_command in ("start", "resume"):
        return _start(args)
    from dialer import api

    if args.command == "dnc":
        fn = api.add_dnc if args.dnc_command == "add" else api.remove_dnc
        result = fn(args.file, campaign_id=args.campaign, region=args.region.upper())
        _print(result, args.json)
        return 0
    cmd = args.campaign_command
    if cmd == "create":
        return _create(api, args)
    if cmd == "update":
        fields = (*api.RULE_FIELDS, *SCRIPT_OPTIONS, *CALL_OPTIONS)
        given = {n: getattr(args, n) for n in fields if getattr(args, n) is not None}
        if given.get("sip_headers") and [h.lower() for h in given["sip_headers"]] == ["none"]:
            given["sip_headers"] = _NONE
        if not given:
            print("dialer: campaign update: give at least one rule to change", file=sys.stderr)
            return 2
        changes: dict[str, Any] = {k: None if v is _NONE else v for k, v in given.items()}
        result = api.update(args.id, **changes)
        if args.json:
            _print(result, True)
        else:
            changed = ", ".join(result["changed"]) or "nothing (same values)"
            print(f"campaign {result['id']} updated: {changed}")
        return 0
    if cmd in ("pause", "cancel"):
        _print_state(getattr(api, cmd)(args.id), args.json)
        return 0
    if cmd == "export":
        if args.output:
            n = api.export(args.id, args.output, run=args.run, raw=args.raw)
            print(f"wrote {n} contacts to {args.output}", file=sys.stderr)
        else:
            api.export(args.id, sys.stdout, run=args.run, raw=args.raw)
        return 0
    if cmd == "list":
        rows = api.list_campaigns()
        if args.json:
            _print(rows, True)
        else:
            for r in rows:
                print(f"{r['id']:>6}  {r['state']:<10} {r['total']:>9}  {r['name']}")
        return 0
    raise AssertionError(cmd)


def _status(args: argparse.Namespace) -> int:
    """Read with the database driver alone (dialer.store.campaign_status), not dialer.api: no
    SQLAlchemy, models, phonenumbers or Celery to import, so it answers in about the
    interpreter's start-up time."""
    from dialer.store.campaign_status import Reader

    with Reader(settings.get().database_url) as reader:
        if args.watch:
            return _watch(reader.status, args.id, args.json)
        _print_status(reader.status(args.id, run=args.run), args.json)
    return 0


def _start(args: argparse.Namespace) -> int:
    """``start`` and ``resume`` with the database driver alone, not dialer.api (issue 13:
    the first call created within 500 ms of typing the command, the command's own start
    included): the transition (``dialer.state.starting``, the very code ``api.start``
    runs), one message asking the workers to release the first calls now
    (``dialer.worker.nudge``: no Celery), and the status as ``campaign status`` reads it.
    No SQLAlchemy, models, phonenumbers or Celery to import. A nudge that fails is only
    reported: the campaign runs, and the tick releases its work within a second."""
    from dialer import clock
    from dialer.state import starting
    from dialer.store import campaign_status
    from dialer.store.dialects import drivers
    from dialer.worker import nudge

    s = settings.get()
    transition = starting.start if args.campaign_command == "start" else starting.resume
    conn, driver = drivers.connect(s.database_url)
    try:
        transition(conn, driver, args.id, clock.now())
        try:
            nudge.release(s.broker_url, args.id)
        except Exception as exc:  # NudgeFailed says why (never the password)
            logging.getLogger(__name__).warning(
                "could not ask the workers to release work now (%s); the next tick will",
                exc if isinstance(exc, nudge.NudgeFailed) else type(exc).__name__,
                extra={"campaign": args.id},
            )
        result = campaign_status.read(conn, args.id, driver=driver)
    finally:
        conn.close()
    _print_state(result, args.json)
    return 0


def _print_state(result: dict[str, Any], as_json: bool) -> None:
    """What a control command prints: the status with --json, else the state."""
    if as_json:
        _print(result, True)
    else:
        print(f"campaign {result['id']} is {result['state']}")


def _create(api: Any, args: argparse.Namespace) -> int:
    progress, done = _import_progress(quiet=args.json)
    try:
        report = api.create_campaign(
            args.name,
            args.from_number,
            args.contacts,
            phone_column=args.phone_column,
            region=args.region,
            cps=args.cps,
            max_concurrent=args.max_concurrent,
            max_attempts=args.max_attempts,
            retry_delay=args.retry_delay,
            call_timeout=args.call_timeout,
            window=args.window,
            days=args.days,
            timezone=args.timezone,
            schedule=args.schedule,
            dnc=args.dnc,
            tag_fields=args.tag_field,
            progress=progress,
            **{name: getattr(args, name) for name in SCRIPT_OPTIONS},
            from_file=args.from_file,
            **{name: getattr(args, name) for name in CALL_OPTIONS},
        )
    finally:
        done()
    if args.json:
        _print(report, True)
    else:
        print(
            f"campaign {report['id']} created: {report['rows']} rows, "
            f"{report['imported']} to dial, {report['invalid']} invalid, "
            f"{report['duplicate']} duplicate, {report['suppressed']} suppressed"
        )
    return 0


def _import_progress(quiet: bool) -> tuple[Any, Any]:
    """Rows read so far, on stderr: a live counter on a terminal; off one (a log, a
    pipe) a plain line for the first report and then at most one a second, and a last
    one at the end. The import reports every ``PROGRESS_EVERY`` rows, so a small file
    shows nothing. Nothing with --json: a script reading the report wants only that."""
    if quiet:
        return None, lambda: None
    started = time.monotonic()

    def rate(n: int) -> str:
        return f"{n / max(time.monotonic() - started, 1e-6):,.0f} rows/s"

    if not sys.stderr.isatty():
        from dialer.importing.contacts import PROGRESS_EVERY

        last = {"n": 0, "at": 0.0}

        def line(n: int) -> None:
            if n < PROGRESS_EVERY:  # the end of a small file: not worth a line
                return
            now = time.monotonic()
            if last["n"] == 0 or now - last["at"] >= 1.0:
                print(f"importing: {n:,} rows read, {rate(n)}", file=sys.stderr, flush=True)
                last["at"] = now
            last["n"] = n

        def end() -> None:
            if last["n"]:  # a large file: say where it ended
                print(f"importing: {last['n']:,} rows read, done", file=sys.stderr, flush=True)

        return line, end
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(
        SpinnerColumn(),
        TextColumn("importing {task.completed:,} rows {task.fields[rate]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task("import", total=None, rate="")
    bar.start()
    return (lambda n: bar.update(task, completed=n, rate=f"({rate(n)})")), bar.stop


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=None, default=str))
    elif isinstance(data, dict):
        for k, v in data.items():
            print(f"{k}: {v}")
    else:
        print(data)


def _print_status(st: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print(st, True)
        return
    print(
        f"campaign {st['id']} ({st['name']}): {st['state']}"
        + (f" ({st['state_reason']})" if st.get("state_reason") else "")
    )
    run = f"run {st['run']}: " if st.get("run", 1) > 1 or st.get("next_run") else ""
    print(f"  {run}{st['total']} contacts, {st['calls']} calls created")
    for name, count in st["contacts"].items():
        if count:
            print(f"  {name:<11} {count:>9}")
    window = st.get("window") or {}
    if window.get("waiting"):
        opening = window.get("next_opening")
        print(
            f"  {window['waiting']} wait for their calling window"
            + (f"; the next opens at {opening}" if opening else "")
            + (f" ({window['never_opens']} never open)" if window.get("never_opens") else "")
        )
    resend = st.get("resend") or {}
    if resend.get("waiting"):
        print(f"  {resend['waiting']} calls wait to be sent again: {resend['reason']}")
    if st.get("next_run"):
        print(f"  next run at {st['next_run']}")
    script = st.get("script") or {}
    if script:
        print("  script: " + ", ".join(f"{k}={v!r}" for k, v in script.items()))
    responses = st.get("responses") or {}
    if responses:
        print("  responses: " + ", ".join(f"{k} {n}" for k, n in responses.items()))
    callers = st.get("caller_ids") or []
    if len(callers) > 1 or any(c["state"] != "active" for c in callers):
        print(f"  caller ids ({sum(c['state'] == 'active' for c in callers)} active):")
        for c in callers:
            label = f" {c['label']}" if c.get("label") else ""
            gone = f" removed: {c['reason']}" if c["state"] != "active" else ""
            print(f"    {c['number']}{label} {c['calls']:>9} calls{gone}")


def _watch(status: Callable[[int], dict[str, Any]], campaign_id: int, as_json: bool) -> int:
    """Follow a campaign until it is completed or cancelled (Ctrl-C stops watching):
    a live bar with rates on a terminal; off one a plain line every 2 s (a JSON object
    per line with --json)."""
    if as_json or not sys.stdout.isatty():
        last: tuple[int, float] | None = None
        while True:
            st = status(campaign_id)
            if as_json:
                _print(st, True)
            else:
                now = time.monotonic()
                line = f"{time.strftime('%H:%M:%S')} {_watch_line(st)}"
                if last is not None:
                    calls, at = last
                    line += f", {(st['calls'] - calls) / max(now - at, 1e-6):.1f} calls/s"
                last = (st["calls"], now)
                print(line, flush=True)
            if st["state"] in FINAL_STATES:
                return 0
            time.sleep(2)
    from collections import deque

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    st = status(campaign_id)
    with Progress(
        TextColumn("campaign {task.fields[cid]} {task.fields[state]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[calls]} calls"),
        TextColumn("{task.fields[rate]:.1f} calls/s"),
        TextColumn("{task.fields[final_rate]:.1f} final/s"),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task(
            "watch",
            total=st["total"],
            cid=campaign_id,
            state=st["state"],
            calls=st["calls"],
            rate=0.0,
            final_rate=0.0,
        )
        # Rates over the last few seconds: one poll's difference jumps with every tick.
        window = deque([(time.monotonic(), st["calls"], _final(st))], maxlen=6)
        while True:
            st = status(campaign_id)
            window.append((time.monotonic(), st["calls"], _final(st)))
            (t0, calls0, final0), (t1, calls1, final1) = window[0], window[-1]
            rate = (calls1 - calls0) / max(t1 - t0, 1e-6)
            final_rate = (final1 - final0) / max(t1 - t0, 1e-6)
            bar.update(
                task,
                completed=_final(st),
                state=st["state"],
                calls=st["calls"],
                rate=rate,
                final_rate=final_rate,
            )
            if st["state"] in FINAL_STATES:
                break
            time.sleep(1)
    _print_status(st, False)
    return 0


def _final(st: dict[str, Any]) -> int:
    """Contacts with a final status."""
    return int(st["total"] - st["contacts"]["pending"] - st["contacts"]["dialing"])


def _watch_line(st: dict[str, Any]) -> str:
    return f"{st['state']} {_final(st)}/{st['total']} final, {st['calls']} calls"


if __name__ == "__main__":
    sys.exit(main())
