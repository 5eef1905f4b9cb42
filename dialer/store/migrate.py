"""Run the Alembic migrations in ``migrations/`` (``dialer db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

ROOT = Path(__file__).resolve().parents[2]


def alembic_config() -> Config:
    ini = ROOT / "alembic.ini"
    if not ini.exists():
        raise SystemExit(
            f"cannot find {ini}: run the dialer from its source tree (pip install -e .)"
        )
    return Config(str(ini))


def upgrade(engine: Engine | None = None, revision: str = "head") -> None:
    cfg = alembic_config()
    if engine is None:
        command.upgrade(cfg, revision)
        return
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
