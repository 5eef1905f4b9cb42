"""Message templates: plain {column} substitution and nothing more (dialer.script.template)."""

from __future__ import annotations

import pytest

from dialer.script.template import Template, TemplateError


def test_columns_are_filled_from_the_row_and_braces_can_be_literal() -> None:
    t = Template.parse("Hi {first name}, your {{code}} is {code}.")
    assert t.columns == ("first name", "code")
    assert t.render({"first name": "Zoë", "code": "42"}) == "Hi Zoë, your {code} is 42."


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{0.__class__}", "not a plain column"),
        ("{a[0]}", "not a plain column"),
        ("{a!r}", "conversion or format"),
        ("{a:>10}", "conversion or format"),
        ("{}", "must name a column"),
        ("unbalanced {", "literal braces"),
        ("unbalanced }", "literal braces"),
    ],
)
def test_anything_but_a_plain_column_is_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(TemplateError, match="--say") as info:
        Template.parse(text)
    assert why in str(info.value)


def test_values_cannot_run_code_or_break_the_document() -> None:
    t = Template.parse("{x}")
    # A value that looks like a template is copied, not expanded.
    assert t.render({"x": "{x.__class__}"}) == "{x.__class__}"
    # Characters XML cannot carry become spaces; every language passes through.
    assert t.render({"x": "a\x01b\x0bc"}) == "a b c"
    for text in ("日本語のメッセージ", "مرحبا", "Привет", "👋 hello"):
        assert t.render({"x": text}) == text


def test_a_column_missing_from_a_row_is_empty() -> None:
    assert Template.parse("[{x}]").render({}) == "[]"
