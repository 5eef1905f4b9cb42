"""The console in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
which .ci/run installs), driven by Selenium, against ``dialer web`` and a fleet of real
processes: simulator, receiver, a worker and beat.

An operator logs in (after a wrong password), creates a campaign from a CSV file and
reads the import report, starts it and watches the counts move without reloading,
pauses and resumes it, downloads the export and finds a contact's story. A missing CSRF
token and an oversized upload are refused. Screenshots of the two main pages go to
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from dialer.dev.fleet import Fleet, RedisServer, free_port, wait_until
from tests.helpers import database_named, fresh_redis

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)
PASSWORD = "browser-test-password"
VALID = 100  # numbers the campaign dials


@dataclass
class Console:
    url: str
    fleet: Fleet


@pytest.fixture(scope="module")
def console(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Console]:
    env = {
        "DIALER_DATABASE_URL": database_named("web"),
        "DIALER_BROKER_URL": (redis_url := fresh_redis(redis_server.port, 14)),
        "DIALER_REDIS_URL": redis_url,
        "DIALER_CALLBACK_SECRET": "console",
        "DIALER_ACCOUNT_CPS": "200",
        "DIALER_NUMBER_CPS": "200",
        "DIALER_WEB_PASSWORD": PASSWORD,
        "DIALER_WEB_MAX_UPLOAD_MB": "1",
        # The processes run this checkout's code, whatever is installed.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with Fleet(tmp_path_factory.mktemp("console"), env) as fleet:
        try:
            fleet.cli("db", "upgrade")
            # People who answer hear the call script and most press a key.
            fleet.start_simulator(
                "--answer-delay", "0.1", "--talk-time", "0.2", "--no-answer-delay", "0.2",
                "--outcomes", "answered=0.7,busy=0.2,no-answer=0.1",
                "--people", "press=0.9,hangup=0.1", "--keys", "1=0.7,2=0.3",
                "--speech-seconds", "0.05", "--press-delay", "0.05", "--time-scale", "0.05",
            )  # fmt: skip
            fleet.start_receiver(workers=1)
            fleet.start_worker("w1")
            fleet.start_beat()
            port = free_port()
            fleet._spawn(
                "web",
                [
                    sys.executable,
                    "-m",
                    "dialer.cli",
                    "web",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
            )
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _up(url + "/healthz"), 30, what="the console")
            yield Console(url, fleet)
        except BaseException:
            print(fleet.logs())
            raise


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are not installed (.ci/run installs them)")
        pytest.skip("no /usr/bin/chromium: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium look for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    # A click that submits a form returns before the next page has loaded: elements of
    # that page are waited for (up to 5 s) rather than missed.
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def _contacts(path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phone", "account"])
        for i in range(VALID):
            w.writerow([f"+1312555{i:04d}", f"A{i}"])
        w.writerows([["not a number", "X1"], ["12", "X2"], [f"+1312555{0:04d}", "again"]])
    return path


def _wait(driver: Any, predicate: Any, timeout: float = 20, what: str = "") -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: predicate(d), what)


def _text(driver: Any, css: str) -> str:
    """An element's text, read in one script call: a live part swapped in meanwhile
    leaves no stale reference behind."""
    text = driver.execute_script(
        "const el = document.querySelector(arguments[0]); return el ? el.innerText : null;", css
    )
    assert text is not None, f"no {css} on {driver.current_url}"
    return str(text).strip()


def _text_after(driver: Any, css: str, timeout: float = 20) -> str:
    """``_text`` once the element is there: after a click that submits a form, the
    next page may not have loaded yet when the click returns."""
    _wait(
        driver,
        lambda d: d.execute_script("return document.querySelector(arguments[0]) !== null;", css),
        timeout,
        what=f"{css} on the page",
    )
    return _text(driver, css)


def _number(driver: Any, css: str) -> int:
    return int(_text(driver, css).replace(",", "") or 0)


def _fetch(driver: Any, path: str) -> tuple[int, str]:
    """A download as the page's own session fetches it (what a click on the link gets)."""
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {credentials: 'same-origin'})"
        ".then(r => r.text().then(t => done([r.status, t])))"
        ".catch(e => done([0, String(e)]));",
        path,
    )
    return int(result[0]), str(result[1])


def _shot(driver: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / name))


def test_an_operator_runs_a_campaign_from_the_browser(
    console: Console, chrome: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    d, base = chrome, console.url
    try:
        # --- a wrong password is refused; the right one lets the operator in
        d.get(base + "/")
        assert d.current_url.startswith(base + "/login")
        d.find_element(By.NAME, "user").send_keys("admin")
        d.find_element(By.NAME, "password").send_keys("wrong")
        d.find_element(By.CSS_SELECTOR, "#login button").click()
        assert "Wrong user or password" in _text_after(d, ".error")
        assert d.get_cookie("dialer_session") is None
        d.find_element(By.NAME, "user").send_keys("admin")
        d.find_element(By.NAME, "password").send_keys(PASSWORD)
        d.find_element(By.CSS_SELECTOR, "#login button").click()
        _wait(d, lambda d: d.title.startswith("Campaigns"), what="the campaigns page")
        session = d.get_cookie("dialer_session")
        assert session["httpOnly"] and session["sameSite"] == "Strict"

        # --- create from a CSV upload and read the import report
        d.find_element(By.LINK_TEXT, "New campaign").click()
        d.find_element(By.NAME, "name").send_keys("browser spring")
        d.find_element(By.NAME, "from_number").send_keys("+19195551212")
        d.find_element(By.NAME, "contacts").send_keys(str(_contacts(tmp_path / "contacts.csv")))
        d.find_element(By.NAME, "max_attempts").send_keys("1")
        d.find_element(By.NAME, "cps").send_keys("15")
        d.find_element(By.NAME, "tag_fields").send_keys("account")
        d.find_element(By.NAME, "say").send_keys("Hello {account}, your appointment is tomorrow.")
        d.find_element(By.NAME, "keys").send_keys("1=confirmed,2=cancelled")
        d.find_element(By.ID, "create-button").click()
        _wait(d, lambda d: d.find_elements(By.ID, "done"), what="the import report")
        assert _number(d, "#report-rows") == VALID + 3
        assert _number(d, "#report-imported") == VALID
        assert (_number(d, "#report-invalid"), _number(d, "#report-duplicate")) == (2, 1)
        reasons = _text(d, "table.not-dialed")
        assert "not a number" in reasons and "same number as row 1" in reasons
        status, report = _fetch(d, d.find_element(By.ID, "not-dialed-csv").get_attribute("href"))
        assert status == 200
        assert [r["status"] for r in csv.DictReader(io.StringIO(report))] == [
            "invalid", "invalid", "duplicate",
        ]  # fmt: skip

        # --- start it, and watch the counts move without a reload
        d.find_element(By.ID, "campaign-link").click()
        _wait(d, lambda d: _text(d, "#state") == "draft")
        d.find_element(By.ID, "start").click()
        _wait(d, lambda d: _text(d, "#state") == "running", what="running")
        d.execute_script("window.__sameDocument = true;")
        seen = {_text(d, "#counts")}
        _wait(
            d,
            lambda d: seen.add(_text(d, "#counts")) or len(seen) >= 3,
            what="the counts to move twice",
        )
        assert d.execute_script("return window.__sameDocument === true;"), "the page reloaded"

        # --- pause: nothing new is created; resume: it runs to the end
        d.find_element(By.ID, "pause").click()
        _wait(d, lambda d: _text(d, "#state") == "paused", what="paused")
        paused_calls = len(console.fleet.sim_calls())
        assert paused_calls < VALID, "paused before the end"
        d.execute_script("window.__sameDocument = true;")
        refreshed = "return document.getElementById('live').getAttribute('data-updated');"
        updated = d.execute_script(refreshed)
        _wait(d, lambda d: d.execute_script(refreshed) not in (None, updated), what="a refresh")
        updated = d.execute_script(refreshed)
        _wait(d, lambda d: d.execute_script(refreshed) != updated, what="another refresh")
        assert len(console.fleet.sim_calls()) == paused_calls, "no call created while paused"
        assert d.execute_script("return window.__sameDocument === true;")
        d.find_element(By.ID, "resume").click()
        _wait(d, lambda d: _text(d, "#state") in ("running", "completed"), what="resumed")

        # --- the campaigns page follows it live too, to the end
        d.find_element(By.LINK_TEXT, "Campaigns").click()
        _wait(d, lambda d: d.title.startswith("Campaigns"))
        d.execute_script("window.__sameDocument = true;")
        _shot(d, "campaigns.png")
        row = "tr[data-campaign]"
        _wait(d, lambda d: "completed" in _text(d, row), timeout=40, what="completed, live")
        assert d.execute_script("return window.__sameDocument === true;"), "the page reloaded"
        assert "browser spring" in _text(d, row) and f"{VALID + 3} / {VALID + 3} final" in _text(
            d, row
        )

        d.find_element(By.LINK_TEXT, "browser spring").click()
        _wait(d, lambda d: _text(d, "#state") == "completed", what="completed")
        assert _number(d, "#final") == VALID + 3
        assert _number(d, "#calls") == VALID
        _shot(d, "campaign.png")

        # --- the export, as the page's link downloads it
        status, export = _fetch(d, d.find_element(By.ID, "export").get_attribute("href"))
        assert status == 200
        rows = list(csv.DictReader(io.StringIO(export)))
        assert len(rows) == VALID + 3 and rows[0]["phone"] == "+13125550000"
        dialed = [r for r in rows if r["call_id"]]
        assert len(dialed) == VALID
        assert {r["status"] for r in dialed} <= {"answered", "unanswered"}

        # --- a contact's story
        called = dialed[5]
        d.find_element(By.LINK_TEXT, "Contact story").click()
        d.find_element(By.ID, "story-number").send_keys(called["phone"])
        d.find_element(By.CSS_SELECTOR, "#story-search button").click()
        story = _wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "section.story")).text
        assert called["call_id"] in story and "hangup" in story
        assert called["status"] in story
        if called["response"]:
            assert f"response: {called['response']}" in story
    except BaseException:
        _shot(d, "failure.png")
        print(console.fleet.logs())
        raise


def test_a_change_without_its_csrf_token_is_refused(console: Console, chrome: Any) -> None:
    from selenium.webdriver.common.by import By

    d = chrome
    _login(d, console.url)
    d.get(console.url + "/dnc")
    d.execute_script("document.querySelector('#dnc-one input[name=csrf]').remove();")
    d.find_element(By.CSS_SELECTOR, "#dnc-one input[name=number]").send_keys("+13125559999")
    d.find_element(By.ID, "dnc-add").click()
    assert "CSRF" in _text_after(d, "#error")
    d.get(console.url + "/dnc?number=+13125559999")
    assert "is on no do-not-call list" in _text(d, "#dnc-found")


def test_an_oversized_upload_is_refused(console: Console, chrome: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    d = chrome
    _login(d, console.url)
    big = tmp_path / "big.csv"
    with big.open("w") as f:
        f.write("phone\n" + "+13125550100\n" * 120_000)  # 1.6 MB; the console takes 1 MB here
    d.get(console.url + "/campaigns/new")
    d.find_element(By.NAME, "name").send_keys("too big")
    d.find_element(By.NAME, "from_number").send_keys("+19195551212")
    d.find_element(By.NAME, "contacts").send_keys(str(big))
    d.find_element(By.ID, "create-button").click()
    _wait(d, lambda d: "413" in d.title or "larger than" in d.page_source, what="the refusal")
    assert "larger than 1 MB" in d.page_source
    d.get(console.url + "/?q=too+big")
    assert "No campaigns match" in _text(d, "#campaign-rows")


def _login(d: Any, base: str) -> None:
    from selenium.webdriver.common.by import By

    d.get(base + "/")
    if d.current_url.startswith(base + "/login"):
        d.find_element(By.NAME, "user").send_keys("admin")
        d.find_element(By.NAME, "password").send_keys(PASSWORD)
        d.find_element(By.CSS_SELECTOR, "#login button").click()
        _wait(d, lambda d: d.title.startswith("Campaigns"))


def test_screenshots_are_kept() -> None:
    # After the scenario above: the two main pages, for CI to keep.
    if not shutil.which("chromium") and not os.path.exists(CHROMIUM):
        pytest.skip("no browser")
    for name in ("campaigns.png", "campaign.png"):
        assert (SCREENSHOTS / name).stat().st_size > 10_000, name
