"""Schema-driven fuzzing of a real service with the ``schemathesis`` CLI: every operation of
its live OpenAPI document, in every phase (the document's examples, boundary coverage,
random fuzzing, and stateful sequences that follow the document's links), with two seeds.

The service runs with a token that reads need too, so every check that auth is enforced
(wrong and missing tokens) applies to every operation. Passing means: no 5xx, every
answer's status, content type and body as documented, and no "schema validation
mismatch" (an operation that refused every case its schema allows).

One check is left out: ``positive_data_acceptance``, which wants *every* schema-valid
case accepted. A job spec has constraints across fields that JSON Schema does not state
(a cross-entropy loss needs a softmax last layer, ``input_dim`` must match the dataset,
epochs x samples and the parameter count have service limits), and uploads must parse as
their format. Those refusals name the field (tests/service/test_api.py checks the
wording); what this test demands is that no operation refuses everything.

Every operation is on: drills (fuzzed kills and hangs of the fuzzed jobs' workers, which
recover or fail), and registration from a datasets root holding one file, whose name
schemathesis draws from a dictionary for half of the cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import Server, start_server
from tests.helpers import four_class_csv, wait_for

pytestmark = pytest.mark.slow

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Operations given a job that has succeeded, so that their cases reach it (and its model):
#: all on one job but DELETE, in the phases that follow no links.
READS_OF_A_JOB = ("GET /jobs/{job_id}", "GET /jobs/{job_id}/curve", "GET /jobs/{job_id}/model",
                  "GET /jobs/{job_id}/events", "POST /jobs/{job_id}/predict",
                  "POST /jobs/{job_id}/events/ticket", "POST /jobs/{job_id}/cancel",
                  "POST /jobs/{job_id}/faults")

#: Each /verify case trains twice on real workers: its coverage phase (hundreds of
#: boundary cases) would take many minutes. Its spec is the job spec, whose boundaries
#: the coverage phase covers through POST /jobs; /verify gets the other phases.
VERIFY_CONFIG = """[[operations]]
include-name = "POST /verify"
phases.coverage.enabled = false

"""
REGISTRABLE = "four-classes.csv"
#: Half of the registrations name the file that is there, as schemathesis' dictionaries
#: supply test data a schema cannot (what files the root holds). The coverage phase draws
#: no dictionary values: its boundary strings never name a file, so every case would be
#: refused for its path; registration gets the other phases.
REGISTER_CONFIG = f"""[dictionaries.registrable]
values = ["{REGISTRABLE}"]

[[operations]]
include-name = "POST /datasets/register"
parameters = {{ "body.path" = {{ dictionary = "registrable", probability = 0.5 }} }}
phases.coverage.enabled = false

"""

#: More CPUs than the queue's jobs take (Ray's CPUs are logical), so that /verify finds
#: some free rather than answering 409 to every case; one job at a time, so that the
#: hundreds of fuzzed jobs queued behind the fuzzing do not load the machine. Drills are
#: on (a fuzzed "hang" is over in CHUNK_TIMEOUT_S) and so is registration, from a root
#: that holds one CSV file.
SETTINGS: dict[str, Any] = dict(
    ray_num_cpus=8, max_concurrent_jobs=1, token=TOKEN, auth_reads="true",
    datasets_quota_bytes=20_000_000, max_epoch_samples=20_000, max_parameters=50_000,
    max_workers_per_job=2, max_verify_steps=20, fault_injection="true", chunk_timeout_s=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("registrable")
    (root / REGISTRABLE).write_bytes(four_class_csv())
    srv = start_server(tmp_path_factory.mktemp("fuzzing") / "data", datasets_root=str(root),
                       **SETTINGS)
    yield srv
    srv.stop_cleanly()


@pytest.fixture
def kept_job(server: Server) -> tuple[str, Any]:
    """A succeeded job with one input feature, which the case phases must leave as it is.
    One per test: a stateful phase may delete any job it lists, this one too."""
    job_id = succeeded_job(server, "kept")
    return job_id, snapshot(server, job_id)


def succeeded_job(server: Server, name: str) -> str:
    spec = {"name": name, "epochs": 2, "allreduce": "local", "loss": "mse",
            "data": {"dataset": "synthetic", "synthetic": {
                "samples": 200, "features": 1, "outputs": 1, "task": "regression"}},
            "model": {"input_dim": 1, "layers": [{"units": 4, "activation": "tanh"},
                                                 {"units": 1, "activation": "identity"}]}}
    created = server.http.post("/jobs", json=spec, headers=AUTH)
    assert created.status_code == 201, created.text
    job_id: str = created.json()["id"]
    wait_for(lambda: state(server, job_id) == "succeeded", 60, f"the {name} job")
    return job_id


def state(server: Server, job_id: str) -> str:
    return str(server.http.get(f"/jobs/{job_id}", headers=AUTH).json()["state"])


def snapshot(server: Server, job_id: str) -> tuple[Any, bytes, bytes]:
    return (server.http.get(f"/jobs/{job_id}", headers=AUTH).json(),
            server.http.get(f"/jobs/{job_id}/curve", headers=AUTH).content,
            server.http.get(f"/jobs/{job_id}/model", headers=AUTH).content)


def run_schemathesis(server: Server, seed: int, phases: str, out: Path,
                     job_id: str | None = None, examples: int = 15) -> dict[str, Any]:
    """``schemathesis run`` of ``phases``; its JSON report, with its output under "output".
    With ``job_id``, the operations of READS_OF_A_JOB are given that job, and DELETE a job
    of its own to delete: schemathesis reuses ids it saw in responses (the jobs list names
    the kept job), and the case phases must leave the kept job as it is."""
    doomed = succeeded_job(server, "doomed") if job_id else None
    config = out / "schemathesis.toml"
    config.write_text(VERIFY_CONFIG + REGISTER_CONFIG + "".join(
        f'[[operations]]\ninclude-name = "{name}"\nparameters = {{ job_id = "{value}" }}\n\n'
        for name, value in [*((name, job_id) for name in READS_OF_A_JOB),
                            ("DELETE /jobs/{job_id}", doomed)] if job_id))
    command = [SCHEMATHESIS, "--config-file", str(config), "run", f"{server.url}/openapi.json",
               "--phases", phases, "--seed", str(seed), "--max-examples", str(examples),
               "--workers", "1", "--request-timeout", "120", "--no-color",
               "--header", f"Authorization: Bearer {TOKEN}",
               "--exclude-checks", "positive_data_acceptance",
               "--report", "json", "--report-json-path", str(out / "report.json")]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.fuzz_hooks",
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=out, env=env, capture_output=True, text=True,
                            timeout=1200)
    (out / "output.txt").write_text(result.stdout + result.stderr)  # every case, to replay
    assert (out / "report.json").exists(), result.stdout[-3000:] + result.stderr[-3000:]
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    report["output"] = result.stdout
    return report


def assert_clean(report: dict[str, Any]) -> None:
    """No 5xx, every answer as documented, no operation that refused all it was sent."""
    tail = report["output"][-6000:]
    assert report["complete"] and report["errors"] == [], tail
    assert report["failures"] == [], tail
    warned = {kind: operations for kind, operations in report["warnings"].items() if operations}
    assert warned == {}, tail  # no validation mismatch, no operation starved of test data
    assert all(outcome["status"] == "success" for outcome in report["phases"].values()
               if outcome["status"] != "skip"), tail


@pytest.mark.timeout(1800)
@pytest.mark.parametrize(("seed", "phases"), [(1, "examples,coverage,fuzzing"),
                                              (7, "examples,fuzzing")])
def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
        server: Server, kept_job: tuple[str, Any], seed: int, phases: str,
        tmp_path: Path) -> None:
    """The case phases with the kept job given to the operations on a job; then the
    stateful phase on its own, whose sequences reach every job they can list (and may
    delete it), so the kept job is checked between the two. The coverage phase's cases
    are boundary values, the same for every seed (and each /verify case trains twice):
    it runs with the first seed only."""
    job_id, kept = kept_job
    (tmp_path / "cases").mkdir()
    cases = run_schemathesis(server, seed, phases, tmp_path / "cases", job_id)
    assert_clean(cases)
    assert cases["operations"]["tested"] == cases["operations"]["total"] >= 20
    assert {phase for phase, outcome in cases["phases"].items()
            if outcome["status"] == "success"} == set(phases.split(","))
    assert cases["test_cases"]["generated"] >= 150
    assert snapshot(server, job_id) == kept  # what was stored is intact

    (tmp_path / "stateful").mkdir()
    stateful = run_schemathesis(server, seed, "stateful", tmp_path / "stateful", examples=50)
    assert_clean(stateful)
    assert stateful["phases"]["stateful"]["status"] == "success"
    assert stateful["test_cases"]["generated"] >= 200
    # Every operation took some case past its validation: accepted it, or answered that
    # the resource is in another state (409: cancelling the kept job, which has ended).
    # The ones on an id the fuzzer cannot guess, like DELETE /jobs/{job_id}, in the
    # stateful phase.
    accepted = {operation: 0 for report in (cases, stateful)
                for operation in report["valid_rates"]}
    for report in (cases, stateful):
        for operation, phases in report["valid_rates"].items():
            accepted[operation] += sum(rate["accepted"] + rate["conflicts"]
                                       for rate in phases.values())
    assert len(accepted) >= 20 and all(count > 0 for count in accepted.values()), accepted
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"
