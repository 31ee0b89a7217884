"""Every training control keeps the promise on a real local Ray with real MPI and gloo: N
workers reproduce the 1-worker run step by step (float64, rtol 1e-10), and deterministic
mode gives one sha256 for 1 to 4 workers. The reference is the single-process trainer
(world size 1, no Ray), run with one BLAS thread as the ranks are."""

import hashlib
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from common.records import StepRecord
from common.schemas import JobSpec
from tests.reference import single_process_run
from tests.worker.test_data_parallel import run_job
from worker.driver import Recorder, TrainingResult
from worker.faults import Fault, FaultPlan

pytestmark = pytest.mark.slow

#: 1797 digits, 85% of them held out: 270 training rows, batches of 31 (the last of 22),
#: 9 steps an epoch. Small enough to overfit, so early stopping stops (before epoch 12).
STEPS_PER_EPOCH = 9
BASE: dict[str, Any] = {
    "model": {"input_dim": 64, "layers": [{"units": 48, "activation": "tanh"},
                                          {"units": 32, "activation": "relu"},
                                          {"units": 10, "activation": "softmax"}]},
    "optimizer": {"lr": 0.1, "momentum": 0.9}, "data": {"validation_fraction": 0.85},
    "batch_size": 31, "epochs": 12, "dtype": "float64", "seed": 3}
PLATEAU = {"kind": "plateau", "factor": 0.5, "patience": 1}  # lowers the rate 5 times
DROPOUT_LAYERS = [{"units": 48, "activation": "tanh", "dropout": 0.3},
                  {"units": 32, "activation": "relu", "dropout": 0.1},
                  {"units": 10, "activation": "softmax"}]
CONTROLS: dict[str, dict[str, Any]] = {
    "schedule": {"optimizer": {"lr": 0.1, "momentum": 0.9, "warmup_steps": 12,
                               "schedule": PLATEAU}},
    "early_stopping": {"early_stopping": {"patience": 2}},
    "clip": {"optimizer": {"lr": 0.1, "momentum": 0.9, "clip_norm": 0.3}},  # binds half
    "accumulation": {"accumulation_steps": 3},
    "dropout": {"model": {"input_dim": 64, "layers": DROPOUT_LAYERS}},
    "adamw": {"optimizer": {"kind": "adamw", "lr": 0.01, "weight_decay": 0.05}},
    "all": {"optimizer": {"kind": "adamw", "lr": 0.01, "weight_decay": 0.05,
                          "warmup_steps": 12, "clip_norm": 0.3, "schedule": PLATEAU},
            "early_stopping": {"patience": 2}, "accumulation_steps": 3,
            "model": {"input_dim": 64, "layers": DROPOUT_LAYERS}},
}


def spec_with(control: str, **fields: Any) -> JobSpec:
    return JobSpec.model_validate({**BASE, **CONTROLS[control], **fields})


def reference(spec: JobSpec) -> tuple[np.ndarray, list[StepRecord]]:
    with threadpool_limits(limits=1, user_api="blas"):
        return single_process_run(spec)


def curve(records: list[StepRecord]) -> list[tuple[Any, ...]]:
    return [(r.step, r.loss, r.lr, r.grad_norm, r.val_loss, r.val_accuracy) for r in records]


def digest(params: np.ndarray) -> str:
    return hashlib.sha256(params.tobytes()).hexdigest()


@pytest.mark.parametrize("control", list(CONTROLS))
@pytest.mark.parametrize("allreduce", ["mpi", "ray"])
def test_each_control_and_all_together_equal_the_one_worker_run(ray_cluster: Any,
                                                                 allreduce: str,
                                                                 control: str) -> None:
    spec = spec_with(control)
    expected_params, expected = reference(spec)
    if control in ("early_stopping", "all"):
        assert len(expected) < spec.epochs * STEPS_PER_EPOCH  # it does stop early
    for workers in (2, 3):
        result, records = run_job(spec.model_copy(update={"workers": workers,
                                                          "allreduce": allreduce}))
        assert [r.step for r in records] == [r.step for r in expected], workers
        for got, want in zip(curve(records), curve(expected), strict=True):
            np.testing.assert_allclose(np.array(got, dtype=float),
                                       np.array(want, dtype=float), rtol=1e-10)
        np.testing.assert_allclose(result.params, expected_params, rtol=1e-10, atol=1e-13)
        _check_stop(result, records, expected)


def _check_stop(result: TrainingResult, records: list[StepRecord],
                expected: list[StepRecord]) -> None:
    if result.early_stopping is not None:
        assert result.early_stopping.stopped_at_epoch == expected[-1].epoch == records[-1].epoch


@pytest.mark.parametrize(("control", "allreduce"),
                         [(control, "mpi") for control in CONTROLS] + [("all", "ray")])
def test_deterministic_mode_gives_one_sha256_for_1_to_4_workers(ray_cluster: Any,
                                                                control: str,
                                                                allreduce: str) -> None:
    spec = spec_with(control, deterministic=True, micro_shards=4)
    one_params, one = reference(spec)
    for workers in (2, 3, 4):
        result, records = run_job(spec.model_copy(update={"workers": workers,
                                                          "allreduce": allreduce}))
        assert digest(result.params) == digest(one_params), workers
        assert curve(records) == curve(one), workers  # every value, bit for bit


def test_a_rank_sigkilled_between_the_best_epoch_and_the_stop_stops_the_same(
        ray_cluster: Any) -> None:
    """Rank 1 is SIGKILLed in the stopping epoch. The fresh group restores the state rank
    0 returned with the last chunk, holding early stopping's best value, the epochs of
    patience spent and the best weights (no longer the current ones), and stops where
    the undisturbed run stops, with its weights."""
    spec = spec_with("all", workers=2, allreduce="mpi", checkpoint_every=STEPS_PER_EPOCH,
                     steps_per_chunk=4, max_restarts=1)
    undisturbed, records = run_job(spec)
    early = undisturbed.early_stopping
    assert early is not None and early.stopped_at_epoch is not None
    assert early.best_epoch is not None and early.stopped_at_epoch - early.best_epoch == 2
    assert records[-1].step == (early.stopped_at_epoch + 1) * STEPS_PER_EPOCH
    kill_at = early.stopped_at_epoch * STEPS_PER_EPOCH + 5  # in the stopping epoch
    hooks = Recorder(FaultPlan(Fault(rank=1, step=kill_at, action="kill")))
    resumed, replayed = run_job(spec, hooks=hooks)
    (restart,) = hooks.restarts
    assert early.stopped_at_epoch * STEPS_PER_EPOCH <= restart.from_step < kill_at
    assert restart.from_step + restart.lost_steps >= kill_at and restart.lost_steps <= 4
    assert "worker process died" in restart.cause
    assert resumed.early_stopping == early
    assert [r.step for r in replayed] == [r.step for r in records]  # each step once
    assert resumed.params.tobytes() == undisturbed.params.tobytes()
