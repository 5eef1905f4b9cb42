"""The console's pages that look a number up: the do-not-call list (find, add, remove,
by number or by file) and a contact's story (every campaign and call of a number, or of
a call id).

Changes go through ``dialer.api`` (``add_dnc``, ``remove_dnc``), as the CLI's ``dnc``
commands do; reads through ``dialer.web.queries``. Numbers are read as the import reads
them (``dialer.importing.numbers.normalize``), so a number typed here is the number a
campaign holds.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from dialer import api
from dialer.web import forms, queries


@dataclass
class NumberPages:
    render: Callable[..., HTMLResponse]  # the console's: a template with the request's identity
    max_upload: int

    def dnc_page(
        self,
        request: Request,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        from dialer.importing.numbers import normalize

        number = (request.query_params.get("number") or "").strip()[:64]
        region = forms.region_field(request.query_params.get("region"))
        found, e164, problem = None, None, None
        if number:
            e164, problem = normalize(number, region)
            found = queries.dnc_find(e164) if e164 else []
        return self.render(
            request, "dnc.html", status,
            number=number, region=region, e164=e164, problem=problem, found=found,
            recent=queries.dnc_recent(), result=result, error=error, limit=self.max_upload,
        )  # fmt: skip

    async def dnc_change(self, request: Request, form: FormData) -> Response:
        """Add or remove one number, or the numbers of an uploaded file."""
        from dialer.importing.numbers import normalize

        action = forms.text_field(form, "action")
        if action not in ("add", "remove"):
            raise HTTPException(400, "action must be add or remove")
        region = forms.region_field(forms.text_field(form, "region"))
        campaign_text = forms.text_field(form, "campaign")
        campaign_id = forms.int_field(campaign_text, 0) or None
        if campaign_text and campaign_id is None:
            return await run_in_threadpool(
                self.dnc_page, request, None, "Campaign must be a campaign id.", 400
            )
        upload = form.get("file")
        if isinstance(upload, UploadFile) and upload.filename:
            path = await forms.keep_upload(upload, ".csv")
        else:
            number = forms.text_field(form, "number")
            e164, problem = normalize(number, region)
            if e164 is None:
                return await run_in_threadpool(
                    self.dnc_page, request, None, f"{number!r} is not a number: {problem}.", 400
                )
            path = await run_in_threadpool(forms.one_number_csv, e164)
        fn = api.add_dnc if action == "add" else api.remove_dnc
        try:
            result = await run_in_threadpool(
                functools.partial(fn, path, campaign_id=campaign_id, region=region)
            )
        except ValueError as exc:
            return await run_in_threadpool(self.dnc_page, request, None, str(exc), 400)
        finally:
            os.unlink(path)
        return await run_in_threadpool(self.dnc_page, request, {"action": action, **result})

    def contact(self, request: Request) -> Response:
        from dialer.importing.numbers import normalize

        number = (request.query_params.get("number") or "").strip()[:255]
        region = forms.region_field(request.query_params.get("region"))
        story, e164, problem = None, None, None
        if number:
            e164, problem = normalize(number, region)
            call_id = (
                number if e164 is None and re.fullmatch(r"[A-Za-z0-9_.:-]{3,80}", number) else None
            )
            story = queries.contact_story(e164, call_id)
        return self.render(
            request,
            "contact.html",
            number=number,
            region=region,
            e164=e164,
            problem=problem,
            story=story,
        )
