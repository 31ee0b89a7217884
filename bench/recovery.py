"""What a failure and a resize cost, on the embedded Ray (2 CPUs): the benchmark MLP
(:mod:`bench.workload`, 784-1024-1024-10) with 2 MPI workers, chunks of about a second (the
default), a checkpoint every 200 steps.

- **A rank's death** (SIGKILL of rank 1 just before step 350): the seconds from the death
  to the failure's detection, and from there to the first step of the fresh group; the
  steps lost (the chunk in flight). Against it, recovery as it was before the driver kept
  the last chunk's state, measured: a fresh group restored from the last disk checkpoint
  (step 200), run until it is back at step 349.
- **A resize** (``workers: {min 1, max 2}``, granted 2 after step 200): the seconds from the
  last step on 1 worker to the first on 2, less one step; against it, the same gap of the
  death's restart.

Times come from the driver's hooks on this process's clock: ``records`` when a chunk's
steps arrive, ``restart`` when the failure was decided. Medians of ``--repeat`` runs.
Prints JSON. With ``--address`` it drives the cluster there instead, one rank per node
(``placement: spread``); :mod:`bench.recovery_nodes` runs it on two nodes in network
namespaces.

    python -m bench.recovery [--repeat 3] [--address HOST:PORT]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import time
from typing import Any

from bench.machine import machine_info
from bench.workload import job_spec
from common.checkpoint import TrainingState
from common.data import load_dataset
from common.records import StepRecord
from common.schemas import JobSpec
from worker import cluster
from worker.driver import Recorder, Restart, train
from worker.faults import Fault, FaultPlan
from worker.group import GroupOptions, WorkerGroup
from worker.pool import WarmPool

SPEC = {**job_spec(), "max_steps": 400, "checkpoint_every": 200}
KILL_AT = 350
GROW_AFTER = 200


class TimedHooks(Recorder):
    """A recorder that notes when each chunk's records and each restart arrived; grants
    ``grow_to`` ranks to an elastic job once ``grow_after`` steps are in."""

    def __init__(self, plan: FaultPlan | None = None, grow_to: int = 0):
        super().__init__(plan)
        self.grow_to = grow_to
        self.arrivals: list[tuple[float, int, int]] = []  # (time, first step, last step)
        self.restart_at: float | None = None

    def records(self, records: list[StepRecord]) -> None:
        super().records(records)
        self.arrivals.append((time.monotonic(), records[0].step, records[-1].step))

    def restart(self, restart: Restart) -> None:
        super().restart(restart)
        self.restart_at = time.monotonic()

    def world_size(self, spec: JobSpec, current: int | None) -> int:
        if current is None:
            return 1 if self.grow_to else spec.max_workers
        grown = self.grow_to and self.steps and self.steps[-1].step >= GROW_AFTER
        return max(current, self.grow_to) if grown else current

    def step_s(self) -> float:
        """The median seconds per step over chunks that follow a whole chunk (not a group's
        one-step first chunk, which includes its start)."""
        gaps = [(b[0] - a[0]) / (b[2] - a[2]) for a, b in itertools.pairwise(self.arrivals)
                if a[2] > a[1] and b[2] > b[1] and a[2] + 1 == b[1]]
        return statistics.median(gaps)

    def gap_at(self, step: int) -> float:
        """Seconds between the arrival of the chunk ending at ``step`` and the next."""
        index = next(i for i, a in enumerate(self.arrivals) if a[2] == step)
        return self.arrivals[index + 1][0] - self.arrivals[index][0]


def worker_nodes() -> list[str]:
    """The ids of the live nodes with CPUs (where ranks can run)."""
    import ray

    return [node["NodeID"] for node in ray.nodes()
            if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) > 0]


def one_death(make_group: Any, options: GroupOptions, placement: str) -> dict[str, float]:
    spec = JobSpec.model_validate({**SPEC, "placement": placement})
    hooks = TimedHooks(FaultPlan(Fault(1, KILL_AT, "kill")))
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    train(spec, data, options, hooks, make_group=make_group)
    (restart,) = hooks.restarts
    step_s = hooks.step_s()
    last = max(a for a in hooks.arrivals if a[2] <= restart.from_step)
    died_at = last[0] + (KILL_AT - 1 - restart.from_step) * step_s  # it ran those first
    back = next(a for a in hooks.arrivals if a[0] > (hooks.restart_at or 0))
    assert hooks.restart_at is not None
    checkpoint = max((c for c in hooks.checkpoints if c.step < KILL_AT), key=lambda c: c.step)
    return {"detect_s": hooks.restart_at - died_at, "restart_s": back[0] - hooks.restart_at,
            "lost_steps": restart.lost_steps,
            "replayed_steps_from_checkpoint": KILL_AT - 1 - checkpoint.step,
            "replay_s": replay_from(checkpoint, spec, data, options, make_group),
            "step_s": step_s}


def replay_from(checkpoint: TrainingState, spec: JobSpec, data: Any, options: GroupOptions,
                make_group: Any) -> float:
    """Recovery as it was before the driver kept the last chunk's state: a fresh group
    restored from the disk checkpoint, until it is back at the step the rank died at."""
    hooks = TimedHooks()
    began = time.monotonic()
    train(spec.model_copy(update={"max_steps": KILL_AT - 1}), data, options, hooks,
          resume=checkpoint, make_group=make_group)
    return hooks.arrivals[-1][0] - began


def one_resize(make_group: Any, options: GroupOptions, placement: str) -> dict[str, float]:
    spec = JobSpec.model_validate({**SPEC, "workers": {"min": 1, "max": 2},
                                   "placement": placement})
    hooks = TimedHooks(grow_to=2)
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    train(spec, data, options, hooks, make_group=make_group)
    (resize,) = hooks.resizes
    one_step = hooks.step_s()
    return {"gap_s": hooks.gap_at(resize.step) - one_step, "group_s": resize.seconds,
            "at_step": resize.step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--address", help="a Ray cluster's head (default: an embedded Ray)")
    args = parser.parse_args()
    where = "2 nodes" if args.address else "embedded"
    placement = "spread" if args.address else "pack"
    cluster.connect(args.address, num_cpus=None if args.address else 2)
    # across nodes MPI goes over TCP (the service's SYNCSGD_WORKER_ENV in docker-compose)
    options = GroupOptions(env={"UCX_TLS": "tcp,self"} if args.address else {})
    pool = WarmPool(2, options.env)
    for node in worker_nodes():
        pool.fill(node)
    make_group = functools.partial(WorkerGroup.create, pool=pool)
    try:
        one_death(make_group, options, placement)  # warm-up: workers, imports, the dataset
        deaths = [one_death(make_group, options, placement) for _ in range(args.repeat)]
        resizes = [one_resize(make_group, options, placement) for _ in range(args.repeat)]
    finally:
        pool.close()
        cluster.disconnect()
    death = {key: statistics.median(d[key] for d in deaths) for key in deaths[0]}
    resize = {key: statistics.median(r[key] for r in resizes) for key in resizes[0]}
    # Until training is back at the step it died at: the lost chunk computed again, or the
    # steps since the checkpoint.
    no_replay = death["detect_s"] + death["restart_s"] + death["lost_steps"] * death["step_s"]
    replay = death["detect_s"] + death["replay_s"]
    results = [
        {"name": f"a rank's death to training at its step again, {where}, 2 MPI workers "
                 "(no replay vs replay from a checkpoint "
                 f"{death['replayed_steps_from_checkpoint']:g} steps back)",
         "project": no_replay, "reference": replay, "unit": "s", "ratio": replay / no_replay,
         "goal": None, "reference_is": "the same death's detection, then a fresh group "
                                       "restored from the last checkpoint, run to that step",
         "split_s": death},
        {"name": f"steps computed again per failure, {where}, 2 MPI workers",
         "project": death["lost_steps"], "reference": death["replayed_steps_from_checkpoint"],
         "unit": "steps", "ratio": death["replayed_steps_from_checkpoint"] / death["lost_steps"],
         "goal": None, "reference_is": "a replay from the last checkpoint (every 200 steps)"},
        {"name": f"resize 1 -> 2 workers, {where}: last step on 1 to first step on 2, less "
                 "a step",
         "project": resize["gap_s"], "reference": death["restart_s"], "unit": "s",
         "ratio": death["restart_s"] / resize["gap_s"], "goal": None,
         "reference_is": "a restart after a death (decision to first step), same run",
         "split_s": resize},
    ]
    print(json.dumps({"benchmark": "recovery", "machine": machine_info(),
                      "results": results, "runs": {"deaths": deaths, "resizes": resizes}},
                     indent=2))


if __name__ == "__main__":
    main()
