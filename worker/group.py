"""The actors of one job: create, join, drive in chunks, tear down.

A small worker-group API in the shape of Ray Train's: ``create`` (placement
group, one actor per rank, the collective join, the initial broadcast),
``run`` (one chunk of ``k`` synchronized steps on every rank), ``final_params``
and ``shutdown``. Every remote call goes through :meth:`WorkerGroup._gather`,
which never waits without a deadline and fails as soon as ANY rank fails,
naming it: a rank that raises leaves its peers blocked inside a collective, so
waiting for all of them would hang. On any failure the whole group is killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from common.checkpoint import TrainingState
from common.data import Dataset
from common.records import ChunkResult
from common.schemas import JobSpec
from worker.actor import RankWorker
from worker.errors import (
    GroupTimeoutError,
    JobCancelledError,
    PlacementError,
    RankFailedError,
    RankFailure,
    ReplicaMismatchError,
)
from worker.faults import Fault
from worker.pool import WarmPool

Array = npt.NDArray[Any]

#: How often a wait for CPUs asks whether the job was cancelled meanwhile.
PLACEMENT_POLL_S = 0.25
#: After the first failed rank, how long to collect its peers' errors to report them together.
GRACE_S = 0.5
#: ... when every failure so far is a dead process: its peers are blocked in a collective
#: and will not answer, so wait only for deaths at the same moment (a lost node's ranks).
DEATH_GRACE_S = 0.1


@dataclass(frozen=True)
class GroupOptions:
    """How a job's workers run; set by the runner from the service's settings."""

    env: dict[str, str] = field(default_factory=dict)  # actors' environment (MPI transport...)
    placement_timeout_s: float = 60.0  # for the CPUs to be free
    join_timeout_s: float = 60.0  # per collective join step
    chunk_timeout_s: float = 60.0  # the least a chunk is given before it counts as a hang
    elastic_wait_s: float = 5.0  # an elastic job's wait to replace lost ranks, then it shrinks
    straggler_factor: float = 2.0  # a rank this much slower than the median is a straggler...
    straggler_chunks: int = 3  # ... when it is for this many chunks in a row
    #: Asked while waiting for CPUs: stop waiting (the job was cancelled or interrupted)?
    cancelled: Callable[[], bool] = field(default=lambda: False, compare=False)


@dataclass(frozen=True)
class RankInfo:
    rank: int
    pid: int
    hostname: str
    node: str


def _placed(placement: Any, options: GroupOptions) -> bool:
    """Wait for ``placement``'s CPUs up to ``options.placement_timeout_s``; False if they did
    not come. Raises :class:`JobCancelledError` (the group removed) as soon as the job is
    cancelled meanwhile."""
    import ray

    deadline = time.monotonic() + options.placement_timeout_s
    ready = placement.ready()
    while (left := deadline - time.monotonic()) > 0:
        if ray.wait([ready], timeout=min(left, PLACEMENT_POLL_S))[0]:
            return True
        if options.cancelled():
            ray.util.remove_placement_group(placement)
            raise JobCancelledError("cancelled while waiting for CPUs")
    return False


class WorkerGroup:
    """The running actors of one job, rank ``i`` at ``actors[i]``."""

    def __init__(self, spec: JobSpec, actors: list[Any], placement: Any, options: GroupOptions,
                 pool: WarmPool | None = None, nodes: set[str] | None = None):
        self.spec, self.actors, self.options = spec, actors, options
        self._placement = placement
        self._pool, self._nodes = pool, nodes or set()  # warm processes to make up at the end
        self.ranks: list[RankInfo] = [RankInfo(r, -1, "?", "?") for r in range(len(actors))]
        #: Seconds of each phase of the start: placement, actors, join, data and broadcast.
        self.startup: dict[str, float] = {}
        self.total_steps = 0
        self.step = 0
        self.fingerprints: list[str] = []

    @property
    def world_size(self) -> int:
        return len(self.actors)

    # ---- create --------------------------------------------------------------------------

    @classmethod
    def create(cls, spec: JobSpec, data: Dataset, options: GroupOptions,
               state: TrainingState | None = None, pool: WarmPool | None = None
               ) -> WorkerGroup:
        """Reserve CPUs, start one actor per rank (or take a warm one from ``pool`` on the
        rank's node), join them, broadcast rank 0's weights (or restore every rank from
        ``state``)."""
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        cpus, world = spec.cpus_per_worker, spec.max_workers  # a fixed size: one group
        began = time.monotonic()
        placement = placement_group([{"CPU": cpus}] * world,
                                    strategy="SPREAD" if spec.placement == "spread" else "PACK")
        ready = _placed(placement, options)
        if not ready:
            ray.util.remove_placement_group(placement)
            total = ray.cluster_resources().get("CPU", 0)
            free = ray.available_resources().get("CPU", 0)
            raise PlacementError(
                f"workers: {world} x {cpus} CPU asked, the cluster has {total:g} CPUs "
                f"({free:g} free) and none came free within {options.placement_timeout_s:g} s")
        remote = ray.remote(RankWorker)
        nodes = ray.util.placement_group_table(placement)["bundles_to_node_id"] if pool else {}
        actors = []
        for rank in range(world):
            actor = pool.take(nodes[rank]) if pool else None
            if actor is None:
                actor = remote.options(
                    num_cpus=cpus, max_restarts=0, max_concurrency=1,
                    runtime_env={"env_vars": dict(options.env)} if options.env else None,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        placement, placement_group_bundle_index=rank)).remote()
            actors.append(actor)
        group = cls(spec, actors, placement, options, pool, set(nodes.values()))
        group.startup["placement"] = time.monotonic() - began
        try:
            group._start(data, state)
        except BaseException:
            group.shutdown()
            raise
        return group

    def _start(self, data: Dataset, state: TrainingState | None) -> None:
        import ray

        timeout = self.options.join_timeout_s
        phase = time.monotonic()
        spec_json, cpus = self.spec.model_dump_json(), self.spec.cpus_per_worker
        infos = self._gather({r: a.configure.remote(spec_json, r, self.world_size, cpus)
                              for r, a in enumerate(self.actors)}, timeout, "starting workers")
        self.ranks = [RankInfo(**infos[r]) for r in range(self.world_size)]
        phase = self._timed("actors", phase)
        if self.spec.allreduce == "mpi":
            self._join_mpi(timeout)
        elif self.spec.allreduce == "ray":
            name = f"syncsgd-{uuid.uuid4().hex[:12]}"
            self._gather({r: a.gloo_join.remote(name, int(timeout * 1000))
                          for r, a in enumerate(self.actors)}, timeout, "joining the gloo group")
        else:
            self._gather({0: self.actors[0].local_join.remote()}, timeout, "starting")
        phase = self._timed("join", phase)
        # No rows go through Ray: each rank memory-maps the dataset's files itself.
        state_ref = ray.put(state)
        totals = self._gather({r: a.start.remote(data.ref, state_ref)
                               for r, a in enumerate(self.actors)},
                              timeout + 60, "opening the data and broadcasting rank 0's weights")
        self.total_steps = totals[0]
        self.step = state.step if state is not None else 0
        self._timed("data and broadcast", phase)

    def _timed(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.startup[name] = now - since
        return now

    def _join_mpi(self, timeout: float) -> None:
        """Grow one communicator through rank 0's port, one newcomer at a time."""
        port = self._gather({0: self.actors[0].mpi_open_port.remote()}, timeout,
                            "opening the MPI port")[0]
        for newcomer in range(1, self.world_size):
            calls = {r: self.actors[r].mpi_accept.remote(port) for r in range(newcomer)}
            calls[newcomer] = self.actors[newcomer].mpi_connect.remote(port)
            ranks = self._gather(calls, timeout, f"MPI join of rank {newcomer}")
            if ranks != {r: r for r in range(newcomer + 1)}:
                raise RuntimeError(f"MPI join of rank {newcomer}: ranks came out as {ranks}")
        self._gather({r: a.mpi_finish.remote() for r, a in enumerate(self.actors)}, timeout,
                     "finishing the MPI join")

    # ---- drive ---------------------------------------------------------------------------

    def run(self, steps: int, timeout_s: float) -> ChunkResult:
        """One chunk: every rank runs ``steps`` steps. Returns rank 0's result, with its
        state at the chunk's end and every rank's spans.

        When the chunk was due a fingerprint check, all ranks' parameter hashes
        must agree, or :class:`ReplicaMismatchError` names the odd ranks.
        """
        results = self._gather({r: a.run.remote(steps)
                                for r, a in enumerate(self.actors)},
                               timeout_s, f"steps {self.step + 1}..{self.step + steps}")
        chunk: ChunkResult = results[0]
        # Out of Ray's object store at once: arrays that ``ray.get`` returns are views
        # of its shared memory, released through the raylet when they are dropped, and
        # a release once the raylet is gone (killed, out of memory) ends this process.
        # (np.stack copies the spans.)
        chunk = dataclasses.replace(
            chunk, state=chunk.state.copy() if chunk.state is not None else None,
            spans=np.stack([results[r].spans for r in range(self.world_size)]))
        self.step, self.total_steps = chunk.step, chunk.total_steps  # early stopping: fewer
        if chunk.fingerprint is not None:
            self.fingerprints = [results[r].fingerprint for r in range(self.world_size)]
            odd = [r for r, fp in enumerate(self.fingerprints) if fp != chunk.fingerprint]
            if odd:
                raise ReplicaMismatchError(
                    f"replicas diverged by step {chunk.step}: ranks {odd} hold parameters "
                    f"different from rank 0's ({', '.join(self._where(r) for r in odd)})")
        return chunk

    def inject(self, fault: Fault) -> None:
        """Arm ``fault`` on its rank, which is running (drills and tests)."""
        if not 0 <= fault.rank < self.world_size:
            raise ValueError(f"rank: {fault.rank} is not a rank of this job "
                             f"(0..{self.world_size - 1})")
        self._gather({fault.rank: self.actors[fault.rank].set_fault.remote(fault)},
                     self.options.join_timeout_s, "arming a fault")

    def final_params(self) -> Array:
        """Rank 0's parameters (every replica holds the same)."""
        params: Array = self._gather({0: self.actors[0].final_params.remote()},
                                     self.options.join_timeout_s, "fetching the weights")[0]
        return params.copy()  # out of the object store (see ``run``)

    def shutdown(self) -> None:
        """Kill every actor (a rank stuck in a collective cannot leave by itself) and free CPUs."""
        import ray

        for actor in self.actors:
            with contextlib.suppress(Exception):  # already dead is fine
                ray.kill(actor, no_restart=True)
        if self._placement is not None:
            ray.util.remove_placement_group(self._placement)
            self._placement = None
        if self._pool is not None:
            for node in self._nodes:
                self._pool.fill(node)
            self._pool = None

    # ---- the one way to wait -------------------------------------------------------------

    def _gather(self, calls: dict[int, Any], timeout_s: float, during: str) -> dict[int, Any]:
        """Results of ``{rank: ObjectRef}``; fail fast on the first failure, never hang."""
        import ray

        rank_of = {ref: rank for rank, ref in calls.items()}
        pending, results = list(calls.values()), {}
        failures: list[RankFailure] = []
        deadline = time.monotonic() + timeout_s
        while pending:
            remaining = deadline - time.monotonic()
            if failures:
                grace = DEATH_GRACE_S if all(f.died for f in failures) else GRACE_S
                remaining = min(remaining, grace)
            if remaining <= 0:
                break
            ready, pending = ray.wait(pending, num_returns=1, timeout=remaining)
            for ref in ready:
                rank = rank_of[ref]
                try:
                    results[rank] = ray.get(ref)
                except Exception as exc:  # every failure is reported, by rank
                    failures.append(self._failure(rank, exc))
            if failures and not ready:
                break
        if failures:
            raise RankFailedError(failures, during)
        if pending:
            late = sorted(rank_of[ref] for ref in pending)
            raise GroupTimeoutError(
                f"{during}: ranks {late} did not finish within {timeout_s:g} s "
                f"({', '.join(self._where(r) for r in late)}); a rank is hung or too slow")
        return results

    def _failure(self, rank: int, exc: Exception) -> RankFailure:
        import ray.exceptions as rex

        info = self.ranks[rank]
        if isinstance(exc, rex.RayTaskError) and exc.cause is not None:
            cause = f"{type(exc.cause).__name__}: {exc.cause}"
        elif isinstance(exc, rex.RayActorError):
            cause = "worker process died (killed, out of memory, or its node was lost)"
            return RankFailure(rank, info.node, info.pid, cause, died=True)
        else:
            cause = f"{type(exc).__name__}: {exc}"
        return RankFailure(rank, info.node, info.pid, cause.strip())

    def _where(self, rank: int) -> str:
        info = self.ranks[rank]
        return f"rank {rank} on node {info.node}, pid {info.pid}"
