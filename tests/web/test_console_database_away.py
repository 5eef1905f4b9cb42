"""The console through a PostgreSQL restart: a private server (dialer.dev.databases),
stopped as a crash stops it and started again under the running app. While it is down
every page answers 503 with Retry-After and says why; once it is back the same app
serves the same pages again, with no restart of its own."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from dialer import settings
from dialer.dev.databases import PostgresServer
from dialer.dev.fleet import fresh_database
from dialer.store import migrate
from dialer.store.db import engine_for
from dialer.web.app import create_app
from tests.factories import campaign_with

PASSWORD = "console-test-password"
HTML = {"accept": "text/html"}
BASIC = ("admin", PASSWORD)


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    pg = PostgresServer()
    pg.start()
    try:
        yield pg
    finally:
        pg.close()


def test_pages_say_the_database_is_away_then_serve_again(
    test_settings: settings.Settings, server: PostgresServer
) -> None:
    url = fresh_database(server.database("console"))
    config = dataclasses.replace(test_settings, database_url=url, web_password=PASSWORD)
    settings.override(config)
    try:
        migrate.upgrade(engine_for(url))
        cid = campaign_with(["+19195550101", "+19195550102"])
        pages = ("/", f"/campaigns/{cid}", "/dnc")
        with TestClient(create_app(config, sample=False), base_url="http://console.test") as web:
            for page in pages:
                assert web.get(page, auth=BASIC, headers=HTML).status_code == 200, page
            server.stop("immediate")
            for page in pages:
                away = web.get(page, auth=BASIC, headers=HTML)
                assert away.status_code == 503, (page, away.status_code)
                assert away.headers["retry-after"] == "5"
                assert "database cannot be reached" in away.text
            server.start()
            for page in pages:
                back = web.get(page, auth=BASIC, headers=HTML)
                assert back.status_code == 200, (page, back.status_code)
    finally:
        settings.override(test_settings)
        engine_for(url).dispose()
