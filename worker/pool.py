"""Warm worker processes: ranks of the next jobs, started before those jobs are submitted.

Starting a Ray actor process and importing the engine takes about a second, most of a
small job's start (the job record's ``startup`` shows it under ``actors``). The pool
keeps ``size`` idle :class:`worker.actor.RankWorker` processes per node, made without a
job. A job's group takes one per rank on the node its placement bundle landed on, and
``configure`` makes it the rank; a rank with no warm process on its node is started as
before. A process serves one job only (a gloo group cannot be made twice in one
process, and a fresh process carries nothing over), and every taken one is replaced
when that job's group ends, in the background.

Idle processes reserve no CPU (``num_cpus=0``): the job's placement group reserves its
CPUs as before, so the scheduler's count of free CPUs is unchanged.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from typing import Any

from worker.actor import RankWorker


class WarmPool:
    """Up to ``size`` idle rank processes per node, with ``env`` in their environment."""

    def __init__(self, size: int, env: dict[str, str] | None = None):
        self.size, self.env = size, dict(env or {})
        self._idle: dict[str, list[Any]] = defaultdict(list)  # node id -> actors
        self._lock = threading.Lock()

    def fill(self, node_id: str) -> None:
        """Start processes on node ``node_id`` until ``size`` are idle there."""
        with self._lock:
            idle = self._idle[node_id]
            while len(idle) < self.size:
                idle.append(self._start(node_id))

    def take(self, node_id: str) -> Any | None:
        """An idle process on ``node_id``, or None. The group that took it calls
        :meth:`fill` when it ends: a process starting takes about a CPU-second, which
        would slow the job that is starting, not the next one."""
        with self._lock:
            idle = self._idle.get(node_id)
            return idle.pop(0) if idle else None

    def close(self) -> None:
        """End every idle process."""
        import ray

        with self._lock:
            idle = [actor for actors in self._idle.values() for actor in actors]
            self._idle.clear()
        for actor in idle:
            with contextlib.suppress(Exception):  # already gone with its node
                ray.kill(actor, no_restart=True)

    def _start(self, node_id: str) -> Any:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor: Any = ray.remote(RankWorker).options(
            num_cpus=0, max_restarts=0, max_concurrency=1,
            runtime_env={"env_vars": self.env} if self.env else None,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote()
        actor.warm.remote()  # queued first: done before a job's first call, or while it waits
        return actor


def local_node_with_cpus() -> str | None:
    """The node this process (the driver) runs on, if jobs can run there (it has CPUs)."""
    import ray

    node_id = str(ray.get_runtime_context().get_node_id())
    for node in ray.nodes():
        if node["NodeID"] == node_id and node["Alive"]:
            return node_id if node["Resources"].get("CPU", 0) > 0 else None
    return None
