"""docker-compose.yml and the Dockerfile, checked offline (no Docker engine on these machines):
the compose-spec schema, and that everything the file names exists. The commands and
environments themselves run for real in test_multinode.py."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests.cluster import compose

pytestmark = pytest.mark.slow  # runs the installed commands in subprocesses

ROOT = compose.ROOT
CHECK_JSONSCHEMA = str(Path(sys.executable).with_name("check-jsonschema"))
HADOLINT = str(Path(sys.executable).with_name("hadolint"))
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def check_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True, timeout=120)


def test_the_compose_file_is_valid_by_the_compose_spec(tmp_path: Path) -> None:
    done = check_schema(compose.COMPOSE_FILE)
    assert done.returncode == 0, done.stdout + done.stderr
    # ... and the check can fail: a condition compose does not know is refused.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(compose.COMPOSE_FILE.read_text().replace(
        "condition: service_healthy", "condition: service_ready", 1))
    refused = check_schema(broken)
    assert refused.returncode != 0 and "service_ready" in refused.stdout + refused.stderr


def test_the_topology_is_a_head_two_workers_and_the_api() -> None:
    services = compose.services()
    assert set(services) == {"ray-head", "ray-worker", "api"}
    assert services["ray-worker"]["deploy"]["replicas"] == 2
    assert services["ray-head"]["environment"]["RAY_NUM_CPUS"] == "0"
    assert "8000:8000" in services["api"]["ports"]
    assert services["api"]["environment"]["SYNCSGD_TOKEN"].startswith("${SYNCSGD_TOKEN:?")
    for name, service in services.items():
        assert service["image"] == "syncsgd:latest", name  # one image for every role
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["environment"]["RAY_AUTH_MODE"] == "token", name


def test_everything_the_compose_file_names_exists() -> None:
    loaded = yaml.safe_load(compose.COMPOSE_FILE.read_text())
    services = loaded["services"]
    mounted: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on a missing service {target}"
            assert rule["condition"] == "service_healthy"
            assert "healthcheck" in services[target], f"{target} has no healthcheck"
        for volume in service.get("volumes", []):
            source, mount = volume.split(":")[:2]
            assert source in loaded["volumes"], f"{name}: volume {source} is not declared"
            mounted[source].append((name, mount))
        context = ROOT / service["build"]["context"]
        dockerfile = context / service["build"]["dockerfile"]
        assert context.is_dir() and dockerfile.is_file(), f"{name}: no {dockerfile}"
        script = ROOT / service["command"][0]
        assert script.is_file() and script.stat().st_mode & 0o111, f"{name}: {script}"
        # every variable the script insists on (${VAR:?...}) is set for the service
        required = re.findall(r"\$\{(\w+):\?", script.read_text())
        missing = [v for v in required if v not in service["environment"]]
        assert not missing, f"{name}: {script.name} needs {missing}"
    # The API's data is kept; the datasets it ingests lie where every worker reads them.
    api = services["api"]["environment"]
    assert mounted["syncsgd-data"] == [("api", api["SYNCSGD_DATA_DIR"])]
    assert ("api", api["SYNCSGD_DATASETS_ROOT"]) in mounted["datasets"]
    assert ("ray-worker", api["SYNCSGD_DATASETS_ROOT"]) in mounted["datasets"]
    assert api["SYNCSGD_DATASETS_DIR"].startswith(api["SYNCSGD_DATASETS_ROOT"] + "/")


def test_the_start_scripts_are_valid_sh_and_the_image_contains_them() -> None:
    dockerfile = DOCKERFILE.read_text()
    copied = set(re.findall(r"^COPY (\S+) ", dockerfile, flags=re.MULTILINE))
    assert {"common", "worker", "service", "deploy"} <= copied
    for script in sorted((ROOT / "deploy").glob("*.sh")):
        syntax = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert syntax.returncode == 0, (script.name, syntax.stderr)
    for name in copied:
        assert (ROOT / name).exists(), name


def test_the_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    done = subprocess.run([HADOLINT, "--no-color", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # ... and the linter can fail: an unpinned base image is refused.
    unpinned = tmp_path / "Dockerfile"
    unpinned.write_text(DOCKERFILE.read_text().replace(
        "FROM python:3.11-slim", "FROM python:latest"))
    refused = subprocess.run([HADOLINT, "--no-color", str(unpinned)], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0 and "DL3007" in refused.stdout
