"""Every setting the dialer reads, read and checked in one place.

Each value comes from the environment through a coercer that names the variable and
what it expected when the value is malformed (docs/interface.md, "Configuration"). Secrets
are kept out of ``repr`` so they never reach a log line or a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise SettingsError(f"{name} must be greater than 0, got {raw!r}")
    return value


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be greater than 0, got {raw!r}")
    return value


def _count(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must be 0 or more, got {raw!r}")
    return value


def _url(schemes: tuple[str, ...]) -> Callable[[str, str], str]:
    def coerce(name: str, raw: str) -> str:
        parts = urlsplit(raw)
        scheme = parts.scheme.split("+")[0]
        if scheme not in schemes or not (parts.netloc or parts.path or scheme == "memory"):
            raise SettingsError(
                f"{name} must be a URL starting with {' or '.join(s + ':' for s in schemes)}"
                f" (got a value of {len(raw)} characters that is not)"
            )
        return raw.rstrip("/") if parts.scheme.startswith("http") else raw

    return coerce


def _database_url(name: str, raw: str) -> str:
    scheme = urlsplit(raw).scheme
    if not scheme.startswith(("sqlite", "postgresql", "postgres")):
        raise SettingsError(
            f"{name} must be a SQLAlchemy URL for PostgreSQL (postgresql+psycopg://user@host/db)"
            f" or SQLite (sqlite:///dialer.db), got scheme {scheme!r}"
        )
    # The psycopg 3 driver is the one we install; plain postgresql:// would ask for psycopg2.
    if scheme in ("postgresql", "postgres"):
        raw = "postgresql+psycopg" + raw[len(scheme) :]
    return raw


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise SettingsError(f"{name} must not be empty")
    return raw.strip()


def _web_user(name: str, raw: str) -> str:
    # HTTP Basic splits the user from the password at the first colon.
    user = _text(name, raw)
    if ":" in user or not user.isprintable():
        raise SettingsError(f"{name} must be a user name without ':' or control characters")
    return user


def _choice(*choices: str) -> Callable[[str, str], str]:
    def coerce(name: str, raw: str) -> str:
        if raw not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    return coerce


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///dialer.db"
    # "transaction": PostgreSQL is reached through a pooler in transaction mode
    # (PgBouncer): no prepared statements, no startup options (docs/operations.md).
    database_pooler: str = "none"
    broker_url: str = "redis://localhost:6379/0"
    redis_url: str = "redis://localhost:6379/0"
    catapult_api_url: str = "https://api.catapult.inetwork.com"
    catapult_user_id: str | None = None
    catapult_api_token: str | None = field(default=None, repr=False)
    catapult_api_secret: str | None = field(default=None, repr=False)
    callback_url: str | None = field(default=None, repr=False)
    callback_secret: str | None = field(default=None, repr=False)
    # Seconds a receiver connection has to deliver a whole request (callbacks/httplimits).
    receiver_request_timeout: float = 10.0
    http_timeout: float = 10.0
    account_cps: float = 1.0
    number_cps: float = 1.0
    account_rps: float = 1.0  # every request but a create (dialer.policy.requests)
    worker_threads: int = 32
    event_consumers: int = 2
    log_format: str = "text"
    metrics_token: str | None = field(default=None, repr=False)
    web_user: str = "admin"
    web_password: str | None = field(default=None, repr=False)
    web_max_upload_mb: int = 50

    def require(self, *names: str) -> None:
        """Fail with every missing setting named, for the processes that need them."""
        missing = [n for n in names if getattr(self, _ATTR[n]) in (None, "")]
        if missing:
            raise SettingsError(
                "missing setting" + ("s " if len(missing) > 1 else " ") + ", ".join(missing)
            )


# variable name -> (attribute, coercer). The order is the order of docs/interface.md.
_VARIABLES: dict[str, tuple[str, Callable[[str, str], object]]] = {
    "DIALER_DATABASE_URL": ("database_url", _database_url),
    "DIALER_DATABASE_POOLER": ("database_pooler", _choice("none", "transaction")),
    "DIALER_BROKER_URL": ("broker_url", _url(("redis", "rediss", "memory"))),
    "DIALER_REDIS_URL": ("redis_url", _url(("redis", "rediss", "unix", "memory"))),
    "CATAPULT_API_URL": ("catapult_api_url", _url(("http", "https"))),
    "CATAPULT_USER_ID": ("catapult_user_id", _text),
    "CATAPULT_API_TOKEN": ("catapult_api_token", _text),
    "CATAPULT_API_SECRET": ("catapult_api_secret", _text),
    "DIALER_CALLBACK_URL": ("callback_url", _url(("http", "https"))),
    "DIALER_CALLBACK_SECRET": ("callback_secret", _text),
    "DIALER_RECEIVER_REQUEST_TIMEOUT": ("receiver_request_timeout", _positive_float),
    "DIALER_HTTP_TIMEOUT": ("http_timeout", _positive_float),
    "DIALER_ACCOUNT_CPS": ("account_cps", _positive_float),
    "DIALER_NUMBER_CPS": ("number_cps", _positive_float),
    "DIALER_ACCOUNT_RPS": ("account_rps", _positive_float),
    "DIALER_WORKER_THREADS": ("worker_threads", _positive_int),
    "DIALER_EVENT_CONSUMERS": ("event_consumers", _count),
    "DIALER_LOG_FORMAT": ("log_format", _choice("text", "json")),
    "DIALER_METRICS_TOKEN": ("metrics_token", _text),
    "DIALER_WEB_USER": ("web_user", _web_user),
    "DIALER_WEB_PASSWORD": ("web_password", _text),
    "DIALER_WEB_MAX_UPLOAD_MB": ("web_max_upload_mb", _positive_int),
}
_ATTR = {name: attr for name, (attr, _) in _VARIABLES.items()}


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every setting; raise SettingsError naming each malformed variable."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    errors: list[str] = []
    for name, (attr, coerce) in _VARIABLES.items():
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        try:
            values[attr] = coerce(name, raw)
        except SettingsError as exc:
            errors.append(str(exc))
    # Whoever may read metrics must not thereby be able to post callbacks, and a token
    # pasted into a Prometheus config must not be the secret that moves contacts.
    token = values.get("metrics_token")
    if token is not None and token == values.get("callback_secret"):
        errors.append("DIALER_METRICS_TOKEN must differ from DIALER_CALLBACK_SECRET")
    if errors:
        raise SettingsError("; ".join(errors))
    # DIALER_REDIS_URL defaults to the broker URL, whatever that was set to.
    if "redis_url" not in values and "broker_url" in values:
        values["redis_url"] = values["broker_url"]
    return Settings(**values)  # type: ignore[arg-type]


_current: Settings | None = None


def get() -> Settings:
    """The process's settings, read once."""
    global _current
    if _current is None:
        _current = load()
    return _current


def override(settings: Settings | None) -> None:
    """Replace the process's settings (tests and the demo)."""
    global _current
    _current = settings
