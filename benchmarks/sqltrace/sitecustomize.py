"""Counts every SQL statement, transaction and new connection of the process it runs in.

Only for ``throughput.py --trace-sql``: the benchmark puts this directory on the
processes' PYTHONPATH and sets ``DIALER_SQL_TRACE`` to a path prefix; each process that
used the database writes ``PREFIX.<pid>.json`` when it exits. Nothing in the dialer
changes: the listeners are SQLAlchemy's own class-level events.
"""

import os

if os.environ.get("DIALER_SQL_TRACE"):
    import atexit
    import collections
    import json
    import threading

    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    _counts: collections.Counter[str] = collections.Counter()
    _lock = threading.Lock()

    def _bump(key: str) -> None:
        with _lock:
            _counts[key] += 1

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        _bump("SQL " + " ".join(statement.split())[:160])

    @event.listens_for(Engine, "commit")
    def _commit(conn):  # type: ignore[no-untyped-def]
        _bump("(commit)")

    @event.listens_for(Engine, "rollback")
    def _rollback(conn):  # type: ignore[no-untyped-def]
        _bump("(rollback)")

    @event.listens_for(Pool, "connect")
    def _connect(dbapi_conn, record):  # type: ignore[no-untyped-def]
        _bump("(new connection)")

    @event.listens_for(Pool, "checkout")
    def _checkout(dbapi_conn, record, proxy):  # type: ignore[no-untyped-def]
        _bump("(pool checkout)")

    @atexit.register
    def _write() -> None:
        if _counts:
            path = f"{os.environ['DIALER_SQL_TRACE']}.{os.getpid()}.json"
            with open(path, "w") as f:
                json.dump(dict(_counts), f)
