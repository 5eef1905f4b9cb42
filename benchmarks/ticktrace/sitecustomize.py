"""Records every ``dialer.tick`` a Celery worker runs: start, wall and CPU seconds.

Only for ``big_campaign.py`` (and ``many_campaigns.py``): the benchmark puts this
directory on the fleet's PYTHONPATH and sets ``DIALER_TICK_TRACE`` to a path prefix;
each worker process appends ``start wall cpu`` lines to ``PREFIX.<pid>``, one per tick,
as it finishes. Nothing in the dialer changes: these are Celery's own task signals, and
only worker processes connect them (a CLI command pays nothing).
"""

import os
import sys

if os.environ.get("DIALER_TICK_TRACE") and "worker" in sys.argv:
    import threading
    import time

    from celery import signals

    _started: dict[str, tuple[float, float, float]] = {}
    _lock = threading.Lock()

    @signals.task_prerun.connect
    def _prerun(task_id=None, task=None, **_):  # type: ignore[no-untyped-def]
        if task is not None and task.name == "dialer.tick":
            _started[task_id] = (time.time(), time.perf_counter(), time.thread_time())

    @signals.task_postrun.connect
    def _postrun(task_id=None, task=None, **_):  # type: ignore[no-untyped-def]
        begun = _started.pop(task_id, None)
        if begun is None:
            return
        wall = time.perf_counter() - begun[1]
        cpu = time.thread_time() - begun[2]
        line = f"{begun[0]:.6f} {wall:.6f} {cpu:.6f}\n"
        with _lock, open(f"{os.environ['DIALER_TICK_TRACE']}.{os.getpid()}", "a") as f:
            f.write(line)
