"""The console's two small graphics, as geometry for inline SVG drawn by the templates:
no chart library, no script, nothing the Content-Security-Policy has to allow.

- ``progress``: a campaign's contacts as one stacked bar, by status;
- ``minutes``: calls created per minute (a line) over outcomes per minute (stacked bars).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

# Final outcomes first (what the bar is about), then what is still moving.
PROGRESS_ORDER = (
    "answered",
    "unanswered",
    "failed",
    "invalid",
    "duplicate",
    "suppressed",
    "cancelled",
    "dialing",
    "pending",
)
CHART_OUTCOMES = ("answered", "unanswered", "failed", "cancelled", "suppressed")


class Segment(NamedTuple):
    status: str
    x: float
    width: float
    n: int  # contacts


def progress(contacts: dict[str, int], width: float = 100.0) -> list[Segment]:
    """Segments of a bar ``width`` wide (viewBox units), by status."""
    total = sum(contacts.values())
    if not total:
        return []
    out, x = [], 0.0
    for status in PROGRESS_ORDER:
        n = contacts.get(status, 0)
        if n:
            w = width * n / total
            out.append(Segment(status, round(x, 3), round(w, 3), n))
            x += w
    return out


def minutes(chart: dict[str, Any], width: int = 600, height: int = 160) -> dict[str, Any]:
    """Bars and a line for ``Activity.chart``'s buckets in a ``width`` x ``height`` box
    (a margin for the labels inside it)."""
    buckets = chart["minutes"]
    left, right, top, bottom = 40, 8, 8, 20
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(
        [b.get("calls", 0) for b in buckets]
        + [sum(b.get(o, 0) for o in CHART_OUTCOMES) for b in buckets]
        + [1]
    )
    peak = _nice(peak)
    step = plot_w / max(len(buckets), 1)
    bars, points = [], []
    for i, bucket in enumerate(buckets):
        x = left + i * step
        y = top + plot_h
        for outcome in CHART_OUTCOMES:
            n = bucket.get(outcome, 0)
            if n:
                h = plot_h * n / peak
                y -= h
                bars.append(
                    {
                        "outcome": outcome,
                        "x": round(x + step * 0.1, 2),
                        "y": round(y, 2),
                        "width": round(step * 0.8, 2),
                        "height": round(h, 2),
                        "count": n,
                        "minute": _hhmm(bucket["minute"]),
                    }
                )
        calls = bucket.get("calls", 0)
        points.append(f"{x + step / 2:.1f},{top + plot_h - plot_h * calls / peak:.1f}")
    total_calls = sum(b.get("calls", 0) for b in buckets)
    return {
        "width": width,
        "height": height,
        "left": left,
        "top": top,
        "bottom": top + plot_h,
        "right": width - right,
        "peak": peak,
        "mid": peak // 2 if peak >= 2 else None,
        "mid_y": top + plot_h / 2,
        "bars": bars,
        "line": " ".join(points),
        "first": _hhmm(buckets[0]["minute"]) if buckets else "",
        "last": _hhmm(buckets[-1]["minute"]) if buckets else "",
        "empty": total_calls == 0 and not bars,
        "since": (
            time.strftime("%H:%M", time.gmtime(chart["since"])) if chart.get("since") else None
        ),
    }


def _nice(n: int) -> int:
    """The smallest of 1, 2, 5 x 10^k at or above ``n``: a round top for the axis."""
    scale = 1
    while True:
        for m in (1, 2, 5):
            if m * scale >= n:
                return m * scale
        scale *= 10


def _hhmm(minute: int) -> str:
    return time.strftime("%H:%M", time.gmtime(minute * 60))
