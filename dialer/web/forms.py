"""The console's forms: the CSRF-checked action wrapper, bounded form fields and
uploads, and the create and update forms built from ``dialer.api``'s own signatures, so
every option the CLI has is on the page (a file option is an upload, never a path)."""

from __future__ import annotations

import csv
import inspect
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from dialer import api
from dialer.web import auth

_CREATE_SPECIAL = {"name", "from_number", "contacts", "dnc", "progress"}
_LABELS = {"from_number": "from", "tag_fields": "tag-field"}


def form_action(
    handler: Callable[[Request, FormData], Awaitable[Response]], *, files: int = 0
) -> Callable[[Request], Awaitable[Response]]:
    """A state-changing route: its form parsed with bounds (the body as a whole is
    bounded by the gate), run only with the request's CSRF token."""

    async def endpoint(request: Request) -> Response:
        form = await request.form(max_files=files, max_fields=64, max_part_size=64 * 1024)
        try:
            identity: auth.Identity | None = request.state.identity
            token = form.get(auth.CSRF_FIELD)
            ok = getattr(request.state, "csrf_header", False) or (
                identity is not None and isinstance(token, str) and auth.csrf_ok(identity, token)
            )
            if not ok:
                raise HTTPException(
                    403, "The CSRF token is missing or wrong: reload the page and try again."
                )
            return await handler(request, form)
        finally:
            await form.close()

    endpoint.csrf_protected = True  # type: ignore[attr-defined]
    return endpoint


def text_field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def int_field(value: Any, default: int) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


def region_field(value: str | None) -> str:
    value = (value or "US").strip().upper()
    return value if re.fullmatch(r"[A-Z]{2}", value) else "US"


def safe_next(target: str | None) -> str:
    """Only a path of this site: never another host (``//evil``, ``/\\evil``)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


async def keep_upload(upload: UploadFile, suffix: str) -> Path:
    """The uploaded file (spooled by the form parser) copied to a named temporary file,
    off the event loop."""
    import shutil

    fd, name = tempfile.mkstemp(prefix="dialer-upload-", suffix=suffix)

    def copy() -> None:
        upload.file.seek(0)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)

    try:
        await run_in_threadpool(copy)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def one_number_csv(e164: str) -> Path:
    fd, name = tempfile.mkstemp(prefix="dialer-dnc-", suffix=".csv")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["phone"], [e164]])
    return Path(name)


@dataclass(frozen=True)
class Field:
    """One option of a form, from the API function's signature."""

    name: str
    flag: str  # the CLI's spelling, --max-attempts
    kind: str  # text | int | float | bool | list
    default: Any
    value: Any = None


def annotation_kind(annotation: Any) -> str:
    text = (
        annotation
        if isinstance(annotation, str)
        else getattr(annotation, "__name__", str(annotation))
    )
    if "Path" in text:
        return "file"  # uploaded: never a path on the console's machine
    if "bool" in text:
        return "bool"
    if "Iterable" in text or "list" in text:
        return "list"
    if "float" in text:
        return "float"
    if "int" in text:
        return "int"
    return "text"


def option_flag(name: str) -> str:
    return "--" + _LABELS.get(name, name).replace("_", "-")


def create_fields(values: dict[str, str]) -> list[Field]:
    """Every keyword option of ``api.create_campaign``, as the CLI has them: what the
    API learns, the form offers."""
    out = []
    for p in inspect.signature(api.create_campaign).parameters.values():
        if p.kind != p.KEYWORD_ONLY or p.name in _CREATE_SPECIAL:
            continue
        kind = annotation_kind(p.annotation)
        default = None if p.default is inspect.Parameter.empty else p.default
        if kind == "list":
            default = ", ".join(default or ())
        out.append(Field(p.name, option_flag(p.name), kind, default, values.get(p.name)))
    return out


def coerce_field(field: Field, raw: str) -> Any:
    if field.kind == "bool":
        return raw.lower() in ("on", "true", "yes", "1")
    if field.kind == "list":
        return [x.strip() for x in re.split(r"[,\n]", raw) if x.strip()]
    try:
        if field.kind == "int":
            return int(raw)
        if field.kind == "float":
            return float(raw)
    except ValueError:
        what = "a whole number" if field.kind == "int" else "a number"
        raise ValueError(f"{field.flag} must be {what}, got {raw!r}") from None
    return raw


def create_options(form: FormData) -> dict[str, Any]:
    """The form's options for ``api.create_campaign``: blank ones left to its defaults."""
    options: dict[str, Any] = {}
    for field in create_fields({}):
        if field.kind == "file":
            continue  # the uploads: kept by ``create``
        raw = text_field(form, field.name)
        if field.kind == "bool":
            if raw:
                options[field.name] = coerce_field(field, raw)
        elif raw:
            value = coerce_field(field, raw)
            if field.kind == "list" and not value:
                continue
            options[field.name] = value
    return options


def update_fields(st: dict[str, Any]) -> list[Field]:
    """What ``update`` can change on a campaign (its rules, its call script, the options
    its calls carry), with the values in force; each typed as ``create_campaign`` takes
    it."""
    from dialer.state import controls

    typed = inspect.signature(api.create_campaign).parameters
    in_force = (st.get("rules") or {}) | (st.get("script") or {})
    names = (
        *api.RULE_FIELDS,
        *getattr(controls, "SCRIPT_FIELDS", ()),
        *getattr(controls, "CALL_OPTION_FIELDS", ()),
    )
    out = []
    for name in dict.fromkeys(names):
        p = typed.get(name)
        kind = annotation_kind(p.annotation) if p is not None else "text"
        out.append(Field(name, option_flag(name), kind, None, shown_value(in_force.get(name))))
    return out


def shown_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def changes_of(form: FormData, st: dict[str, Any]) -> dict[str, Any]:
    """The rules the form changes: a field whose text differs from the rule in force;
    an emptied field removes an optional rule (``update`` says which cannot be)."""
    given: dict[str, Any] = {}
    for field in update_fields(st):
        raw = text_field(form, field.name)
        if field.kind == "bool":
            new = coerce_field(field, raw)
            if new != bool(field.value):
                given[field.name] = new
            continue
        if raw == field.value:
            continue
        given[field.name] = None if raw == "" else coerce_field(field, raw)
    return given
