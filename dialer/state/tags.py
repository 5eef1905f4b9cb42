"""The tag a call carries: the attempt's identity plus the --tag-field context."""

from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)


TAG_LIMIT = 256  # docs/carrier.md: stay at or under 256 characters
RESERVED_TAG_KEYS = frozenset({"attempt", "campaign"})


def build_tag(attempt_id: int, campaign_id: int, context: dict[str, str], fields: list[str]) -> str:
    """The attempt's identity plus the --tag-field context, as compact JSON ≤ 256 chars.

    The identity always fits; context fields are added in the order given while the tag
    stays within the limit, and the ones that do not fit are left out (and logged).
    """
    tag: dict[str, object] = {"attempt": attempt_id, "campaign": campaign_id}
    text = json.dumps(tag, separators=(",", ":"), ensure_ascii=False)
    for name in fields:
        if name not in context:
            continue
        candidate = dict(tag, **{name: context[name]})
        encoded = json.dumps(candidate, separators=(",", ":"), ensure_ascii=False)
        if len(encoded) > TAG_LIMIT:
            log.warning(
                "tag field %r left out of attempt %s: tag would exceed %d characters",
                name,
                attempt_id,
                TAG_LIMIT,
                extra={"attempt": attempt_id, "campaign": campaign_id},
            )
            continue
        tag, text = candidate, encoded
    return text
