"""Recovery from dead workers on a real local Ray: SIGKILLed processes, checkpoints, restarts.

With the same number of workers a restored run does exactly the same arithmetic
as an undisturbed one (same shards, same order, same BLAS calls), so the weights
are compared bit for bit, not to a tolerance.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.checkpoint import TrainingState, latest_checkpoint, list_checkpoints, save_checkpoint
from common.data import load_dataset
from common.schemas import JobSpec
from worker.driver import Recorder, Restart, TrainingResult, train
from worker.errors import RankFailedError, RestartsExhaustedError
from worker.faults import Fault, FaultPlan
from worker.group import GroupOptions

pytestmark = pytest.mark.slow

SPEC = JobSpec.model_validate({
    "model": {"input_dim": 64, "layers": [{"units": 48, "activation": "relu"},
                                          {"units": 10, "activation": "softmax"}]},
    "optimizer": {"kind": "adam", "lr": 0.005}, "batch_size": 100, "epochs": 3,
    "workers": 2, "allreduce": "mpi", "checkpoint_every": 5, "steps_per_chunk": 5,
    "max_restarts": 3})  # 15 steps an epoch, 45 in all


class FaultAfterRestart(Recorder):
    """Arms ``first`` in the first group, then each of ``later`` once a group was replaced."""

    def __init__(self, first: Fault | None, later: list[Fault]):
        super().__init__(FaultPlan(first) if first is not None else None)
        self.later = list(later)

    def faults(self) -> list[Fault]:
        if self.later and self.restarts:
            return [self.later.pop(0)]
        return super().faults()


def run(spec: JobSpec = SPEC, fault: Fault | None = None, later: list[Fault] | None = None,
        resume: TrainingState | None = None) -> tuple[TrainingResult, Recorder]:
    hooks = FaultAfterRestart(fault, later or [])
    result = train(spec, load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype),
                   GroupOptions(), hooks, resume=resume)
    return result, hooks


@pytest.fixture(scope="module")
def undisturbed(ray_cluster: Any) -> tuple[TrainingResult, Recorder]:
    return run()


def test_checkpoints_fall_on_every_nth_step_and_at_the_end(undisturbed: Any) -> None:
    result, seen = undisturbed
    assert [c.step for c in seen.checkpoints] == list(range(5, 46, 5))
    assert result.restarts == 0 and seen.restarts == []
    np.testing.assert_array_equal(seen.checkpoints[-1].params, result.params)


def test_a_sigkilled_worker_is_replaced_and_the_run_is_unchanged(undisturbed: Any) -> None:
    result, seen = run(fault=Fault(rank=1, step=13, action="kill"))
    assert result.restarts == 1
    (restart,) = seen.restarts
    assert isinstance(restart, Restart) and restart.from_step == 10
    assert "rank 1 (node" in restart.cause and "worker process died" in restart.cause
    assert [r.step for r in seen.steps] == list(range(1, 46))  # one point per step
    reference, reference_seen = undisturbed
    assert result.params.tobytes() == reference.params.tobytes()
    assert [r.loss for r in seen.steps] == [r.loss for r in reference_seen.steps]


def test_a_death_far_from_any_checkpoint_replays_nothing(undisturbed: Any) -> None:
    """With no checkpoint to go back to (checkpoint_every 1000), the fresh group carries on
    from the state rank 0 returned with the last chunk: the restart log says one chunk was
    lost, every step is reported once, and the weights are the undisturbed run's."""
    spec = SPEC.model_copy(update={"checkpoint_every": 1000})
    result, seen = run(spec, fault=Fault(rank=0, step=33, action="kill"))
    (restart,) = seen.restarts
    assert (restart.from_step, restart.lost_steps) == (30, 5)  # the chunk of 31..35
    assert [c.step for c in seen.checkpoints] == [45]  # the end only, for the disk
    assert [r.step for r in seen.steps] == list(range(1, 46))
    assert result.params.tobytes() == undisturbed[0].params.tobytes()


def test_two_kills_in_one_job(undisturbed: Any) -> None:
    result, seen = run(fault=Fault(rank=0, step=8, action="kill"),
                       later=[Fault(rank=1, step=31, action="kill")])
    assert result.restarts == 2
    assert [r.from_step for r in seen.restarts] == [5, 30]
    assert [r.step for r in seen.steps] == list(range(1, 46))
    assert result.params.tobytes() == undisturbed[0].params.tobytes()


def test_restarts_run_out_with_what_died_where_and_when(ray_cluster: Any) -> None:
    spec = SPEC.model_copy(update={"max_restarts": 1})
    with pytest.raises(RestartsExhaustedError) as failure:
        run(spec, fault=Fault(rank=0, step=8, action="kill"),
            later=[Fault(rank=1, step=12, action="kill")])
    message = str(failure.value)
    assert "gave up after 1 restart(s) (max_restarts=1); last failure at 20" in message
    assert "rank 1 (node " in message and "worker process died" in message


def test_a_rank_that_raises_is_not_retried(ray_cluster: Any) -> None:
    """Bad data or a bug would raise again after a restore: fail at once instead."""
    hooks = Recorder(FaultPlan(Fault(rank=1, step=4, action="raise")))
    with pytest.raises(RankFailedError, match="InjectedFaultError"):
        train(SPEC, load_dataset(SPEC.data, seed=SPEC.seed), GroupOptions(), hooks)
    assert hooks.restarts == []


def test_resuming_from_a_checkpoint_file_finishes_the_same_run(undisturbed: Any,
                                                                tmp_path: Path) -> None:
    _, seen = undisturbed
    for state in seen.checkpoints[:4]:  # as if the service died after step 20
        save_checkpoint(tmp_path, state, keep=3)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-0000000010.npz", "step-0000000015.npz", "step-0000000020.npz"]
    found = latest_checkpoint(tmp_path)
    assert found is not None
    state, _ = found
    assert state.step == 20 and set(state.optimizer) == {"m", "v", "t"}
    result, resumed = run(resume=state)
    assert [r.step for r in resumed.steps] == list(range(21, 46))
    assert result.params.tobytes() == undisturbed[0].params.tobytes()


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(tmp_path: Path) -> None:
    params = np.arange(4.0)
    save_checkpoint(tmp_path, TrainingState(5, params, {"velocity": params * 2}))
    newest = save_checkpoint(tmp_path, TrainingState(10, params + 1, {}))
    newest.write_bytes(newest.read_bytes()[:100])  # torn, as by a crash mid-write elsewhere
    found = latest_checkpoint(tmp_path)
    assert found is not None and found[0].step == 5
    np.testing.assert_array_equal(found[0].optimizer["velocity"], params * 2)
