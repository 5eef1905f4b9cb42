"""The console over HTTP (Starlette's TestClient, the real app and the test database):
who gets in, what a change must carry, what a page shows and never shows."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from dialer import api, settings
from dialer.dev.simulator import Simulator
from dialer.web import auth
from dialer.web.activity import Activity
from dialer.web.app import UNSAFE, create_app
from dialer.worker import scheduling, tasks
from tests.factories import apply_callback, attempt, campaign_with, recurring

PASSWORD = "console-test-password"
HTML = {"accept": "text/html"}


@pytest.fixture
def config(test_settings: settings.Settings) -> settings.Settings:
    return dataclasses.replace(test_settings, web_password=PASSWORD, web_max_upload_mb=1)


@pytest.fixture
def app(config: settings.Settings, clean_db: None) -> Any:
    return create_app(config, sample=False)


@pytest.fixture
def anon(app: Any) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://console.test", follow_redirects=False) as client:
        yield client


@pytest.fixture
def browser(app: Any) -> Iterator[TestClient]:
    """A client logged in through the form, as a browser is."""
    with TestClient(app, base_url="http://console.test", follow_redirects=False) as client:
        login(client, "admin", PASSWORD)
        yield client


def login(client: TestClient, user: str, password: str, **extra: str) -> Any:
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None
    return client.post(
        "/login",
        data={"login_token": token.group(1), "user": user, "password": password, **extra},
    )


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, "the page has a CSRF field"
    return found.group(1)


def campaign(name: str = "spring", rows: list[str] | None = None, **options: Any) -> int:
    numbers = rows or ["+13125550100", "+13125550101", "12", "+13125550100"]
    return int(
        api.create_campaign(
            name, "+19195551212", [{"phone": n, "k": "v"} for n in numbers], **options
        )["id"]
    )


# ---------------------------------------------------------------------- settings


def test_the_console_refuses_to_start_without_a_password(test_settings: settings.Settings) -> None:
    with pytest.raises(settings.SettingsError, match="DIALER_WEB_PASSWORD"):
        create_app(dataclasses.replace(test_settings, web_password=None), sample=False)


def test_web_settings_are_read_and_checked_by_name() -> None:
    s = settings.load({"DIALER_WEB_PASSWORD": "pw", "DIALER_WEB_MAX_UPLOAD_MB": "5"})
    assert (s.web_user, s.web_password, s.web_max_upload_mb) == ("admin", "pw", 5)
    assert "pw" not in repr(s)
    with pytest.raises(settings.SettingsError, match="DIALER_WEB_USER"):
        settings.load({"DIALER_WEB_USER": "a:b"})
    with pytest.raises(settings.SettingsError, match="DIALER_WEB_MAX_UPLOAD_MB"):
        settings.load({"DIALER_WEB_MAX_UPLOAD_MB": "lots"})


def test_dialer_web_without_a_password_says_which_setting(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from dialer import cli

    monkeypatch.delenv("DIALER_WEB_PASSWORD", raising=False)
    before = settings.get()
    settings.override(dataclasses.replace(before, web_password=None))
    try:
        assert cli.main(["web", "--port", "1"]) == 2
    finally:
        settings.override(before)
    assert "DIALER_WEB_PASSWORD" in capsys.readouterr().err


# ---------------------------------------------------------------------- who gets in


def test_nothing_is_shown_without_credentials(anon: TestClient) -> None:
    campaign()
    page = anon.get("/", headers=HTML)
    assert page.status_code == 303 and page.headers["location"] == "/login"
    deep = anon.get("/campaigns/1?x=1", headers=HTML)
    assert deep.headers["location"] == "/login?next=%2Fcampaigns%2F1%3Fx%3D1"
    script = anon.get("/campaigns/1")
    assert script.status_code == 401 and script.headers["www-authenticate"].startswith("Basic")
    # The pages' own refreshes get no challenge (a browser would pop up its dialog).
    live = anon.get("/?part=rows", headers={"x-live": "1"})
    assert live.status_code == 401 and "www-authenticate" not in live.headers
    for path in (
        "/campaigns/1/export.csv",
        "/campaigns/1/not-dialed.csv",
        "/dnc",
        "/contacts",
        "/csrf",
    ):
        assert anon.get(path).status_code == 401, path
    assert anon.get("/healthz").status_code == 200
    assert anon.get("/static/console.css").status_code == 200


def test_login_form_sets_a_strict_http_only_session_cookie(anon: TestClient) -> None:
    response = login(anon, "admin", PASSWORD, next="/dnc")
    assert response.status_code == 303 and response.headers["location"] == "/dnc"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith(auth.SESSION_COOKIE)
    )
    flags = {f.strip().lower() for f in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags  # plain http here
    assert anon.get("/", headers=HTML).status_code == 200


def test_the_session_cookie_is_secure_over_https(app: Any) -> None:
    with TestClient(app, base_url="https://console.test", follow_redirects=False) as client:
        response = login(client, "admin", PASSWORD)
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith(auth.SESSION_COOKIE)
    )
    assert "secure" in cookie.lower()


def test_a_failed_login_is_refused_and_guessing_is_throttled(anon: TestClient) -> None:
    wrong = login(anon, "admin", "not-it", next="/dnc")
    assert wrong.status_code == 401 and "Wrong user or password" in wrong.text
    assert 'name="next" value="/dnc"' in wrong.text, "where to go once logged in is kept"
    assert auth.SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
    assert anon.get("/", headers=HTML).status_code == 303
    assert login(anon, "root", PASSWORD).status_code == 401
    for _ in range(auth.MAX_FAILURES):
        login(anon, "admin", "guess")
    assert login(anon, "admin", PASSWORD).status_code == 429  # even the right one, for now


def test_login_needs_its_form_token(anon: TestClient) -> None:
    refused = anon.post("/login", data={"user": "admin", "password": PASSWORD})
    assert refused.status_code == 403
    assert auth.SESSION_COOKIE not in refused.headers.get("set-cookie", "")


def test_login_goes_back_only_to_a_page_of_this_site(anon: TestClient) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        anon.cookies.clear()
        assert login(anon, "admin", PASSWORD, next=target).headers["location"] == "/"


def test_scripts_use_http_basic(anon: TestClient) -> None:
    cid = campaign()
    ok = anon.get(f"/campaigns/{cid}", auth=("admin", PASSWORD))
    assert ok.status_code == 200 and "spring" in ok.text
    wrong = anon.get(f"/campaigns/{cid}", auth=("admin", "nope"))
    assert wrong.status_code == 401 and "spring" not in wrong.text
    assert anon.get("/", auth=("nobody", PASSWORD)).status_code == 401


def test_a_forged_or_old_session_cookie_is_refused(app: Any, anon: TestClient, config) -> None:
    authn = auth.Authenticator("admin", "another password")
    anon.cookies.set(auth.SESSION_COOKIE, authn.new_session())
    assert anon.get("/").status_code == 401
    ours = auth.Authenticator("admin", PASSWORD)
    body = ours.new_session().split(".")[0]
    anon.cookies.set(auth.SESSION_COOKIE, body + ".forged")
    assert anon.get("/").status_code == 401
    stale = ours._sign({"u": "admin", "t": int(time.time()) - auth.SESSION_SECONDS - 5, "c": "x"})
    anon.cookies.set(auth.SESSION_COOKIE, stale)
    assert anon.get("/").status_code == 401


# ---------------------------------------------------------------------- CSRF


def test_every_state_changing_route_refuses_a_request_without_its_token(
    app: Any, browser: TestClient
) -> None:
    cid = campaign()
    starlette_app = app.app
    posts = [
        r.path.replace("{id:int}", str(cid))
        for r in starlette_app.routes
        if isinstance(r, Route) and (r.methods or set()) & UNSAFE and r.path != "/login"
    ]
    assert len(posts) >= 8
    for path in posts:
        response = browser.post(
            path, data={"confirm": "yes", "action": "add", "number": "+13125550199"}
        )
        assert response.status_code == 403, path
        assert "CSRF" in response.text
    bad = browser.post(f"/campaigns/{cid}/start", data={"csrf": "wrong"})
    assert bad.status_code == 403
    assert api.status(cid)["state"] == "draft", "nothing was started"


def test_a_script_gets_its_token_and_sends_it_as_a_header(anon: TestClient) -> None:
    cid = campaign()
    basic = ("admin", PASSWORD)
    assert (
        anon.post(f"/campaigns/{cid}/cancel", data={"confirm": "yes"}, auth=basic).status_code
        == 403
    )
    token = anon.get("/csrf", auth=basic).json()["csrf"]
    refused = anon.post(
        f"/campaigns/{cid}/cancel",
        data={"confirm": "yes"},
        auth=basic,
        headers={"x-csrf-token": "x"},
    )
    assert refused.status_code == 403
    done = anon.post(
        f"/campaigns/{cid}/cancel",
        data={"confirm": "yes"},
        auth=basic,
        headers={"x-csrf-token": token},
    )
    assert done.status_code == 303
    assert api.status(cid)["state"] == "cancelled"


# ---------------------------------------------------------------------- pages


def test_nothing_a_user_typed_is_rendered_unescaped(browser: TestClient) -> None:
    evil = '<script>alert("x")</script>'
    cid = campaign(evil, rows=["+13125550100", evil, "+13125550100"])
    for path in ("/", f"/campaigns/{cid}", f"/campaigns/{cid}?part=live", f"/?q={evil}",
                 f"/contacts?number={evil}", f"/dnc?number={evil}"):  # fmt: skip
        page = browser.get(path, headers=HTML)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text, path
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in browser.get("/").text


def test_no_secret_appears_in_a_page(browser: TestClient, config: settings.Settings) -> None:
    cid = campaign()
    secrets_ = [
        PASSWORD,
        config.callback_secret,
        config.catapult_api_token,
        config.catapult_api_secret,
    ]
    for path in (
        "/",
        f"/campaigns/{cid}",
        "/campaigns/new",
        "/dnc",
        "/contacts?number=+13125550100",
    ):
        text = browser.get(path, headers=HTML).text
        for secret in secrets_:
            assert secret and secret not in text, path


def test_security_headers(browser: TestClient) -> None:
    page = browser.get("/", headers=HTML)
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


def test_campaigns_page_shows_each_campaign_and_its_live_rows(browser: TestClient) -> None:
    first, second = campaign("alpha"), campaign("beta")
    page = browser.get("/", headers=HTML)
    assert "alpha" in page.text and "beta" in page.text
    assert 'data-live="/?page=1&amp;part=rows"' in page.text
    rows = browser.get("/?part=rows", headers=HTML)
    assert rows.text.count("<tr") == 2 and "<html" not in rows.text
    only = browser.get("/?q=alp", headers=HTML).text
    assert "alpha" in only and "beta" not in only
    paged = browser.get("/?size=1&page=2", headers=HTML).text
    assert f'data-campaign="{first}"' in paged and f'data-campaign="{second}"' not in paged


def test_campaign_page_shows_responses_when_the_status_has_them(
    browser: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = campaign()
    real = api.status
    monkeypatch.setattr(
        api, "status", lambda c, run=None: real(c) | {"responses": {"confirmed": 7}}
    )
    page = browser.get(f"/campaigns/{cid}?part=live", headers=HTML).text
    assert "confirmed <b>7</b>" in page


def test_start_pause_resume_and_cancel_with_a_confirmation(
    browser: TestClient, sim: Simulator
) -> None:
    cid = campaign(window="00:00-00:01", days="mon-sun", timezone="Pacific/Kiritimati")
    page = browser.get(f"/campaigns/{cid}", headers=HTML).text
    token = csrf_of(page)
    started = browser.post(f"/campaigns/{cid}/start", data={"csrf": token})
    assert (
        started.status_code == 303 and started.headers["location"] == f"/campaigns/{cid}?done=start"
    )
    assert api.status(cid)["state"] == "running"
    again = browser.post(f"/campaigns/{cid}/resume", data={"csrf": token})
    assert again.status_code == 409 and "running" in again.text
    # Its window (one minute a day, in Kiritimati) is shut: the page says who waits.
    live = browser.get(f"/campaigns/{cid}?part=live", headers=HTML).text
    assert "2 contacts wait for their calling window; the next opens at" in live
    assert browser.post(f"/campaigns/{cid}/pause", data={"csrf": token}).status_code == 303
    assert api.status(cid)["state"] == "paused"
    assert browser.post(f"/campaigns/{cid}/resume", data={"csrf": token}).status_code == 303
    assert api.status(cid)["state"] == "running"
    # Cancel asks first: without the confirmation nothing happens.
    ask = browser.post(f"/campaigns/{cid}/cancel", data={"csrf": token})
    assert ask.status_code == 200 and "confirm-cancel" in ask.text
    assert api.status(cid)["state"] == "running"
    confirm = browser.get(f"/campaigns/{cid}/cancel", headers=HTML)
    assert 'name="confirm" value="yes"' in confirm.text
    assert (
        browser.post(f"/campaigns/{cid}/cancel", data={"csrf": token, "confirm": "yes"}).status_code
        == 303
    )
    assert api.status(cid)["state"] == "cancelled"


def test_update_changes_only_the_rules_edited(browser: TestClient) -> None:
    cid = campaign(cps=5, max_attempts=2)
    page = browser.get(f"/campaigns/{cid}", headers=HTML).text
    token = csrf_of(page)
    fields = dict(re.findall(r'<input id="rule-[a-z_]+" name="([a-z_]+)" value="([^"]*)"', page))
    assert fields["cps"] == "5" and fields["max_attempts"] == "2"
    same = browser.post(f"/campaigns/{cid}/update", data={"csrf": token, **fields})
    assert same.headers["location"].endswith("done=nothing")
    changed = browser.post(
        f"/campaigns/{cid}/update",
        data={"csrf": token, **fields, "cps": "", "window": "09:00-17:00"},
    )
    assert changed.headers["location"].endswith("done=update")
    rules = api.status(cid)["rules"]
    assert (rules["cps"], rules["window"], rules["max_attempts"]) == (None, "09:00-17:00", 2)
    wrong = browser.post(
        f"/campaigns/{cid}/update", data={"csrf": token, **fields, "max_attempts": "x"}
    )
    assert wrong.status_code == 400 and "--max-attempts must be a whole number" in wrong.text
    bad = browser.post(
        f"/campaigns/{cid}/update", data={"csrf": token, **fields, "window": "25:00-26:00"}
    )
    assert bad.status_code == 400 and "window" in bad.text


def test_export_and_the_rows_not_dialed_download(browser: TestClient) -> None:
    cid = campaign()
    export = browser.get(f"/campaigns/{cid}/export.csv")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [r["phone"] for r in rows] == ["+13125550100", "+13125550101", "12", "+13125550100"]
    report = list(csv.DictReader(io.StringIO(browser.get(f"/campaigns/{cid}/not-dialed.csv").text)))
    assert [(r["row"], r["status"]) for r in report] == [("3", "invalid"), ("4", "duplicate")]
    assert report[1]["reason"] == "same number as row 1"
    assert browser.get("/campaigns/999/export.csv").status_code == 404


# ---------------------------------------------------------------------- create from a file


def _upload(
    browser: TestClient,
    data: dict[str, str],
    body: bytes,
    dnc: bytes | None = None,
    from_file: bytes | None = None,
) -> Any:
    token = csrf_of(browser.get("/campaigns/new", headers=HTML).text)
    files: dict[str, Any] = {"contacts": ("contacts.csv", body, "text/csv")}
    if dnc is not None:
        files["dnc"] = ("dnc.csv", dnc, "text/csv")
    if from_file is not None:
        files["from_file"] = ("numbers.csv", from_file, "text/csv")
    return browser.post("/campaigns/new", data={"csrf": token, **data}, files=files, headers=HTML)


def test_create_from_an_uploaded_file_shows_the_import_report(browser: TestClient) -> None:
    body = b"phone,account\n+13125550100,A1\nnot a number,A2\n+13125550100,A3\n+13125550102,A4\n"
    created = _upload(
        browser,
        {"name": "upload", "from_number": "+19195551212", "max_attempts": "2", "cps": "3",
         "tag_fields": "account", "window": "08:00-20:00"},
        body,
        dnc=b"phone\n+13125550102\n",
    )  # fmt: skip
    assert created.status_code == 303, created.text
    job = created.headers["location"]
    for _ in range(100):
        page = browser.get(job, headers=HTML).text
        if 'id="done"' in page:
            break
        time.sleep(0.05)
    assert 'id="report-rows">4<' in page and 'id="report-imported">1<' in page
    assert 'id="report-invalid">1<' in page and 'id="report-duplicate">1<' in page
    assert 'id="report-suppressed">1<' in page
    assert "not a number" in page and "same number as row 1" in page
    cid = int(re.search(r'href="/campaigns/(\d+)" id="campaign-link"', page).group(1))
    st = api.status(cid)
    assert (st["rules"]["max_attempts"], st["rules"]["cps"], st["rules"]["window"]) == (
        2,
        3.0,
        "08:00-20:00",
    )
    assert st["state"] == "draft"


def test_the_form_offers_every_option_the_api_takes_the_call_script_too(
    browser: TestClient,
) -> None:
    form = browser.get("/campaigns/new", headers=HTML).text
    for name in ("max_attempts", "window", "tag_fields", "say", "keys", "max_duration"):
        assert f'name="{name}"' in form, name
    created = _upload(
        browser,
        {"name": "script", "from_number": "+19195551212", "say": "Hello {account}",
         "keys": "1=confirmed,9=opt-out", "max_duration": "60"},
        b"phone,account\n+13125550100,A1\n",
    )  # fmt: skip
    assert created.status_code == 303, created.text
    for _ in range(100):
        page = browser.get(created.headers["location"], headers=HTML).text
        if 'id="done"' in page:
            break
        time.sleep(0.05)
    cid = int(re.search(r'href="/campaigns/(\d+)" id="campaign-link"', page).group(1))
    script = api.status(cid)["script"]
    assert (script["say"], script["keys"], script["max_duration"]) == (
        "Hello {account}", "1=confirmed,9=opt-out", 60,
    )  # fmt: skip
    # ... and update changes it from the campaign's page, like the rules.
    page = browser.get(f"/campaigns/{cid}", headers=HTML).text
    fields = dict(re.findall(r'<input id="rule-[a-z_]+" name="([a-z_]+)" value="([^"]*)"', page))
    assert fields["say"] == "Hello {account}" and fields["max_duration"] == "60"
    changed = browser.post(
        f"/campaigns/{cid}/update",
        data={"csrf": csrf_of(page), **fields, "goodbye": "Bye", "max_duration": ""},
    )
    assert changed.headers["location"].endswith("done=update")
    script = api.status(cid)["script"]
    assert script["goodbye"] == "Bye" and "max_duration" not in script


def test_a_pool_from_an_uploaded_file_and_call_options_on_the_forms(browser: TestClient) -> None:
    form = browser.get("/campaigns/new", headers=HTML).text
    assert '<input type="file" name="from_file"' in form, "a file to upload, never a path"
    created = _upload(
        browser,
        {"name": "pool", "record": "on", "callback_timeout": "5000"},
        b"phone\n+13125550100\n",
        from_file=b"phone,label\n+19195550001,raleigh\n+13125550002,chicago\n",
    )
    assert created.status_code == 303, created.text
    for _ in range(100):
        page = browser.get(created.headers["location"], headers=HTML).text
        if 'id="done"' in page:
            break
        time.sleep(0.05)
    cid = int(re.search(r'href="/campaigns/(\d+)" id="campaign-link"', page).group(1))
    st = api.status(cid)
    assert [n["number"] for n in st["caller_ids"]] == ["+19195550001", "+13125550002"]
    assert st["rules"]["record"] is True and st["rules"]["callback_timeout"] == 5000
    page = browser.get(f"/campaigns/{cid}", headers=HTML).text
    assert 'id="caller-ids"' in page and "chicago" in page
    # Call options change from the page like the rules: the checkbox off, a number on.
    assert '<input type="checkbox" id="rule-record" name="record" checked>' in page
    fields = dict(re.findall(r'<input id="rule-[a-z_]+" name="([a-z_]+)" value="([^"]*)"', page))
    changed = browser.post(
        f"/campaigns/{cid}/update",
        data={"csrf": csrf_of(page), **fields, "callback_timeout": "", "record_max": "30"},
    )
    assert changed.headers["location"].endswith("done=update")
    rules = api.status(cid)["rules"]
    assert "record" not in rules and "callback_timeout" not in rules


def test_a_wrong_option_is_said_on_the_form_with_what_was_typed(browser: TestClient) -> None:
    wrong = _upload(browser, {"name": "typo", "from_number": "919-555"}, b"phone\n+13125550100\n")
    assert (
        wrong.status_code == 400
        and "--from: &#39;919-555&#39; is not a valid E.164 number" in wrong.text
    )
    assert 'value="typo"' in wrong.text
    no_column = _upload(
        browser, {"name": "x", "from_number": "+19195551212"}, b"number\n+13125550100\n"
    )
    assert no_column.status_code == 400 and "phone" in no_column.text
    assert api.list_campaigns() == []


def test_an_oversized_upload_is_refused(browser: TestClient) -> None:
    body = b"phone\n" + b"+13125550100\n" * 100_000  # 1.3 MB, over the 1 MB set here
    refused = _upload(browser, {"name": "big", "from_number": "+19195551212"}, body)
    assert refused.status_code == 413
    assert api.list_campaigns() == []


# ---------------------------------------------------------------------- do-not-call


def test_dnc_add_search_and_remove(browser: TestClient) -> None:
    cid = campaign(rows=["+13125550100", "+13125550101"])
    token = csrf_of(browser.get("/dnc", headers=HTML).text)
    added = browser.post("/dnc", data={"csrf": token, "action": "add", "number": "(312) 555-0101"})
    assert added.status_code == 200 and "Added 1 numbers" in added.text
    assert "1 pending contacts suppressed" in added.text
    assert api.status(cid)["contacts"]["suppressed"] == 1
    found = browser.get("/dnc?number=3125550101", headers=HTML).text
    assert "+13125550101" in found and "the global list" in found
    bad = browser.post("/dnc", data={"csrf": token, "action": "add", "number": "12"})
    assert bad.status_code == 400 and "not a number" in bad.text
    upload = browser.post(
        "/dnc",
        data={"csrf": token, "action": "add", "campaign": str(cid)},
        files={"file": ("dnc.csv", b"phone\n+13125550100\nnope\n", "text/csv")},
    )
    assert "Added 1 numbers" in upload.text and "not numbers" in upload.text
    assert f'campaign <a href="/campaigns/{cid}">' in browser.get("/dnc?number=+13125550100").text
    removed = browser.post(
        "/dnc", data={"csrf": token, "action": "remove", "number": "+13125550101"}
    )
    assert "Removed 1 numbers" in removed.text
    assert "is on no do-not-call list" in browser.get("/dnc?number=+13125550101").text


# ---------------------------------------------------------------------- a contact's story


def test_contact_story_shows_attempts_call_ids_and_events(
    browser: TestClient, sim: Simulator
) -> None:
    sim.configure(outcome_by_number={"+19192000011": ["busy"]})
    cid = campaign_with(["+19192000011"])
    [aid] = scheduling.release(cid)
    tasks.dial.run(aid)
    a = attempt(aid)
    assert a.call_id
    apply_callback({"eventType": "hangup", "callId": a.call_id, "cause": "USER_BUSY"})
    from sqlalchemy import update

    from dialer.store import db
    from dialer.store.models import Attempt

    with db.session_scope() as session:  # what a key press leaves (issue 14)
        session.execute(
            update(Attempt).where(Attempt.id == aid).values(response="confirmed", digits="1")
        )
    page = browser.get("/contacts?number=919-200-0011", headers=HTML).text
    assert "+19192000011" in page and a.call_id in page
    assert "hangup" in page and "cause=USER_BUSY" in page
    assert "response: <b>confirmed</b>" in page and "digits: <b>1</b>" in page
    by_call = browser.get(f"/contacts?number={a.call_id}", headers=HTML).text
    assert 'class="call-id">' + a.call_id in by_call
    none = browser.get("/contacts?number=+13125559999", headers=HTML).text
    assert "No contact with +13125559999" in none


def test_campaign_page_shows_runs_and_the_next_one(browser: TestClient) -> None:
    cid = recurring("0 10 * * *")
    page = browser.get(f"/campaigns/{cid}", headers=HTML).text
    assert 'id="runs"' in page and "1 (current)" in page and "by start" in page
    assert "next run" in page
    rows = browser.get("/?part=rows", headers=HTML).text
    assert api.status(cid)["next_run"] is not None and "UTC" in rows


def test_campaign_page_shows_carrier_errors_and_push_backs(browser: TestClient) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from dialer import clock
    from dialer.store import db
    from dialer.store.models import Attempt

    cid = campaign_with(["+19192000011", "+19192000012"])
    first, second = scheduling.release(cid)
    with db.session_scope() as session:
        session.execute(
            update(Attempt)
            .where(Attempt.id == first)
            .values(
                status="failed", error="the carrier refused <the> number", cause="invalid-number"
            )
        )
        session.execute(
            update(Attempt)
            .where(Attempt.id == second)
            .values(not_before=clock.now() + timedelta(minutes=5), error="rate limited (429)")
        )
    live = browser.get(f"/campaigns/{cid}?part=live", headers=HTML).text
    assert "the carrier refused &lt;the&gt; number (invalid-number)" in live
    assert "1 calls held back by the carrier" in live and "rate limited (429)" in live


def test_the_sampler_reads_the_tallies_of_running_campaigns(app: Any) -> None:
    from dialer.web import queries

    running = campaign_with(["+13125550100", "+13125550101", "bad"])
    campaign("draft")
    console = app.app.state.console
    [found] = console.sample_read()
    assert found["id"] == running and found["contacts"] == {"pending": 2, "invalid": 1}
    st = api.status(running)
    assert found["calls"] == st["calls"]
    assert {k: v for k, v in st["contacts"].items() if v} == found["contacts"]
    assert queries.counts([]) == []
    assert not console.activity.knows(running), "not started while the console was up"
    # One started while the console is up: its chart begins at its start, from zero.
    started = campaign("later")
    api.start(started)
    console.sample_read()
    since = console.activity.chart(started)["since"]
    from datetime import datetime

    started_at = datetime.fromisoformat(api.status(started)["started_at"]).timestamp()
    assert since == pytest.approx(started_at)


# ---------------------------------------------------------------------- activity


def test_activity_counts_calls_and_outcomes_per_minute_and_the_rate() -> None:
    now = [600.0]
    activity = Activity(clock=lambda: now[0])

    def status(calls: int, answered: int, failed: int = 0) -> dict[str, Any]:
        return {"id": 1, "calls": calls, "contacts": {"answered": answered, "failed": failed}}

    activity.record(status(0, 0))
    for i in range(1, 11):
        now[0] = 600.0 + i * 2
        activity.record(status(i * 10, i * 4, i))
    assert activity.rate(1) == pytest.approx(5.0)
    chart = activity.chart(1, minutes=2)
    minute = chart["minutes"][-1]
    assert (minute["calls"], minute["answered"], minute["failed"]) == (100, 40, 10)
    assert activity.chart(2)["since"] is None
    now[0] += 60
    assert activity.rate(1) is None, "no longer sampled: no rate"


# ---------------------------------------------------------------------- dialer demo --web


def test_demo_web_keeps_the_console_up_until_ctrl_c(tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys

    import requests

    from dialer.dev.fleet import wait_until

    root = str(Path(__file__).resolve().parents[2])  # this checkout's code, whatever is installed
    env = {**os.environ, "COLUMNS": "100", "TMPDIR": str(tmp_path), "PYTHONPATH": root}
    env.pop("DIALER_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dialer.cli", "demo", "--web"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        lines: list[str] = []

        def said(pattern: str) -> re.Match[str] | None:
            while True:
                line = proc.stdout.readline() if proc.stdout else ""
                if not line:
                    return None
                lines.append(line)
                found = re.search(pattern, line)
                if found:
                    return found

        found = said(r"console: (http://127\.0\.0\.1:\d+/)\s+user admin\s+password (\S+)")
        assert found, "".join(lines) + (proc.stderr.read() if proc.stderr else "")
        url, password = found.groups()
        page = requests.get(url, auth=("admin", password), timeout=10)
        assert page.status_code == 200 and 'data-campaign="1"' in page.text
        assert requests.get(url, timeout=10).status_code == 401
        assert said(r"Ctrl-C to stop"), "".join(lines)
        live = requests.get(url + "campaigns/1?part=live", auth=("admin", password), timeout=10)
        assert 'id="state">completed<' in live.text
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert "still running" not in err, err
    wait_until(lambda: not _listening(url), 5, what="the console to stop")


def _listening(url: str) -> bool:
    import requests

    try:
        requests.get(url, timeout=0.5)
        return True
    except requests.RequestException:
        return False
