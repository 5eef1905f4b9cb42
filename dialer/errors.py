"""The errors a command reports to its user, apart from the modules that raise them, so
the lean paths (``dialer.store.campaign_status``, ``dialer.state.starting``) raise the very
classes ``dialer.api`` exports without importing it (or SQLAlchemy)."""

from __future__ import annotations


class ApiError(ValueError):
    """Bad input or an unknown campaign; the message says what is wrong."""


class CampaignStateError(ValueError):
    """A control that does not apply to the campaign's state (e.g. start a cancelled one)."""
