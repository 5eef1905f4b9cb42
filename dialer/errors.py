"""``ApiError``, apart from ``dialer.api`` so the lean status path
(``dialer.store.campaign_status``) raises the very class ``dialer.api`` exports without
importing it."""

from __future__ import annotations


class ApiError(ValueError):
    """Bad input or an unknown campaign; the message says what is wrong."""
