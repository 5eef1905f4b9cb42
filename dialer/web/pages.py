"""The console's pages and actions. The pages that look a number up (the do-not-call
list, a contact's story) are ``dialer.web.numbers``.

Reads go through ``dialer.api`` (status, export) and ``dialer.web.queries`` (what the API
has no function for); changes go through ``dialer.api`` alone (start, pause, resume,
cancel, update, create, the do-not-call list), exactly as the CLI calls them. Handlers
that touch the database are plain functions, which Starlette runs on its thread pool:
the event loop only moves bytes. An import runs on ``dialer.web.jobs``' own pool.

Every state-changing route is a ``form_action``: its form is parsed with bounds, and it
runs only with the request's CSRF token (form field or header).

A page's live part (the rows of the campaigns page, the counts and chart of a campaign,
an import's progress) is the same template rendered alone when the URL has
``?part=...``; ``static/console.js`` fetches it every second and swaps it in.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import math
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from dialer import api
from dialer.store.export import safe_cell, safe_phone
from dialer.web import auth, charts, forms, queries
from dialer.web import render as rendering
from dialer.web.activity import Activity
from dialer.web.jobs import Jobs
from dialer.web.numbers import NumberPages

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200  # a live table of more is no page to read (and costs a second a refresh)
FINAL_STATES = ("completed", "cancelled")


@dataclass
class Console:
    authenticator: auth.Authenticator
    activity: Activity
    jobs: Jobs
    max_upload: int

    def __post_init__(self) -> None:
        self.env = rendering.environment()
        self.readers = queries.StatusReaders()
        self._watch: set[int] = set()
        self.started = time.time()
        self._lock = threading.Lock()
        self._not_dialed_cache: dict[tuple[int, Any, int], list[dict[str, Any]]] = {}
        self.numbers = NumberPages(self.render, self.max_upload)

    # ------------------------------------------------------------------ helpers
    def render(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        identity: auth.Identity | None = getattr(request.state, "identity", None)
        html = self.env.get_template(name).render(
            request=request,
            identity=identity,
            csrf=identity.csrf if identity else "",
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    async def http_error(self, request: Request, exc: HTTPException) -> Response:
        detail = exc.detail or "error"
        if "text/html" in request.headers.get("accept", ""):
            return self.render(
                request, "error.html", exc.status_code, code=exc.status_code, detail=detail
            )
        return PlainTextResponse(detail + "\n", status_code=exc.status_code)

    def sample_read(self) -> list[dict[str, Any]]:
        """What the activity sampler reads: the running and paused campaigns, and once
        more each one that was, so its last moves are counted."""
        ids = set(queries.active_ids()) | self._watch
        found = queries.counts(sorted(ids))
        self._watch = {s["id"] for s in found if s["state"] not in FINAL_STATES}
        for st in found:
            started = st.get("started_at")
            # Started (its first run) while this console was up: its chart begins at the
            # start, from nothing, rather than at the first sample up to 2 s later.
            if (
                started is not None
                and st.get("run", 0) <= 1
                and started.timestamp() >= self.started
                and not self.activity.knows(st["id"])
            ):
                zero = dict.fromkeys(("answered", "unanswered", "failed", "cancelled"), 0)
                suppressed = st["contacts"].get("suppressed", 0)
                self.activity.record(
                    {"id": st["id"], "calls": 0, "contacts": zero | {"suppressed": suppressed}},
                    at=started.timestamp(),
                )
        return found

    # ------------------------------------------------------------------ log in and out
    async def login_page(self, request: Request) -> Response:
        if getattr(request.state, "identity", None) is not None:
            return RedirectResponse(forms.safe_next(request.query_params.get("next")), 303)
        return self._login_form(request)

    def _login_form(
        self,
        request: Request,
        error: str | None = None,
        status: int = 200,
        next_page: str | None = None,
    ) -> Response:
        cookie, token = self.authenticator.login_form(request.cookies.get(auth.LOGIN_COOKIE))
        response = self.render(
            request,
            "login.html",
            status,
            login_token=token,
            next=forms.safe_next(next_page or request.query_params.get("next")),
            error=error,
        )
        response.set_cookie(
            auth.LOGIN_COOKIE,
            cookie,
            max_age=auth.LOGIN_FORM_SECONDS,
            path="/login",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def login(self, request: Request) -> Response:
        client = request.client.host if request.client else "?"
        if self.authenticator.refused(client):
            return self._login_form(
                request, "Too many failed logins: try again in a few minutes.", 429
            )
        form = await request.form(max_files=0, max_fields=8, max_part_size=4096)
        field = functools.partial(forms.text_field, form)
        if not self.authenticator.login_token_ok(
            request.cookies.get(auth.LOGIN_COOKIE), field("login_token")
        ):
            return self._login_form(request, "The form expired: log in again.", 403, field("next"))
        if not self.authenticator.check(field("user"), field("password")):
            self.authenticator.failed(client)
            await asyncio.sleep(0.2)  # a little: guessing is throttled above as well
            return self._login_form(request, "Wrong user or password.", 401, field("next"))
        response = RedirectResponse(forms.safe_next(field("next")), 303)
        response.set_cookie(
            auth.SESSION_COOKIE,
            self.authenticator.new_session(),
            max_age=auth.SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        response.delete_cookie(auth.LOGIN_COOKIE, path="/login")
        return response

    async def logout(self, request: Request, form: FormData) -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(auth.SESSION_COOKIE, path="/")
        return response

    def csrf(self, request: Request) -> Response:
        """The token a script's changes must carry (``X-CSRF-Token``)."""
        return JSONResponse({"csrf": request.state.identity.csrf})

    def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    def favicon(self, request: Request) -> Response:
        return Response(status_code=204)

    # ------------------------------------------------------------------ campaigns
    def campaigns(self, request: Request) -> Response:
        q = request.query_params
        state = q.get("state") or None
        if state is not None and state not in (
            "draft",
            "running",
            "paused",
            "completed",
            "cancelled",
        ):
            state = None
        name = (q.get("q") or "").strip()[:200] or None
        size = min(max(forms.int_field(q.get("size"), PAGE_SIZE), 1), MAX_PAGE_SIZE)
        page = max(forms.int_field(q.get("page"), 1), 1)
        ids, matching, by_state = queries.campaign_page(state, name, (page - 1) * size, size)
        rows = [self._summary(st) for st in self.readers.read(ids)]
        pages = max(math.ceil(matching / size), 1)
        query = {
            k: v
            for k, v in (
                ("state", state),
                ("q", name),
                ("size", size if size != PAGE_SIZE else None),
            )
            if v
        }
        context: dict[str, Any] = {
            "rows": rows,
            "state": state,
            "q": name or "",
            "page": page,
            "pages": pages,
            "matching": matching,
            "by_state": by_state,
            "query": query,
            "live_url": "/?" + urlencode({**query, "page": page, "part": "rows"}),
        }
        if q.get("part") == "rows":
            return self.render(request, "_campaign_rows.html", **context)
        return self.render(request, "campaigns.html", **context)

    def _summary(self, st: dict[str, Any]) -> rendering.Summary:
        contacts = st["contacts"]
        final = st["total"] - contacts.get("pending", 0) - contacts.get("dialing", 0)
        reached = sum(contacts.get(s, 0) for s in ("answered", "unanswered", "failed"))
        return rendering.Summary(
            {
                **st,
                "final": final,
                "done_share": final / st["total"] if st["total"] else 0.0,
                "segments": charts.progress(contacts),
                "answer_rate": contacts.get("answered", 0) / reached if reached else None,
                "rate": self.activity.rate(st["id"]) if st["state"] not in FINAL_STATES else None,
                "responses": st.get("responses"),
            }
        )

    def campaign(self, request: Request) -> Response:
        cid = forms.int_field(request.path_params["id"], 0)
        try:
            st = api.status(cid)
        except api.ApiError as exc:
            raise HTTPException(404, str(exc)) from None
        context = self._campaign_context(cid, st)
        context["done"] = rendering.DONE.get(request.query_params.get("done", ""))
        if request.query_params.get("part") == "live":
            return self.render(request, "_campaign_live.html", **context)
        context["report"] = queries.import_report(cid)
        context["not_dialed"] = self._not_dialed(st)
        context["update_fields"] = forms.update_fields(st)
        return self.render(request, "campaign.html", **context)

    def _not_dialed(self, st: dict[str, Any]) -> list[dict[str, Any]]:
        """The first rows not dialed, in file order. They are found by walking the
        campaign's rows in order (no index has them apart), so they are kept until
        their count in the status changes (a do-not-call addition, an opt-out)."""
        contacts = st["contacts"]
        count = sum(contacts.get(s, 0) for s in queries.NOT_DIALED)
        if not count:
            return []
        key = (st["id"], st.get("run"), count)
        with self._lock:
            found = self._not_dialed_cache.get(key)
        if found is None:
            found = queries.not_dialed(st["id"], limit=20)
            with self._lock:
                if len(self._not_dialed_cache) >= 512:
                    self._not_dialed_cache.clear()
                self._not_dialed_cache[key] = found
        return found

    def _campaign_context(self, cid: int, st: dict[str, Any], **extra: Any) -> dict[str, Any]:
        trouble = queries.carrier_trouble(cid)
        chart = charts.minutes(self.activity.chart(cid))
        return {
            "st": self._summary(st),
            "trouble": trouble,
            "chart": chart,
            "live_url": f"/campaigns/{cid}?part=live",
            **extra,
        }

    async def control(self, request: Request, form: FormData, action: str) -> Response:
        cid = forms.int_field(request.path_params["id"], 0)
        if action == "cancel" and forms.text_field(form, "confirm") != "yes":
            return await run_in_threadpool(self._confirm_cancel, request, cid)
        fn = {"start": api.start, "pause": api.pause, "resume": api.resume, "cancel": api.cancel}[
            action
        ]
        try:
            await run_in_threadpool(fn, cid)
        except api.CampaignStateError as exc:
            return await run_in_threadpool(self._campaign_error, request, cid, str(exc), 409)
        except api.ApiError as exc:
            raise HTTPException(404, str(exc)) from None
        return RedirectResponse(f"/campaigns/{cid}?done={action}", 303)

    def confirm_cancel(self, request: Request) -> Response:
        return self._confirm_cancel(request, forms.int_field(request.path_params["id"], 0))

    def _confirm_cancel(self, request: Request, cid: int) -> Response:
        try:
            st = api.status(cid)
        except api.ApiError as exc:
            raise HTTPException(404, str(exc)) from None
        return self.render(request, "confirm_cancel.html", st=st)

    def _campaign_error(
        self, request: Request, cid: int, error: str, status: int, **extra: Any
    ) -> Response:
        try:
            st = api.status(cid)
        except api.ApiError as exc:
            raise HTTPException(404, str(exc)) from None
        context = self._campaign_context(cid, st)
        context.update(
            report=queries.import_report(cid),
            not_dialed=self._not_dialed(st),
            update_fields=forms.update_fields(st),
            error=error,
            **extra,
        )
        return self.render(request, "campaign.html", status, **context)

    async def update(self, request: Request, form: FormData) -> Response:
        cid = forms.int_field(request.path_params["id"], 0)
        try:
            st = await run_in_threadpool(api.status, cid)
        except api.ApiError as exc:
            raise HTTPException(404, str(exc)) from None
        try:
            given = forms.changes_of(form, st)
        except ValueError as exc:
            return await run_in_threadpool(self._campaign_error, request, cid, str(exc), 400)
        if not given:
            return RedirectResponse(f"/campaigns/{cid}?done=nothing", 303)
        try:
            result = await run_in_threadpool(functools.partial(api.update, cid, **given))
        except ValueError as exc:  # ApiError, CampaignStateError
            return await run_in_threadpool(self._campaign_error, request, cid, str(exc), 400)
        return RedirectResponse(
            f"/campaigns/{cid}?done={'update' if result.get('changed') else 'nothing'}", 303
        )

    def export(self, request: Request) -> Response:
        cid = forms.int_field(request.path_params["id"], 0)
        run = forms.int_field(request.query_params.get("run"), 0) or None
        fd, name = tempfile.mkstemp(prefix="dialer-export-", suffix=".csv")
        try:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
                api.export(cid, f, run=run)
        except api.ApiError as exc:
            os.unlink(name)
            raise HTTPException(404, str(exc)) from None
        except BaseException:
            os.unlink(name)
            raise
        filename = f"campaign-{cid}" + (f"-run-{run}" if run else "") + "-export.csv"
        return FileResponse(
            name,
            media_type="text/csv",
            filename=filename,
            background=BackgroundTask(os.unlink, name),
        )

    def not_dialed_csv(self, request: Request) -> Response:
        """The import report's rows that will not be dialed, with their reasons."""
        cid = forms.int_field(request.path_params["id"], 0)
        if queries.import_report(cid) is None:
            raise HTTPException(404, f"no campaign with id {cid}")
        fd, name = tempfile.mkstemp(prefix="dialer-report-", suffix=".csv")
        try:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["row", "phone", "status", "reason"])
                # Formula-safe as the export is (dialer.store.export): the phone as typed.
                writer.writerows(
                    (row, safe_phone(phone), status, safe_cell(reason or ""))
                    for row, phone, status, reason in queries.iter_not_dialed(cid)
                )
        except BaseException:
            os.unlink(name)
            raise
        return FileResponse(
            name,
            media_type="text/csv",
            filename=f"campaign-{cid}-not-dialed.csv",
            background=BackgroundTask(os.unlink, name),
        )

    # ------------------------------------------------------------------ create
    def new_page(self, request: Request) -> Response:
        return self.render(
            request, "new.html", fields=forms.create_fields({}), values={}, limit=self.max_upload
        )

    async def create(self, request: Request, form: FormData) -> Response:
        values = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}

        def again(error: str, status: int = 400) -> Response:
            return self.render(
                request, "new.html", status, fields=forms.create_fields(values), values=values,
                error=error, limit=self.max_upload,
            )  # fmt: skip

        contacts = form.get("contacts")
        if not isinstance(contacts, UploadFile) or not contacts.filename:
            return again("Choose the CSV file of contacts.")
        name, from_number = forms.text_field(form, "name"), forms.text_field(form, "from_number")
        files = {
            f.name: upload
            for f in forms.create_fields({})
            if f.kind == "file"
            and isinstance(upload := form.get(f.name), UploadFile)
            and upload.filename
        }
        if not name or not (from_number or files.get("from_file")):
            return again("A campaign needs a name and a from number (or a file of them).")
        try:
            options = forms.create_options(form)
        except ValueError as exc:
            return again(str(exc))
        paths = [await forms.keep_upload(contacts, ".csv")]
        dnc = form.get("dnc")
        if isinstance(dnc, UploadFile) and dnc.filename:
            paths.append(await forms.keep_upload(dnc, ".csv"))
            options["dnc"] = [paths[-1]]
        for option, upload in files.items():  # --from-file, as the CLI takes a path
            paths.append(await forms.keep_upload(upload, ".csv"))
            options[option] = paths[-1]
        job = self.jobs.submit(
            name,
            paths,
            api.create_campaign,
            {"name": name, "from_number": from_number or None, "contacts": paths[0], **options},
        )
        # A wrong option or a file without the phone column fails at once: say so on
        # the form, with what was typed, rather than on a page of its own.
        assert job.future is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job.future)), 0.5)
        if job.state == "failed":
            return again(job.error or "the import failed")
        return RedirectResponse(f"/imports/{job.id}", 303)

    def import_page(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["job"])
        if job is None:
            raise HTTPException(404, "no such import (they are kept for an hour)")
        context: dict[str, Any] = {"job": job, "live_url": f"/imports/{job.id}?part=live"}
        if job.state == "done" and job.report:
            context["not_dialed"] = queries.not_dialed(job.report["id"], limit=50)
        if request.query_params.get("part") == "live":
            return self.render(request, "_import_live.html", **context)
        return self.render(request, "import.html", **context)


# ---------------------------------------------------------------------- routes


def _own_token(
    fn: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """The login form: it checks a token of its own (there is no session yet)."""

    async def endpoint(request: Request) -> Response:
        return await fn(request)

    endpoint.csrf_protected = True  # type: ignore[attr-defined]
    return endpoint


def routes(c: Console) -> list[Route]:
    controls = [
        Route(
            f"/campaigns/{{id:int}}/{name}",
            forms.form_action(functools.partial(c.control, action=name)),
            methods=["POST"],
        )
        for name in ("start", "pause", "resume", "cancel")
    ]
    return [
        Route("/", c.campaigns, methods=["GET"]),
        Route("/login", c.login_page, methods=["GET"]),
        Route("/login", _own_token(c.login), methods=["POST"]),
        Route("/logout", forms.form_action(c.logout), methods=["POST"]),
        Route("/csrf", c.csrf, methods=["GET"]),
        Route("/healthz", c.healthz, methods=["GET"]),
        Route("/favicon.ico", c.favicon, methods=["GET"]),
        Route("/campaigns/new", c.new_page, methods=["GET"]),
        Route("/campaigns/new", forms.form_action(c.create, files=4), methods=["POST"]),
        Route("/campaigns/{id:int}", c.campaign, methods=["GET"]),
        Route("/campaigns/{id:int}/cancel", c.confirm_cancel, methods=["GET"]),
        *controls,
        Route("/campaigns/{id:int}/update", forms.form_action(c.update), methods=["POST"]),
        Route("/campaigns/{id:int}/export.csv", c.export, methods=["GET"]),
        Route("/campaigns/{id:int}/not-dialed.csv", c.not_dialed_csv, methods=["GET"]),
        Route("/imports/{job:str}", c.import_page, methods=["GET"]),
        Route("/dnc", c.numbers.dnc_page, methods=["GET"]),
        Route("/dnc", forms.form_action(c.numbers.dnc_change, files=1), methods=["POST"]),
        Route("/contacts", c.numbers.contact, methods=["GET"]),
    ]
