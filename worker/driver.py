"""The central schedule of one job: chunks of synchronized steps, checks between them.

Every rank receives the same ``run(steps=k)`` call and runs k steps on its
own, with no driver round trip per step. Between chunks the driver reports
to its :class:`TrainingHooks` (records, checkpoints, restarts), checks for
cancellation, arms injected faults, and (inside the group) compares replica
fingerprints; a dead or hung rank surfaces as an error from the chunk, and the
:class:`worker.policy.RestartPolicy` decides whether a fresh group carries on.
Chunks aim at about a second each, so the curve a user watches moves every
second.

The driver sees a group only through the :class:`Group` protocol, so the same
schedule drives Ray actors (:class:`worker.group.WorkerGroup`) or one rank in
this process (:class:`worker.local_group.LocalGroup`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy.typing as npt

from common.checkpoint import TrainingState
from common.data import Dataset, check_spec_matches_data
from common.preprocessing import Preprocessing
from common.records import ChunkResult, EarlyStopReport, StepRecord
from common.schemas import JobSpec
from worker.elastic import SHRUNK, Resize, World, make_group_of
from worker.errors import GroupError, JobCancelledError, RestartsExhaustedError
from worker.faults import Fault, FaultPlan
from worker.group import GroupOptions, RankInfo, WorkerGroup
from worker.policy import FailureDecision, RestartPolicy
from worker.stragglers import Straggler, StragglerWatch

Array = npt.NDArray[Any]

#: How long a chunk should take (the "live" granularity of the curve).
CHUNK_TARGET_S = 1.0
#: A group's first chunk is one step: whatever it takes (a large model, a slow node) sizes
#: the chunks after it and their timeouts, so a slow job is not taken for a hung one. Only
#: a single step longer than the chunk timeout's floor counts as a hang before that.
FIRST_CHUNK_STEPS = 1
#: A chunk may take this many times its expected duration before it counts as a hang.
HANG_FACTOR = 10.0


class Group(Protocol):
    """The running ranks of one job, as the driver drives them."""

    ranks: list[RankInfo]
    step: int
    total_steps: int
    fingerprints: list[str]
    startup: dict[str, float]  # seconds of each phase of the group's start

    def run(self, steps: int, timeout_s: float) -> ChunkResult:
        """``steps`` steps on every rank; rank 0's result, with its state at the end and
        every rank's spans (ranks, steps, 5)."""
        ...

    def inject(self, fault: Fault) -> None: ...

    def final_params(self) -> Array: ...

    def shutdown(self) -> None: ...


#: Makes a group from the spec, the data, the options and the state to restore (or None).
GroupFactory = Callable[[JobSpec, Dataset, GroupOptions, TrainingState | None], Group]


@dataclass(frozen=True)
class Restart:
    """One recovery: a fresh group restored from the state at the last chunk's end."""

    number: int  # 1 for the first restart
    at: float  # time.time() of the decision
    cause: str  # what died or hung, and where
    from_step: int  # the step of the state it continues from (0: from the start)
    lost_steps: int = 0  # the chunk in flight's steps, computed again


class TrainingHooks:
    """What the driver tells its caller between chunks, and asks it. Every method has a
    default that does nothing; override what you need. Called on the driver's thread."""

    def started(self, ranks: list[RankInfo], total_steps: int) -> None:
        """A group is up (the first, or one after a restart)."""

    def startup(self, split: dict[str, float]) -> None:
        """Once, after the job's first step: the seconds each phase of the start took
        (the caller's data preparation, the group's phases, the first step)."""

    def records(self, records: list[StepRecord]) -> None:
        """A chunk's step records, in step order (replayed steps come again)."""

    def checkpoint(self, state: TrainingState) -> None:
        """Rank 0's state at a checkpoint step (every ``checkpoint_every`` and the end), to
        keep on disk: what a restarted service resumes from."""

    def restart(self, restart: Restart) -> None:
        """A failed group is being replaced."""

    def committed(self, state: TrainingState) -> None:
        """The state at the newest chunk's end (rank 0's, in memory): what this job resumes
        from if it is interrupted before the next."""

    def world_size(self, spec: JobSpec, current: int | None) -> int:
        """An elastic job's size: asked before its first group (``current`` None) and between
        chunks, where an answer over ``current`` grows the group. Default: ``max`` at once."""
        return spec.max_workers if current is None else current

    def shrink_to(self, spec: JobSpec, current: int) -> int:
        """Asked of an elastic job between chunks: an answer under ``current`` shrinks the
        group (down to ``min``), to give CPUs back. Default: ``current``."""
        return current

    def shrink_cause(self) -> str:
        """Why :meth:`shrink_to` asked for CPUs back, for the resize's record."""
        return SHRUNK

    def resized(self, resize: Resize) -> None:
        """An elastic job now runs at another world size (grown, or shrunk after a loss or
        when asked to give CPUs back)."""

    def timings(self, ranks: list[RankInfo], step: int, spans: Array) -> None:
        """A chunk's timings on every rank, up to its last step ``step``: ``spans``
        (ranks, steps, 5), each step's start (unix s) and its phases' seconds
        (``common.records.SPAN_COLUMNS``)."""

    def straggler(self, straggler: Straggler) -> None:
        """A rank became a straggler (:mod:`worker.stragglers`)."""

    def cancelled(self) -> bool:
        """Asked before every chunk: stop the job now?"""
        return False

    def faults(self) -> list[Fault]:
        """Asked before every chunk: faults to arm on the running ranks (drills)."""
        return []


class Recorder(TrainingHooks):
    """Hooks that keep everything the driver reports, and arm the faults of ``plan``: for
    callers that want the whole run at its end (verify, benchmarks, tests)."""

    def __init__(self, plan: FaultPlan | None = None):
        self.plan = plan or FaultPlan()
        self.groups: list[list[RankInfo]] = []  # each group's ranks, in start order
        self.steps: list[StepRecord] = []
        self.checkpoints: list[TrainingState] = []
        self.restarts: list[Restart] = []
        self.resizes: list[Resize] = []
        self.spans: list[Array] = []  # each chunk's (ranks, steps, 5)
        self.stragglers: list[Straggler] = []
        self.startup_split: dict[str, float] = {}

    def startup(self, split: dict[str, float]) -> None:
        self.startup_split = split

    def started(self, ranks: list[RankInfo], total_steps: int) -> None:
        self.groups.append(ranks)

    def records(self, records: list[StepRecord]) -> None:
        self.steps.extend(records)

    def checkpoint(self, state: TrainingState) -> None:
        self.checkpoints.append(state)

    def restart(self, restart: Restart) -> None:
        self.restarts.append(restart)

    def resized(self, resize: Resize) -> None:
        self.resizes.append(resize)

    def timings(self, ranks: list[RankInfo], step: int, spans: Array) -> None:
        self.spans.append(spans)

    def straggler(self, straggler: Straggler) -> None:
        self.stragglers.append(straggler)

    def faults(self) -> list[Fault]:
        return self.plan.take()


@dataclass(frozen=True)
class TrainingResult:
    params: Array  # rank 0's final flat parameters
    steps: int
    ranks: list[RankInfo]
    fingerprints: list[str]  # every rank's final parameter hash (all equal)
    restarts: int = 0
    preprocessing: Preprocessing = field(default_factory=Preprocessing)  # for the model file
    early_stopping: EarlyStopReport | None = None  # the best epoch, and the stop if it stopped


@dataclass
class ChunkSizer:
    """Picks ``k`` so a chunk takes about ``target_s``, from the steps measured so far."""

    fixed: int = 0  # the spec's steps_per_chunk; 0 = adapt
    target_s: float = CHUNK_TARGET_S
    step_s: float | None = None

    def next_steps(self) -> int:
        if self.fixed:
            return self.fixed
        if self.step_s is None:
            return FIRST_CHUNK_STEPS
        return max(1, min(100_000, int(self.target_s / max(self.step_s, 1e-6))))

    def observe(self, steps: int, seconds: float) -> None:
        if steps:
            self.step_s = seconds / steps

    def timeout(self, steps: int, floor_s: float) -> float:
        expected = steps * self.step_s if self.step_s is not None else 0.0
        return max(floor_s, HANG_FACTOR * expected)


@dataclass
class _Latest:
    """The state at the newest chunk's end (rank 0 returns it with every chunk): where a
    fresh group restarts from, so a failure loses the chunk in flight and nothing more."""

    state: TrainingState | None
    in_flight: int = 0  # the steps of the chunk running now

    @property
    def step(self) -> int:
        return self.state.step if self.state is not None else 0


def train(spec: JobSpec, data: Dataset, options: GroupOptions,
          hooks: TrainingHooks | None = None, *, resume: TrainingState | None = None,
          make_group: GroupFactory = WorkerGroup.create, data_s: float = 0.0
          ) -> TrainingResult:
    """Run ``spec`` to the end; every group it made is gone afterwards.

    Checkpoints go to ``hooks.checkpoint`` every ``spec.checkpoint_every`` steps and
    at the end (chunks are cut at those steps), for a service that restarts. When a
    worker dies or hangs, the group is torn down and, as the restart policy decides, a
    fresh one carries on from the state rank 0 returned with the last chunk: only the
    chunk in flight is computed again (its records were never reported, so
    ``hooks.records`` sees every step once). ``resume`` starts from a checkpoint.
    ``data_s``, the seconds the caller spent preparing ``data``, opens the startup split
    ``hooks.startup`` receives after the first step.

    An elastic spec runs at ``hooks.world_size``: rebuilt larger between chunks when
    more ranks are granted, smaller when a failed group cannot be replaced whole within
    ``options.elastic_wait_s``; with the same global batch, and so the same training.

    Raises :class:`JobCancelledError` when ``hooks.cancelled()`` turns true between
    chunks, and a :class:`worker.errors.GroupError` naming ranks and nodes on
    failure (:class:`RestartsExhaustedError` when restarts ran out).
    """
    check_spec_matches_data(spec, data)
    hooks = hooks or TrainingHooks()
    options = dataclasses.replace(options, cancelled=hooks.cancelled)
    latest = _Latest(resume)
    policy = RestartPolicy(spec.max_restarts)
    restarts = 0
    split: dict[str, float] | None = {"data": data_s}  # until the first step is reported
    world = World(hooks.world_size(spec, None))
    while True:
        try:
            group, made = make_group_of(make_group, spec, data, options, latest.state,
                                        world.size, world.floor(spec), hooks.cancelled)
            if split is not None:
                split.update(group.startup)
            world.placed(made, latest.step, options, hooks.resized)
            outcome = _run_group(group, spec, options, hooks, latest, world.size,
                                 world.grow_after, split)
            split = None
            if isinstance(outcome, int):  # resize: the same state, on more or fewer ranks
                world.resize(outcome, hooks.shrink_cause())
                continue
            return dataclasses.replace(outcome, restarts=restarts,
                                       preprocessing=data.preprocessing)
        except GroupError as exc:
            split = None  # a restart: the first start's split is reported, or never
            restarts = _restart(exc, policy, restarts, spec, hooks, latest)
            world.failed(f"restart {restarts} after: {exc}")


def _restart(exc: GroupError, policy: RestartPolicy, restarts: int, spec: JobSpec,
             hooks: TrainingHooks, latest: _Latest) -> int:
    """After a group's failure: the number of restarts with this one, or the error that
    ends the job."""
    if hooks.cancelled():  # not worth a fresh group (the service may be losing Ray)
        raise JobCancelledError(f"cancelled at step {latest.step} after: {exc}") from exc
    decision = policy.decide(exc, restarts)
    if decision is FailureDecision.RAISE:
        raise exc
    if decision is FailureDecision.EXHAUSTED:
        raise RestartsExhaustedError(
            f"gave up after {restarts} restart(s) (max_restarts={spec.max_restarts}); "
            f"last failure at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {exc}") from exc
    hooks.restart(Restart(restarts + 1, time.time(), str(exc), latest.step, latest.in_flight))
    latest.in_flight = 0
    return restarts + 1


def _wanted_size(spec: JobSpec, hooks: TrainingHooks, size: int, grow_after: float) -> int:
    """An elastic job's size for its next chunk: smaller when the hooks ask for CPUs
    back, larger when they grant more (not before ``grow_after``, after a growth that
    could not be placed whole)."""
    if (smaller := max(spec.min_workers, hooks.shrink_to(spec, size))) < size:
        return smaller
    return hooks.world_size(spec, size) if time.monotonic() >= grow_after else size


def _run_group(group: Group, spec: JobSpec, options: GroupOptions, hooks: TrainingHooks,
               latest: _Latest, size: int, grow_after: float = 0.0,
               split: dict[str, float] | None = None) -> TrainingResult | int:
    """Drive one group from its state to the end of training, or (an elastic job whose
    hooks grant more ranks or ask for some back between chunks) to the step boundary where
    it resizes: then the world size to resize to. Shut the group down in any case."""
    try:
        hooks.started(group.ranks, group.total_steps)
        sizer = ChunkSizer(spec.steps_per_chunk)
        watch = StragglerWatch(options.straggler_factor, options.straggler_chunks)
        every = spec.checkpoint_every
        early: EarlyStopReport | None = None
        while group.step < group.total_steps:
            if hooks.cancelled():
                raise JobCancelledError(f"cancelled at step {group.step}")
            for fault in hooks.faults():
                group.inject(fault)
            next_checkpoint = min((group.step // every + 1) * every, group.total_steps)
            steps = min(sizer.next_steps(), next_checkpoint - group.step)
            began = time.monotonic()
            latest.in_flight = steps
            # Rank 0's state with every chunk, kept here: a failure loses this chunk only.
            chunk = group.run(steps, sizer.timeout(steps, options.chunk_timeout_s))
            latest.in_flight = 0
            sizer.observe(len(chunk.records), time.monotonic() - began)
            if split is not None:  # the first chunk is one step
                split["first step"] = time.monotonic() - began
                hooks.startup(split)
                split = None
            hooks.records(chunk.records)
            _report_timings(chunk, group.ranks, hooks, watch)
            early = chunk.early_stopping
            if chunk.state is not None:
                latest.state = chunk.state
                hooks.committed(chunk.state)
                if chunk.step == next_checkpoint:  # to disk, for a service that restarts
                    hooks.checkpoint(chunk.state)
            if (spec.elastic and group.step < group.total_steps
                    and (wanted := _wanted_size(spec, hooks, size, grow_after)) != size):
                return wanted
        return TrainingResult(group.final_params(), group.step, group.ranks, group.fingerprints,
                              early_stopping=early)
    finally:
        group.shutdown()


def _report_timings(chunk: ChunkResult, ranks: list[RankInfo], hooks: TrainingHooks,
                    watch: StragglerWatch) -> None:
    if chunk.spans is None or not chunk.spans.shape[1]:
        return
    hooks.timings(ranks, chunk.step, chunk.spans)
    for straggler in watch.observe(chunk.spans, [r.node for r in ranks], chunk.step):
        hooks.straggler(straggler)
