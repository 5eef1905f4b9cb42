"""What the receiver reads to answer a scripted call's ``answer`` and ``gather``.

The campaign's script is kept for ``TTL`` seconds per process (a ``campaign update``
reaches calls answered after that); the contact's row is read only when a text names a
column, by the attempt id in the call's tag (one primary-key join). Blocking: the receiver
calls it on a thread, off its event loop.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, select

from dialer.carrier.events import MAX_ID, attempt_id_from_tag
from dialer.script import bxml
from dialer.script.spec import FIELDS, Script
from dialer.store import db
from dialer.store.models import Attempt, Campaign, Contact

TTL = 2.0  # seconds a campaign's script is kept


def identity(query: Mapping[str, str]) -> tuple[int | None, int | None]:
    """(attempt id, campaign id) of a callback's query: from our ``attempt``/``campaign``
    parameters (put on the gather's requestUrl), else from the tag."""
    attempt, campaign = query.get("attempt"), query.get("campaign")
    if attempt and attempt.isdigit() and campaign and campaign.isdigit():
        return _in_range(int(attempt), int(campaign))
    tag = query.get("tag")
    attempt_id = attempt_id_from_tag(tag)
    if attempt_id is None:
        return None, None
    try:
        value = json.loads(tag or "").get("campaign")
    except (ValueError, AttributeError):
        return attempt_id, None
    ok = isinstance(value, int) and not isinstance(value, bool)
    return _in_range(attempt_id, value if ok else None)


def _in_range(attempt_id: int, campaign_id: int | None) -> tuple[int | None, int | None]:
    """No ids past their columns (bigint, integer): PostgreSQL refuses such a lookup, and
    the receiver answered a forged callback 503 (the carrier's retry) for ever."""
    if not 0 < attempt_id <= MAX_ID or (campaign_id is not None and not 0 < campaign_id < 2**31):
        return None, None
    return attempt_id, campaign_id


class ScriptSource:
    def __init__(self, engine: Engine | None = None, ttl: float = TTL) -> None:
        self._engine = engine
        self._ttl = ttl
        self._scripts: dict[int, tuple[float, Script | None]] = {}
        self._lock = threading.Lock()

    def _bind(self) -> Engine:
        if self._engine is None:
            self._engine = db.engine()
        return self._engine

    def warm(self) -> None:
        """Open the pool's first connection now (see dialer.callbacks.gate: warm)."""
        from sqlalchemy import text

        with self._bind().connect() as conn:
            conn.execute(text("SELECT 1"))

    def script(self, campaign_id: int) -> Script | None:
        now = time.monotonic()
        hit = self._scripts.get(campaign_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        columns = [Campaign.__table__.c[name] for name in FIELDS]
        with self._bind().connect() as conn:
            row = conn.execute(select(*columns).where(Campaign.id == campaign_id)).first()
        found = Script.of(row) if row is not None else None
        with self._lock:
            if len(self._scripts) > 10_000:
                self._scripts.clear()
            self._scripts[campaign_id] = (now + self._ttl, found)
        return found

    def context(self, attempt_id: int, campaign_id: int) -> dict[str, str] | None:
        with self._bind().connect() as conn:
            row = conn.execute(
                select(Contact.context)
                .join(Attempt, Attempt.contact_id == Contact.id)
                .where(Attempt.id == attempt_id, Attempt.campaign_id == campaign_id)
            ).first()
        return dict(row[0] or {}) if row is not None else None

    def _scripted(self, query: Mapping[str, str]) -> tuple[Script, dict[str, str], int, int] | None:
        attempt_id, campaign_id = identity(query)
        if attempt_id is None or campaign_id is None:
            return None
        script = self.script(campaign_id)
        if script is None or not script.speaks:
            return None
        context: dict[str, str] | None = {}
        if script.columns():
            context = self.context(attempt_id, campaign_id)
            if context is None:
                return None
        assert context is not None
        return script, context, attempt_id, campaign_id

    def document(self, query: Mapping[str, str], callback_url: str) -> bytes | None:
        """The BXML answering a callback GET: for ``answer`` and ``gather``; None for
        other events (a plain 200)."""
        event_type = query.get("eventType")
        if event_type not in ("answer", "gather"):
            return None
        found = self._scripted(query)
        if found is None:
            return bxml.hang_up()
        script, context, attempt_id, campaign_id = found
        if event_type == "answer":
            sep = "&" if "?" in callback_url else "?"
            request_url = f"{callback_url}{sep}attempt={attempt_id}&campaign={campaign_id}"
            tag = _tag(attempt_id, campaign_id)
            return bxml.answer(script, context, request_url, tag)
        key = bxml.pressed(script, query.get("digits"), query.get("terminatingDigit"))
        return bxml.after_gather(script, key, query.get("reason"), context)


def _tag(attempt_id: int, campaign_id: int) -> str:
    return f'{{"attempt":{attempt_id},"campaign":{campaign_id}}}'


def label_of(script: Script, payload: Mapping[str, Any]) -> tuple[str, str | None]:
    """(digits as stored, the label of the key) of a gather event's payload."""
    digits = payload.get("digits")
    terminating = payload.get("terminatingDigit")
    key = bxml.pressed(
        script,
        digits if isinstance(digits, str) else None,
        terminating if isinstance(terminating, str) else None,
    )
    return key[:64], script.labels.get(key)
