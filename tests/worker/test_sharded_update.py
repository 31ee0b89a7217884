"""The sharded optimizer update (ZeRO stage 1) keeps N workers = 1 worker, on a real local
Ray with real MPI and gloo, and on real MPI ranks started by ``mpiexec``."""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.data import load_dataset
from common.schemas import JobSpec
from tests.worker.test_controls_parallel import reference
from tests.worker.test_data_parallel import run_job
from worker.driver import Recorder, train
from worker.group import GroupOptions

pytestmark = pytest.mark.slow

#: 2,785 parameters: 3 blocks of 1,024 and a short one; at 2 and 3 workers the slices are
#: uneven (2,048 + 737; 1,024 + 1,024 + 737). 1437 digits in batches of 67: 22 steps.
BASE: dict[str, Any] = {
    "model": {"input_dim": 64, "layers": [{"units": 37, "activation": "tanh"},
                                          {"units": 10, "activation": "softmax"}]},
    "batch_size": 67, "epochs": 2, "dtype": "float64", "seed": 5, "sharded_update": True}
OPTIMIZERS = {
    "sgd": {"kind": "sgd", "lr": 0.1},
    "momentum": {"kind": "sgd", "lr": 0.1, "momentum": 0.9, "clip_norm": 0.5},
    "nesterov": {"kind": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True,
                 "weight_decay": 1e-3},
    "adam": {"kind": "adam", "lr": 0.01, "weight_decay": 1e-3},
}
PROBE = [str(Path(sys.executable).with_name("mpiexec")), "-n", "3", sys.executable, "-m",
         "tests.worker.sharded_probe"]


def spec_for(optimizer: str, **fields: Any) -> JobSpec:
    return JobSpec.model_validate({**BASE, "optimizer": OPTIMIZERS[optimizer], **fields})


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("allreduce", ["mpi", "ray"])
def test_every_optimizer_sharded_equals_the_one_worker_run(ray_cluster: Any, allreduce: str,
                                                           optimizer: str) -> None:
    spec = spec_for(optimizer)
    expected_params, expected = reference(spec)
    # the reference itself: a sharded update of one slice is the plain update, bit for bit
    plain_params, _ = reference(spec.model_copy(update={"sharded_update": False}))
    assert plain_params.tobytes() == expected_params.tobytes()
    for workers in (2, 3):
        result, records = run_job(spec.model_copy(update={"workers": workers,
                                                          "allreduce": allreduce}))
        np.testing.assert_allclose([r.loss for r in records], [r.loss for r in expected],
                                   rtol=1e-10)
        np.testing.assert_allclose([r.grad_norm for r in records],
                                   [r.grad_norm for r in expected], rtol=1e-10)
        np.testing.assert_allclose(result.params, expected_params, rtol=1e-10, atol=1e-13)
        assert len(set(result.fingerprints)) == 1


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_sharded_deterministic_mode_gives_one_sha256_for_1_to_4_workers(
        ray_cluster: Any, optimizer: str) -> None:
    spec = spec_for(optimizer, deterministic=True, micro_shards=4)
    one_params, one = reference(spec)
    for workers, allreduce in ((2, "mpi"), (3, "ray"), (4, "mpi")):
        result, records = run_job(spec.model_copy(update={"workers": workers,
                                                          "allreduce": allreduce}))
        assert result.params.tobytes() == one_params.tobytes(), (workers, allreduce)
        assert [(r.loss, r.grad_norm, r.val_loss) for r in records] == [
            (r.loss, r.grad_norm, r.val_loss) for r in one]


@pytest.mark.parametrize(("before", "after"), [(2, 3), (3, 2)])
def test_a_checkpoint_resumes_exactly_on_another_number_of_workers(ray_cluster: Any,
                                                                   before: int,
                                                                   after: int) -> None:
    """Adam's moments are sharded: the checkpoint holds them whole, and the new world
    size slices them its own way. Deterministic mode: the same bits as an undisturbed
    run."""
    spec = spec_for("adam", deterministic=True, micro_shards=6, checkpoint_every=10,
                    allreduce="mpi")
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    undisturbed, _ = run_job(spec.model_copy(update={"workers": before}))
    first = Recorder()
    train(spec.model_copy(update={"workers": before, "max_steps": 20}), data, GroupOptions(),
          first)
    state = first.checkpoints[1]
    assert state.step == 20 and state.optimizer["m"].shape == (spec.model.num_parameters,)
    resumed = train(spec.model_copy(update={"workers": after}), data, GroupOptions(),
                    Recorder(), resume=state)
    assert resumed.params.tobytes() == undisturbed.params.tobytes()


def probe(*args: str) -> list[dict[str, Any]]:
    done = subprocess.run([*PROBE, *args], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    reports = [json.loads(line) for line in re.findall(r"\{[^{}]*\}", done.stdout)]
    return sorted(reports, key=lambda report: report["rank"])


def test_each_rank_holds_only_its_slice_of_the_optimizer_state() -> None:
    reports = probe("sizes")
    assert [r["owned"] for r in reports] == [[0, 1024], [1024, 2048], [2048, 2785]]
    assert [(r["m"], r["v"]) for r in reports] == [(1024, 1024), (1024, 1024), (737, 737)]
    assert all(r["gathered_m"] == r["parameters"] == 2785 for r in reports)


@pytest.mark.parametrize("mode", ["float", "deterministic"])
def test_a_nan_in_any_slice_stops_every_rank_naming_the_step(mode: str) -> None:
    """Rank 0's gradient gets a NaN inside one rank's slice only (each slice in turn);
    after the reduce-scatter only that rank holds it, and every rank stops at step 7."""
    reports = probe("nan", mode)
    assert len(reports) == 3
    for report in reports:
        assert len(report["errors"]) == 3  # a NaN in slice 0, 1, 2
        assert all(e is not None and e.startswith("diverged at step 7")
                   for e in report["errors"]), report
