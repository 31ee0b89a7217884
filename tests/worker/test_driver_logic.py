"""The driver's decisions without Ray: restarts as values, and the schedule driving one
in-process rank (``LocalGroup``) against the single-process trainer as the reference."""

from __future__ import annotations

import time

import pytest

from common.data import load_dataset
from common.schemas import JobSpec, WorkerRange
from tests.reference import single_process_run
from worker.driver import Recorder, TrainingResult, train
from worker.errors import (
    BelowMinimumError,
    GroupTimeoutError,
    JobCancelledError,
    PlacementError,
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

        def run(self, steps: int, timeout_s: float) -> ChunkResult:
            if steps * 0.05 > timeout_s:
                raise GroupTimeoutError(f"{steps} steps of 0.05 s would not finish in "
                                        f"{timeout_s:g} s")
            time.sleep(steps * 0.05)
            return super().run(steps, timeout_s)

    spec = SPEC.model_copy(update={"steps_per_chunk": 0, "max_steps": 12, "max_restarts": 0})
    hooks = Recorder()
    result = train(spec, load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype),
                   GroupOptions(chunk_timeout_s=0.15), hooks, make_group=SlowGroup.create)
    assert result.steps == 12 and hooks.restarts == []


class Cluster:
    """A pretend cluster of ``free`` rank slots for the driver's elastic decisions: a group
    larger than it is refused as Ray's placement would be, after the wait it was given."""

    def __init__(self, free: int):
        self.free = free
        self.asked: list[tuple[int, float]] = []  # (world size, placement wait) per try

    def make_group(self, spec: JobSpec, data, options: GroupOptions, state):  # type: ignore[no-untyped-def]
        self.asked.append((spec.max_workers, options.placement_timeout_s))
        if spec.max_workers > self.free:
            raise PlacementError(f"workers: {spec.max_workers} asked, {self.free} free")
        return LocalGroup.create(spec, data, options, state)


class ElasticHooks(Recorder):
    """Grants ``grow_to`` ranks between chunks once ``grow_at`` steps are reported."""

    def __init__(self, plan: FaultPlan | None = None, start: int = 2, grow_to: int = 0,
                 grow_at: int = 0):
        super().__init__(plan)
        self.start, self.grow_to, self.grow_at = start, grow_to, grow_at

    def world_size(self, spec: JobSpec, current: int | None) -> int:
        if current is None:
            return self.start
        if self.grow_to and self.steps and self.steps[-1].step >= self.grow_at:
            return max(current, self.grow_to)
        return current


ELASTIC = SPEC.model_copy(update={"workers": WorkerRange(min=1, max=3)})


def run_elastic(hooks: Recorder, cluster: Cluster) -> TrainingResult:
    data = load_dataset(ELASTIC.data, seed=ELASTIC.seed, dtype=ELASTIC.dtype)
    options = GroupOptions(placement_timeout_s=60.0, elastic_wait_s=0.5)
    return train(ELASTIC, data, options, hooks, make_group=cluster.make_group)


def test_a_lost_rank_that_cannot_be_replaced_shrinks_the_group() -> None:
    cluster = Cluster(free=2)
    hooks = ElasticHooks(FaultPlan(Fault(0, 13, "kill")), start=2)
    place = cluster.make_group

    def losing_a_slot(spec, data, options, state):  # type: ignore[no-untyped-def]
        if hooks.restarts:  # after the death: its node is gone
            cluster.free = 1
        return place(spec, data, options, state)

    cluster.make_group = losing_a_slot  # type: ignore[method-assign]
    result = run_elastic(hooks, cluster)
    params, _ = single_process_run(SPEC)
    assert result.params.tobytes() == params.tobytes()
    # The whole size is tried for the short elastic wait only, then one fewer.
    assert cluster.asked == [(2, 0.5), (2, 0.5), (1, 60.0)]
    (resize,) = hooks.resizes
    assert (resize.from_size, resize.to_size, resize.step) == (2, 1, 10)  # the last chunk's end
    assert "restart 1 after" in resize.cause and "1 of 2 ranks could be placed" in resize.cause
    assert [r.step for r in hooks.steps] == list(range(1, 31))


def test_an_elastic_group_grows_at_a_chunk_boundary_when_granted() -> None:
    cluster = Cluster(free=3)
    hooks = ElasticHooks(start=1, grow_to=3, grow_at=8)
    result = run_elastic(hooks, cluster)
    params, _ = single_process_run(SPEC)
    assert result.params.tobytes() == params.tobytes()
    (resize,) = hooks.resizes
    assert (resize.from_size, resize.to_size, resize.step) == (1, 3, 8)
    assert resize.cause == "CPUs came free" and resize.seconds >= 0
    assert [size for size, _ in cluster.asked] == [1, 3]
    assert [r.step for r in hooks.steps] == list(range(1, 31))


def test_min_waits_as_a_fixed_group_then_goes_back_to_the_queue_and_cancel_places_nothing(
) -> None:
    spec = SPEC.model_copy(update={"workers": WorkerRange(min=2, max=3)})
    cluster = Cluster(free=1)
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    with pytest.raises(BelowMinimumError, match=r"waiting for workers\.min = 2: workers: 2"):
        train(spec, data, GroupOptions(placement_timeout_s=60.0, elastic_wait_s=0.5),
              ElasticHooks(start=3), make_group=cluster.make_group)
    assert cluster.asked == [(3, 0.5), (2, 60.0)]  # never below min

    class Cancelled(ElasticHooks):
        def cancelled(self) -> bool:
            return True

    cluster.asked.clear()
    with pytest.raises(JobCancelledError):
        train(spec, data, GroupOptions(), Cancelled(start=3), make_group=cluster.make_group)
    assert cluster.asked == []
