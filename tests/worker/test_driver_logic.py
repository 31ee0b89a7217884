"""The driver's decisions without Ray: restarts as values, and the schedule driving one
in-process rank (``LocalGroup``) against the single-process trainer as the reference."""

from __future__ import annotations

import time

import pytest

from common.data import load_dataset
from common.schemas import JobSpec
from tests.reference import single_process_run
from worker.driver import Recorder, TrainingResult, train
from worker.errors import (
    GroupTimeoutError,
    JobCancelledError,
    RankFailedError,
    RankFailure,
    RestartsExhaustedError,
)
from worker.faults import Fault, FaultPlan
from worker.group import GroupOptions
from worker.local_group import LocalGroup
from worker.policy import FailureDecision, RestartPolicy

SPEC = JobSpec.model_validate({
    "model": {"input_dim": 64, "layers": [{"units": 24, "activation": "tanh"},
                                          {"units": 10, "activation": "softmax"}]},
    "optimizer": {"kind": "adam", "lr": 0.01}, "batch_size": 100, "epochs": 2,
    "checkpoint_every": 10, "steps_per_chunk": 4, "dtype": "float64"})  # 15 steps an epoch


def died(rank: int = 1) -> RankFailedError:
    return RankFailedError([RankFailure(rank, "10.0.0.2", 42, "worker process died",
                                        died=True)], "steps 1..5")


def test_the_policy_restarts_deaths_and_hangs_until_they_run_out() -> None:
    policy = RestartPolicy(max_restarts=2)
    assert policy.decide(died(), 0) is FailureDecision.RESTART
    assert policy.decide(GroupTimeoutError("hung"), 1) is FailureDecision.RESTART
    assert policy.decide(died(), 2) is FailureDecision.EXHAUSTED
    raised = RankFailedError([RankFailure(0, "n", 1, "ValueError: bad row")], "steps 1..5")
    assert policy.decide(raised, 0) is FailureDecision.RAISE  # it would raise again
    assert RestartPolicy(0).decide(died(), 0) is FailureDecision.RAISE


def run(plan: FaultPlan | None = None, spec: JobSpec = SPEC) -> tuple[Recorder, TrainingResult]:
    hooks = Recorder(plan)
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    result = train(spec, data, GroupOptions(), hooks, make_group=LocalGroup.create)
    return hooks, result


def test_a_local_group_run_is_the_single_process_run() -> None:
    hooks, result = run()
    params, records = single_process_run(SPEC)
    assert result.params.tobytes() == params.tobytes()
    assert [(r.step, r.loss, r.val_loss) for r in hooks.steps] == [
        (r.step, r.loss, r.val_loss) for r in records]
    assert [c.step for c in hooks.checkpoints] == [10, 20, 30]
    assert hooks.groups[0][0].node == "in-process"


def test_a_death_restarts_from_the_last_chunk_and_changes_nothing() -> None:
    hooks, result = run(FaultPlan(Fault(0, 13, "kill")))
    params, _ = single_process_run(SPEC)
    assert result.params.tobytes() == params.tobytes()
    (restart,) = hooks.restarts
    assert restart.number == 1 and restart.from_step == 10 and restart.lost_steps == 4
    assert "injected kill" in restart.cause
    steps = [r.step for r in hooks.steps]
    # The chunk of steps 11..14 died at 13 and reported nothing; 11 on came again.
    assert steps == list(range(1, 31))


def test_a_raise_fails_at_once_and_restarts_run_out() -> None:
    with pytest.raises(RankFailedError, match="InjectedFaultError: injected fault at step 3"):
        run(FaultPlan(Fault(0, 3, "raise")))

    class KillEveryGroup(Recorder):
        def faults(self) -> list[Fault]:
            return [Fault(0, (self.groups and len(self.steps) + 2) or 2, "kill")]

    hooks = KillEveryGroup()
    spec = SPEC.model_copy(update={"max_restarts": 2})
    with pytest.raises(RestartsExhaustedError, match=r"gave up after 2 restart\(s\)"):
        train(spec, load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype), GroupOptions(),
              hooks, make_group=LocalGroup.create)
    assert len(hooks.restarts) == 2


def test_cancel_stops_between_chunks() -> None:
    class CancelAfter8(Recorder):
        def cancelled(self) -> bool:
            return len(self.steps) >= 8

    hooks = CancelAfter8()
    with pytest.raises(JobCancelledError, match="cancelled at step 8"):
        train(SPEC, load_dataset(SPEC.data, seed=SPEC.seed, dtype=SPEC.dtype), GroupOptions(),
              hooks, make_group=LocalGroup.create)


def test_a_slow_job_is_not_taken_for_a_hung_one() -> None:
    """Steps of 0.05 s against a 0.15 s floor: five of them in a first chunk would look
    hung. The first chunk is one step; its time sizes the next chunks and their timeouts."""
    from common.records import ChunkResult
    from worker.errors import GroupTimeoutError

    class SlowGroup(LocalGroup):
        """An in-process rank that takes 0.05 s a step and enforces the driver's timeouts
        (the real worker group's ``_gather`` does; LocalGroup runs to the end)."""

        def run(self, steps: int, timeout_s: float, with_state: bool = False) -> ChunkResult:
            if steps * 0.05 > timeout_s:
                raise GroupTimeoutError(f"{steps} steps of 0.05 s would not finish in "
                                        f"{timeout_s:g} s")
            time.sleep(steps * 0.05)
            return super().run(steps, timeout_s, with_state)

    spec = SPEC.model_copy(update={"steps_per_chunk": 0, "max_steps": 12, "max_restarts": 0})
    hooks = Recorder()
    result = train(spec, load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype),
                   GroupOptions(chunk_timeout_s=0.15), hooks, make_group=SlowGroup.create)
    assert result.steps == 12 and hooks.restarts == []
