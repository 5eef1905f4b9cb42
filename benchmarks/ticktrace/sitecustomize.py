"""Measures every ``dialer.tick`` a Celery worker runs: wall time, the thread's CPU, and
the SQL statements (with the wall time from sending each to its result back in the
thread, and the slowest of them), transactions, Redis round trips and messages published
in it.

Only for ``many_campaigns.py`` and ``big_campaign.py``: the benchmark puts this directory on the fleet's
PYTHONPATH and sets ``DIALER_TICK_TRACE`` to a path prefix; each worker process appends
one JSON line per tick to ``PREFIX.<pid>.jsonl``. Nothing in the dialer changes: the
hooks are Celery's task signals, SQLAlchemy's class-level events and a wrapper around
redis-py's one send per round trip, counted per thread so a tick's figures hold only
the tick's own work, whatever the worker's other threads do meanwhile.
"""

import os
import sys

if os.environ.get("DIALER_TICK_TRACE") and "worker" in sys.orig_argv and "celery" in sys.orig_argv:
    import json
    import threading
    import time

    import redis.connection
    from celery.signals import before_task_publish, task_postrun, task_prerun
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    _local = threading.local()
    _write_lock = threading.Lock()
    _path = f"{os.environ['DIALER_TICK_TRACE']}.{os.getpid()}.jsonl"

    def _bump(key: str, n: float = 1) -> None:
        counts = getattr(_local, "counts", None)
        if counts is not None:
            counts[key] = counts.get(key, 0) + n

    @task_prerun.connect
    def _start(task=None, **_):  # type: ignore[no-untyped-def]
        if task is not None and task.name == "dialer.tick":
            _local.counts = {}
            _local.started = (time.time(), time.perf_counter(), time.thread_time())

    @task_postrun.connect
    def _end(task=None, **_):  # type: ignore[no-untyped-def]
        if task is None or task.name != "dialer.tick" or getattr(_local, "counts", None) is None:
            return
        at, wall0, cpu0 = _local.started
        record = {
            "at": at,
            "wall": time.perf_counter() - wall0,
            "cpu": time.thread_time() - cpu0,
            **_local.counts,
        }
        _local.counts = None
        with _write_lock, open(_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        _bump("sql")
        _local.sql_at = time.perf_counter()

    @event.listens_for(Engine, "after_cursor_execute")
    def _rows(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        _bump("rows", max(0, cursor.rowcount or 0))
        # Wall time from sending a statement to its result back in this thread: the
        # server's work, the round trip, and the wait to take the interpreter back.
        spent = time.perf_counter() - getattr(_local, "sql_at", time.perf_counter())
        _bump("sql_wall", spent)
        counts = getattr(_local, "counts", None)
        if counts is not None and spent > counts.get("slowest_sql", 0.0):
            counts["slowest_sql"] = spent
            counts["slowest_sql_text"] = " ".join(statement.split())[:70]

    @event.listens_for(Engine, "commit")
    def _commit(conn):  # type: ignore[no-untyped-def]
        _bump("commits")

    @before_task_publish.connect
    def _published(**_):  # type: ignore[no-untyped-def]
        _bump("published")

    _send = redis.connection.Connection.send_packed_command

    def _counted_send(self, command, check_health=True):  # type: ignore[no-untyped-def]
        _bump("redis")
        return _send(self, command, check_health)

    redis.connection.Connection.send_packed_command = _counted_send  # type: ignore[method-assign]
