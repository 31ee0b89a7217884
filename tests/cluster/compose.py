"""docker-compose.yml read as data: the multi-node test starts each service's command with
the service's environment, so the namespaces run what the containers would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


def services() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves <<: merges
    return dict(loaded["services"])


def command(service: str) -> list[str]:
    return list(services()[service]["command"])


def healthcheck(service: str) -> list[str]:
    test = services()[service]["healthcheck"]["test"]
    assert test[0] == "CMD", f"{service}: the test runs exec-form healthchecks only"
    return list(test[1:])


def environment(service: str, overrides: dict[str, str]) -> dict[str, str]:
    """The service's environment with the test's values for addresses and paths. A value
    that compose would interpolate (``${...}``) must be overridden."""
    env = {key: str(value) for key, value in services()[service]["environment"].items()}
    env.update(overrides)
    unresolved = [key for key, value in env.items() if "${" in value]
    assert not unresolved, f"{service}: give the test a value for {unresolved}"
    return env
