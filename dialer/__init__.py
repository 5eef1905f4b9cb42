"""dialer: an outbound campaign dialer for the Bandwidth Catapult v1 Voice API."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `celery -A dialer` looks up `dialer.app`; importing Celery only then keeps
    # `import dialer` (and the CLI) light.
    if name in ("app", "celery"):
        from dialer.worker.app import app

        return app
    raise AttributeError(name)
