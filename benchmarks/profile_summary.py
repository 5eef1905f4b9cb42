"""Rank where a py-spy profile's CPU went: by own time, by inclusive time, by library.

    python benchmarks/profile_summary.py /tmp/profiles/worker.txt --rate 200 --calls 5000

Reads py-spy's ``--format raw`` output (collapsed stacks, one ``frame;frame;... count``
per line), recorded with ``--gil`` so each sample is a moment some thread held the GIL,
i.e. ran Python. ``--calls`` turns sample counts into microseconds per call.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")

# Library buckets by the path of a frame's file, first match wins (innermost frame).
BUCKETS = [
    ("dialer", "/dialer/"),
    ("sqlalchemy", "/sqlalchemy/"),
    ("psycopg", "/psycopg"),
    ("celery", "/celery/"),
    ("kombu", "/kombu/"),
    ("redis-py", "/redis/"),
    ("requests", "/requests/"),
    ("urllib3", "/urllib3/"),
    ("gunicorn", "/gunicorn/"),
    ("uvicorn", "/uvicorn/"),
    ("httptools", "/httptools/"),
    ("asyncio", "/asyncio/"),
    ("json", "/json/"),
    ("logging", "/logging/"),
    ("http.client", "/http/"),
    ("socket/ssl", "/socket.py"),
    ("threading/queue", "/threading.py"),
    ("threading/queue", "/queue.py"),
    ("email (http headers)", "/email/"),
]


def _parse(line: str) -> tuple[list[tuple[str, str]], int]:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    frames = []
    for raw in stack.split(";"):
        m = _FRAME.match(raw)
        if m:
            frames.append((m["fn"], m["file"]))
        else:
            frames.append((raw, ""))
    return frames, int(count)


def _short(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def _bucket(frames: list[tuple[str, str]]) -> str:
    # The innermost frame from a known library names the bucket (C code below it counts
    # to whoever called it).
    for _fn, file in reversed(frames):
        for name, marker in BUCKETS:
            if marker in "/" + file:
                return name
    return "other"


def _dialer_entry(frames: list[tuple[str, str]]) -> str:
    """The innermost dialer function on the stack: which step of a call paid."""
    for fn, file in reversed(frames):
        if "/dialer/" in "/" + file:
            return f"{fn} ({_short(file)})"
    return "(no dialer frame: celery/kombu/uvicorn/asyncio plumbing)"


def summarize(path: Path, *, rate: float, calls: float | None = None, top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    entries: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        frames, n = _parse(line)
        frames = [f for f in frames if not f[0].startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        leaf = frames[-1]
        own[f"{leaf[0]} ({_short(leaf[1])})"] += n
        for name in {f"{fn} ({_short(file)})" for fn, file in frames}:
            inclusive[name] += n
        buckets[_bucket(frames)] += n
        entries[_dialer_entry(frames)] += n

    def fmt(n: int) -> str:
        seconds = n / rate
        per = f", {1e6 * seconds / calls:7.0f} us/call" if calls else ""
        return f"{100 * n / max(total, 1):5.1f}%  {seconds:7.2f} s{per}"

    out = [
        f"{path}: {total} samples at {rate:g}/s = {total / rate:.2f} s holding the GIL"
        + (
            f", {1e6 * total / rate / calls:.0f} us per call over {calls:.0f} calls"
            if calls
            else ""
        )
    ]
    out.append("\n== by library (innermost library frame) ==")
    out += [f"{fmt(n)}  {name}" for name, n in buckets.most_common()]
    out.append("\n== by innermost dialer function (the step that paid) ==")
    out += [f"{fmt(n)}  {name}" for name, n in entries.most_common(top)]
    out.append("\n== inclusive (on the stack) ==")
    out += [f"{fmt(n)}  {name}" for name, n in inclusive.most_common(top * 2)]
    out.append("\n== own time (leaf frame) ==")
    out += [f"{fmt(n)}  {name}" for name, n in own.most_common(top)]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path", type=Path)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--calls", type=float)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    print(summarize(args.path, rate=args.rate, calls=args.calls, top=args.top), end="")


if __name__ == "__main__":
    main()
