"""Imports run off the event loop: a campaign created from an uploaded file is a job on a
small thread pool, followed by its page (rows read so far, then the report).

A job holds the uploaded file (a temporary file, removed when the job ends) and the
options, and calls ``api.create_campaign`` exactly as ``dialer campaign create`` does.
Jobs live in this process's memory for ``KEEP_SECONDS`` after they end; the report
itself is kept with the campaign (its page shows it whenever it is opened).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KEEP_SECONDS = 3600.0
WORKERS = 2  # imports at once; more wait their turn


@dataclass
class Job:
    id: str
    name: str
    started: float = field(default_factory=time.time)
    rows_read: int = 0
    state: str = "queued"  # queued | running | done | failed
    report: dict[str, Any] | None = None
    error: str | None = None
    ended: float | None = None
    future: Future[None] | None = field(default=None, repr=False)


class Jobs:
    def __init__(self, workers: int = WORKERS) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="console-import")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, name: str, paths: list[Path], create: Any, kwargs: dict[str, Any]) -> Job:
        """Run ``create(progress=..., **kwargs)``; ``paths`` (the uploads) are removed when
        it ends, whatever happened."""
        job = Job(id=secrets.token_urlsafe(12), name=name)

        def progress(n: int) -> None:
            job.rows_read = n

        def run() -> None:
            job.state = "running"
            try:
                job.report = create(progress=progress, **kwargs)
                job.rows_read = int(job.report.get("rows", job.rows_read))
                job.state = "done"
            except ValueError as exc:  # ApiError, ContactFileError: the user's to fix
                job.error, job.state = str(exc), "failed"
            except Exception as exc:
                log.exception("console: import %s failed", job.id)
                job.error, job.state = f"the import failed ({type(exc).__name__})", "failed"
            finally:
                job.ended = time.time()
                for path in paths:
                    with contextlib.suppress(OSError):
                        os.unlink(path)

        with self._lock:
            self._forget_old()
            self._jobs[job.id] = job
        job.future = self._pool.submit(run)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _forget_old(self) -> None:
        now = time.time()
        for jid in [j.id for j in self._jobs.values() if j.ended and now - j.ended > KEEP_SECONDS]:
            del self._jobs[jid]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
