from __future__ import annotations

import pytest

from dialer import settings


def test_defaults_follow_the_interface() -> None:
    s = settings.load({})
    assert s.database_url == "sqlite:///dialer.db"
    assert s.broker_url == s.redis_url == "redis://localhost:6379/0"
    assert s.catapult_api_url == "https://api.catapult.inetwork.com"
    assert (s.http_timeout, s.account_cps, s.number_cps) == (10.0, 1.0, 1.0)


def test_redis_url_defaults_to_the_broker_url() -> None:
    s = settings.load({"DIALER_BROKER_URL": "redis://broker:6379/3"})
    assert s.redis_url == "redis://broker:6379/3"


def test_plain_postgresql_url_uses_psycopg3() -> None:
    s = settings.load({"DIALER_DATABASE_URL": "postgresql://u@h/db"})
    assert s.database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DIALER_ACCOUNT_CPS", "0", "greater than 0"),
        ("DIALER_NUMBER_CPS", "x", "must be a number"),
        ("DIALER_HTTP_TIMEOUT", "-1", "greater than 0"),
        ("DIALER_DATABASE_URL", "mysql://x/y", "PostgreSQL"),
        ("DIALER_BROKER_URL", "amqp://x", "redis"),
        ("CATAPULT_API_URL", "api.example.com", "http"),
        ("DIALER_WORKER_THREADS", "1.5", "whole number"),
        ("DIALER_EVENT_CONSUMERS", "-1", "0 or more"),
        ("DIALER_LOG_FORMAT", "xml", "text, json"),
    ],
)
def test_malformed_values_are_named(name: str, value: str, expected: str) -> None:
    with pytest.raises(settings.SettingsError) as err:
        settings.load({name: value})
    assert name in str(err.value) and expected in str(err.value)


def test_secrets_stay_out_of_repr_and_errors() -> None:
    s = settings.load(
        {
            "CATAPULT_API_SECRET": "hunter2",
            "DIALER_CALLBACK_SECRET": "cb-secret",
            "DIALER_CALLBACK_URL": "https://u:pw@dialer.example.com",
            "DIALER_METRICS_TOKEN": "scrape-me",
        }
    )
    assert "hunter2" not in repr(s) and "cb-secret" not in repr(s) and "pw@" not in repr(s)
    assert s.metrics_token == "scrape-me" and "scrape-me" not in repr(s)
    with pytest.raises(settings.SettingsError) as err:
        settings.load({"DIALER_CALLBACK_URL": "ftp://user:topsecret@x"})
    assert "topsecret" not in str(err.value)


def test_require_names_every_missing_setting() -> None:
    with pytest.raises(settings.SettingsError) as err:
        settings.load({"CATAPULT_USER_ID": "u"}).require(
            "CATAPULT_USER_ID", "CATAPULT_API_TOKEN", "DIALER_CALLBACK_SECRET"
        )
    assert "CATAPULT_API_TOKEN" in str(err.value) and "DIALER_CALLBACK_SECRET" in str(err.value)
    assert "CATAPULT_USER_ID" not in str(err.value)
