"""The tag sent with each call (dialer.state.tags)."""

from __future__ import annotations

import json

from dialer.state import tags


def test_tag_stays_within_256_characters() -> None:
    tag = tags.build_tag(123, 4, {"a": "x" * 100, "b": "y" * 200, "c": "z"}, ["a", "b", "c"])
    decoded = json.loads(tag)
    assert len(tag) <= 256
    assert decoded == {"attempt": 123, "campaign": 4, "a": "x" * 100, "c": "z"}
