"""Data-parallel training on a real local Ray cluster, with real MPI and real gloo.

The independent reference is the single-process trainer (world size 1, no Ray):
N workers must reproduce its weights and its loss curve.
"""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.data import load_dataset
from common.nn import Network
from common.records import StepRecord
from common.schemas import JobSpec
from tests.processes import process_exists
from tests.reference import single_process_run as reference
from worker.driver import Recorder, TrainingResult, train
from worker.errors import (
    GroupTimeoutError,
    JobCancelledError,
    PlacementError,
    RankFailedError,
    ReplicaMismatchError,
)
from worker.faults import Fault, FaultPlan
from worker.group import GroupOptions, RankInfo

pytestmark = pytest.mark.slow

# 1437 training digits in global batches of 67: 22 steps, the last one of 30;
# 67 splits unevenly over 2 (34 + 33) and 3 (23 + 22 + 22) ranks.
EQUIVALENCE = {
    "model": {"input_dim": 64, "layers": [{"units": 32, "activation": "tanh"},
                                          {"units": 16, "activation": "relu"},
                                          {"units": 10, "activation": "softmax"}]},
    "optimizer": {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
    "batch_size": 67, "epochs": 1, "dtype": "float64", "seed": 3}


def job(**overrides: Any) -> JobSpec:
    return JobSpec.model_validate({**EQUIVALENCE, **overrides})


def run_job(spec: JobSpec, options: GroupOptions | None = None,
            hooks: Recorder | None = None) -> tuple[TrainingResult, list[StepRecord]]:
    hooks = hooks or Recorder()
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    result = train(spec, data, options or GroupOptions(), hooks)
    return result, hooks.steps


def armed(fault: Fault) -> Recorder:
    """Hooks that arm ``fault`` before the first chunk and record the rest."""
    return Recorder(FaultPlan(fault))


def alive_actor_pids() -> set[int]:
    from ray.util.state import list_actors

    return {a.pid for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)}




def assert_group_gone(ranks: list[RankInfo], within_s: float = 10) -> None:
    """No actor of the group alive in Ray's state API, and no process of it left."""
    pids = {r.pid for r in ranks}
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not pids & alive_actor_pids() and not any(map(process_exists, pids)):
            return
        time.sleep(0.2)
    assert not pids & alive_actor_pids(), "Ray still lists actors of the job as ALIVE"
    assert not [pid for pid in pids if process_exists(pid)], "worker processes are left"


@pytest.mark.parametrize("allreduce", ["mpi", "ray"])
@pytest.mark.parametrize("workers", [2, 3])
def test_n_workers_equal_the_single_process_reference(ray_cluster: Any, allreduce: str,
                                                      workers: int) -> None:
    spec = job(workers=workers, allreduce=allreduce)
    expected_params, expected_records = reference(spec)
    result, records = run_job(spec)

    assert result.steps == len(records) == len(expected_records) == 22
    assert [r.step for r in records] == list(range(1, 23))
    np.testing.assert_allclose([r.loss for r in records], [r.loss for r in expected_records],
                               rtol=1e-10)
    np.testing.assert_allclose(result.params, expected_params, rtol=1e-10, atol=1e-14)
    assert records[-1].val_accuracy == pytest.approx(expected_records[-1].val_accuracy)
    # Every replica ends with the same parameters: one hash, and it is rank 0's.
    assert len(result.fingerprints) == workers and len(set(result.fingerprints)) == 1
    import hashlib
    assert result.fingerprints[0] == hashlib.sha256(result.params.tobytes()).hexdigest()
    assert len({r.pid for r in result.ranks}) == workers


@pytest.mark.parametrize("allreduce", ["mpi", "ray"])
def test_a_raising_rank_fails_the_job_fast_and_leaves_no_actor(ray_cluster: Any,
                                                                allreduce: str) -> None:
    hooks = armed(Fault(rank=1, step=5))
    spec = job(workers=2, allreduce=allreduce, epochs=5)
    began = time.monotonic()
    with pytest.raises(RankFailedError) as failure:
        run_job(spec, hooks=hooks)
    assert time.monotonic() - began < 30
    message = str(failure.value)
    assert "rank 1 (node " in message and "InjectedFaultError: injected fault at step 5" in message
    assert "rank 0" not in message  # rank 0 did nothing wrong: it was waiting
    assert_group_gone(hooks.groups[0])


def test_a_killed_worker_process_fails_the_job_naming_it(ray_cluster: Any) -> None:
    """With no restarts allowed (recovery has its own tests in test_recovery.py)."""
    hooks = armed(Fault(rank=1, step=7, action="kill"))
    began = time.monotonic()
    with pytest.raises(RankFailedError, match=r"rank 1 \(node .*pid \d+\): worker process died"):
        run_job(job(workers=2, allreduce="mpi", epochs=5, max_restarts=0), hooks=hooks)
    assert time.monotonic() - began < 30
    assert_group_gone(hooks.groups[0])


def test_a_hung_rank_is_a_timeout_not_a_hang(ray_cluster: Any) -> None:
    hooks = armed(Fault(rank=0, step=12, action="hang"))
    began = time.monotonic()
    with pytest.raises(GroupTimeoutError, match=r"ranks \[0, 1\] did not finish within 3 s"):
        run_job(job(workers=2, allreduce="mpi", epochs=5, steps_per_chunk=10, max_restarts=0),
                GroupOptions(chunk_timeout_s=3), hooks)
    assert time.monotonic() - began < 30
    assert_group_gone(hooks.groups[0])


def test_diverged_replicas_are_detected_by_fingerprint(ray_cluster: Any) -> None:
    with pytest.raises(ReplicaMismatchError, match=r"ranks \[1\] hold parameters different"):
        run_job(job(workers=2, allreduce="mpi", fingerprint_every=5, steps_per_chunk=5),
                hooks=armed(Fault(rank=1, step=3, action="perturb")))


def test_too_many_workers_is_refused_with_the_numbers(ray_cluster: Any) -> None:
    with pytest.raises(PlacementError, match=r"workers: 9 x 1 CPU asked, the cluster has 4 CPUs"):
        run_job(job(workers=9), GroupOptions(placement_timeout_s=2))


def test_digits_with_two_mpi_workers_reaches_the_one_worker_accuracy(ray_cluster: Any) -> None:
    spec = JobSpec.model_validate({"optimizer": {"lr": 0.1, "momentum": 0.9}, "epochs": 30,
                                   "workers": 2, "allreduce": "mpi", "seed": 1})
    _, single = reference(spec)
    _, records = run_job(spec)
    assert len(records) == len(single) == 30 * 23
    accuracy = records[-1].val_accuracy
    assert accuracy is not None and accuracy >= 0.96
    assert accuracy == pytest.approx(single[-1].val_accuracy, abs=2 / 360)  # float32 sums differ


def test_mpiexec_native_launch_gives_the_same_weights(tmp_path: Path) -> None:
    spec = job(workers=2, allreduce="mpi")
    expected_params, expected_records = reference(spec)
    spec_file = tmp_path / "job.json"
    spec_file.write_text(spec.model_dump_json())
    mpiexec = Path(sys.executable).with_name("mpiexec")
    out = tmp_path / "out"
    done = subprocess.run([str(mpiexec), "-n", "2", sys.executable, "-m", "worker.mpi_main",
                           str(spec_file), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["world_size"] == 2
    lines = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 23))
    np.testing.assert_allclose([line["loss"] for line in lines],
                               [r.loss for r in expected_records], rtol=1e-10)
    np.testing.assert_allclose(Network.load(out / "model.npz").params, expected_params,
                               rtol=1e-10, atol=1e-14)


def test_cancel_between_chunks_stops_the_job_and_frees_its_workers(ray_cluster: Any) -> None:
    class CancelAfter20(Recorder):
        def cancelled(self) -> bool:
            return len(self.steps) >= 20

    hooks = CancelAfter20()
    with pytest.raises(JobCancelledError, match="cancelled at step 20"):
        run_job(job(workers=2, allreduce="mpi", epochs=50, steps_per_chunk=10), hooks=hooks)
    assert [r.step for r in hooks.steps] == list(range(1, 21))
    assert_group_gone(hooks.groups[0])
    import ray

    deadline = time.monotonic() + 10  # placement groups are removed asynchronously
    while ray.available_resources().get("CPU") != ray.cluster_resources().get("CPU"):
        assert time.monotonic() < deadline, "the job's CPUs were not given back"
        time.sleep(0.2)
