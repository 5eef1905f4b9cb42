"""docker-compose.yml, .env.example and the Dockerfile agree and hold together.

The structure is checked everywhere; ``config -q`` runs where a compose client exists
(``docker compose`` or ``docker-compose``), since no test here can build or start images.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dialer import settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DIALER_SERVICES = ("migrate", "worker", "beat", "receiver", "simulator")
LONG_RUNNING = ("worker", "beat", "receiver")
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=value: {line!r}"
            pairs[key.strip()] = value.strip()
    return pairs


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _variables() -> list[re.Match[str]]:
    """Every ${VAR} in the file's values (comments are not read)."""

    def strings(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [s for k, v in node.items() for s in strings(k) + strings(v)]
        if isinstance(node, list):
            return [s for item in node for s in strings(item)]
        return [node] if isinstance(node, str) else []

    return [m for text in strings(_compose()) for m in VAR.finditer(text)]


def test_services_are_the_production_set() -> None:
    assert set(_services()) == {"postgres", "redis", *DIALER_SERVICES}


def test_every_dialer_service_runs_the_one_image_built_here() -> None:
    services = _services()
    images = {services[name].get("image") for name in DIALER_SERVICES}
    assert len(images) == 1 and None not in images, images
    for name in DIALER_SERVICES:
        build = services[name].get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        assert context == ".", f"{name} is not built from the project's Dockerfile"
    assert (ROOT / "Dockerfile").is_file()


def test_postgres_and_redis_are_healthchecked_on_named_volumes() -> None:
    services = _services()
    declared = set(_compose().get("volumes") or {})
    for name in ("postgres", "redis"):
        service = services[name]
        assert service["healthcheck"]["test"], f"{name} has no health check"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in declared, f"{name} mounts {source}, not a named volume"
        assert service.get("volumes"), f"{name} keeps its data in the container"


def test_migrate_runs_once_before_everything_that_reads_the_database() -> None:
    services = _services()
    migrate = services["migrate"]
    assert migrate["command"] == ["dialer", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in LONG_RUNNING:
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
        assert services[name]["restart"] == "unless-stopped", name


def test_workers_scale_and_processes_run_what_the_readme_names() -> None:
    services = _services()
    for name, service in services.items():
        assert "container_name" not in service, f"{name} has a container_name"
    worker = services["worker"]
    assert "ports" not in worker and "hostname" not in worker
    assert worker["command"][:4] == ["celery", "-A", "dialer", "worker"]
    beat = [a for a in services["beat"]["command"] if a != "-q"]  # -q: no banner on stdout
    assert beat[:4] == ["celery", "-A", "dialer", "beat"]
    # The image's user cannot write its working directory: beat's schedule goes to /tmp.
    assert any(arg.startswith("--schedule=/tmp/") for arg in services["beat"]["command"])
    assert services["receiver"]["command"][:2] == ["dialer", "receiver"]


def test_receiver_is_published_on_a_configurable_host_port_and_healthchecked() -> None:
    receiver = _services()["receiver"]
    (port,) = receiver["ports"]
    assert port.endswith(":8080") and "${RECEIVER_PORT" in port
    assert "/healthz" in " ".join(receiver["healthcheck"]["test"])


def test_simulator_only_in_the_trial_profile_and_nobody_needs_it() -> None:
    services = _services()
    assert services["simulator"]["profiles"] == ["trial"]
    assert services["simulator"]["command"][:2] == ["dialer", "simulator"]
    for name, service in services.items():
        assert "simulator" not in (service.get("depends_on") or {}), name
        if name != "simulator":
            assert "profiles" not in service, f"{name} would not start by default"


def test_every_variable_compose_reads_is_in_env_example() -> None:
    used = {m.group(1) for m in _variables()}
    example = _env_example()
    assert used - set(example) == set(), "missing from .env.example"
    assert set(example) - used == set(), "in .env.example but unused by compose"
    # Required ones (${VAR:?...}) are left empty there, so compose names any unfilled one;
    # the others carry their default (empty where empty means "off").
    required = {m.group(1) for m in _variables() if m.group(2) == ":?"}
    empty_default = {m.group(1) for m in _variables() if m.group(2) == ":-" and not m.group(3)}
    assert {k for k, v in example.items() if not v} == required | empty_default
    for m in _variables():
        if m.group(2) == ":-":
            assert example[m.group(1)] == m.group(3), f"{m.group(1)}: default differs"


def test_every_dialer_setting_is_accounted_for() -> None:
    text = ENV_EXAMPLE.read_text()
    env = _compose()["x-dialer"]["environment"]
    for name in settings._VARIABLES:
        assert name in env or name in text, f"{name} is neither set by compose nor documented"


def test_secrets_stay_out_of_git_and_the_build_context() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_dockerfile_installs_the_project_from_its_source_tree() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    copied = set()
    for line in lines:
        if line.startswith("COPY "):
            copied.update(line.split()[1:-1])
    # pyproject's readme, and what `dialer db upgrade` reads next to the package.
    assert {"pyproject.toml", "README.md", "alembic.ini", "dialer", "migrations"} <= copied
    # migrate.py finds alembic.ini and migrations/ beside the package: an editable install.
    assert any(re.search(r"pip install (.* )?-e \.", line) for line in lines)
    assert lines[0].startswith("FROM python:3.1")
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] != "root"


def _client() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _config(client: list[str], env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *client,
            "--project-directory",
            str(ROOT),
            "-f",
            str(COMPOSE),
            "--env-file",
            str(env_file),
            *extra,
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_client_validates_the_file(tmp_path: Path) -> None:
    client = _client()
    if client is None:
        pytest.skip("no compose client here (neither `docker compose` nor `docker-compose`)")
    filled = tmp_path / "filled.env"
    filled.write_text(
        "".join(f"{k}={v or 'placeholder' + k.lower()}\n" for k, v in _env_example().items())
    )
    for extra in ((), ("--profile", "trial")):
        out = _config(client, filled, *extra)
        assert out.returncode == 0, f"{' '.join(client)} config {extra}: {out.stderr}"
    # .env.example as it is, unfilled: compose refuses and names what is missing.
    out = _config(client, ENV_EXAMPLE)
    assert out.returncode != 0
    assert re.search(r"set [A-Z_]+ in \.env", out.stderr), out.stderr
