"""Message templates: plain ``{column}`` substitution from a contact's row, nothing more.

``str.format`` would reach attributes and items (``{0.__class__}``, ``{x[0]}``) and run
format specs; here a field is only ever a column name looked up in a dict of strings, so a
template can do nothing but copy text. ``{{`` and ``}}`` stand for literal braces. Text in
any language passes through as it is; characters XML cannot carry (C0 controls other than
tab, newline, carriage return) are replaced with a space when rendered, so no contact's
value can break the document the carrier reads.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass

_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class TemplateError(ValueError):
    """A template that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class Template:
    text: str
    # (literal, column or None), in order.
    parts: tuple[tuple[str, str | None], ...]

    @classmethod
    def parse(cls, text: str, option: str = "--say") -> Template:
        parts: list[tuple[str, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise TemplateError(
                f"{option}: {exc} (write {{{{ and }}}} for literal braces)"
            ) from None
        for literal, field, spec, conversion in parsed:
            if field is None:
                parts.append((literal, None))
                continue
            name = field.strip()
            if not name:
                raise TemplateError(f"{option}: {{}} must name a column, like {{first_name}}")
            if conversion is not None or spec:
                raise TemplateError(
                    f"{option}: {{{field}...}} has a conversion or format; only plain "
                    f"{{column}} is allowed"
                )
            if "." in field or "[" in field:
                raise TemplateError(
                    f"{option}: {{{field}}} is not a plain column name (no attributes or "
                    f"indexes; rename a column with . or [ in it)"
                )
            parts.append((literal, name))
        return cls(text, tuple(parts))

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for _, c in self.parts if c is not None))

    def render(self, context: Mapping[str, str]) -> str:
        out: list[str] = []
        for literal, column in self.parts:
            out.append(literal)
            if column is not None:
                out.append(str(context.get(column, "")))
        return _XML_UNSAFE.sub(" ", "".join(out))
