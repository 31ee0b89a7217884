"""The training loop of ONE rank. It sees an ``AllReduce``, a network and its data.

Synchronization points (every rank must reach them in the same order, or the
collectives hang; this is why ``run(k)`` is the same call on every rank):

1. construction: ``broadcast`` of rank 0's initial parameters;
2. every step: ONE ``allreduce_sum`` of the gradient buffer, whose padding
   also carries the shard's loss and each rank's compute time (in
   :mod:`worker.reduction`: float, or exact fixed point when deterministic);
3. the last step of every epoch: one small ``allreduce_sum`` of the
   validation loss sum and correct count.

Data parallelism without approximation: every rank derives the same sample
order from ``(seed, epoch)``, cuts the same global batch, and takes its own
contiguous part of it (sizes differ by at most one; a rank may get none). Each
rank's loss and gradients are sums over its part divided by the GLOBAL batch
size, so their all-reduced sum is exactly the full-batch mean, with no padding
and no duplicated samples. Every rank then applies the same optimizer step to
the same parameters, so replicas stay identical (checked by ``fingerprint``).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from common.checkpoint import TrainingState
from common.collective import AllReduce
from common.data import Dataset, steps_per_epoch
from common.nn import Network, make_optimizer
from common.records import ChunkResult, StepRecord
from common.schemas import JobSpec
from worker.reduction import DivergedError, make_reduction

__all__ = ["DivergedError", "Trainer"]

Array = npt.NDArray[Any]


class Trainer:
    """Trains ``spec`` on ``data`` as rank ``comm.rank`` of ``comm.world_size``."""

    def __init__(self, spec: JobSpec, data: Dataset, comm: AllReduce):
        self.spec, self.data, self.comm = spec, data, comm
        self.rank, self.world_size = comm.rank, comm.world_size
        self.reduction = make_reduction(spec.deterministic, spec.micro_shards, comm,
                                        spec.model.num_parameters, np.dtype(spec.dtype))
        self.net = Network.from_spec(spec.model, seed=spec.seed, dtype=spec.dtype, loss=spec.loss,
                                     grads=self.reduction.gradient_buffer)
        self.optimizer = make_optimizer(spec.optimizer, self.net.num_parameters, self.net.dtype)
        self.n_train = data.n_train
        self.steps_per_epoch = steps_per_epoch(self.n_train, spec.batch_size)
        self.total_steps = self.steps_per_epoch * spec.epochs
        if spec.max_steps:
            self.total_steps = min(self.total_steps, spec.max_steps)
        self.step = 0
        capacity = self.reduction.capacity(spec.batch_size)
        self.net.reserve(capacity)
        self._x = np.empty((capacity, data.features), dtype=self.net.dtype)
        self._y = np.empty((capacity, *data.y_tail), dtype=data.y_dtype)
        self._order: npt.NDArray[np.int64] = np.arange(0)
        self._order_epoch = -1
        comm.broadcast(self.net.params, root=0)

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    def run(self, steps: int) -> ChunkResult:
        """Run ``steps`` synchronized steps (fewer at the end of training)."""
        first = self.step
        records = [self._train_step() for _ in range(min(steps, self.total_steps - self.step))]
        K = self.spec.fingerprint_every
        due = self.done or first // K != self.step // K
        return ChunkResult(self.rank, records, self.step, self.fingerprint() if due else None)

    def state(self) -> TrainingState:
        """A copy of what a checkpoint needs: step, parameters, optimizer state."""
        return TrainingState(self.step, self.net.params.copy(), self.optimizer.state_dict())

    def restore(self, state: TrainingState) -> None:
        """Continue from ``state`` exactly: the data order follows from (seed, epoch)."""
        if state.params.shape != self.net.params.shape:
            raise ValueError(f"checkpoint: {state.params.shape} parameters, the model has "
                             f"{self.net.params.shape}")
        if not 0 <= state.step <= self.total_steps:
            raise ValueError(f"checkpoint: step {state.step} is outside 0..{self.total_steps}")
        self.net.params[...] = state.params
        self.optimizer.load_state_dict(state.optimizer)
        self.step = state.step

    def fingerprint(self) -> str:
        """sha256 of this replica's parameters: equal on every rank, or they diverged."""
        return hashlib.sha256(self.net.params.tobytes()).hexdigest()

    def _train_step(self) -> StepRecord:
        epoch, batch = divmod(self.step, self.steps_per_epoch)
        if epoch != self._order_epoch:
            self._order, self._order_epoch = self.data.order(epoch), epoch
        start = batch * self.spec.batch_size
        global_batch = min(self.spec.batch_size, self.n_train - start)
        lo, hi = self.reduction.rows(global_batch)

        t0 = time.perf_counter()
        rows = self.data.train[self._order[start + lo:start + hi]]
        x, y = self._x[:hi - lo], self._y[:hi - lo]
        self.data.gather(rows, x, y)
        gather = time.perf_counter() - t0
        reduced = self.reduction.step(self.net, x, y, global_batch, self.step + 1)
        t2 = time.perf_counter()
        self.optimizer.step(self.net.params, self.net.grads)
        update = time.perf_counter() - t2

        self.step += 1
        val_loss = val_accuracy = None
        if batch == self.steps_per_epoch - 1:
            val_loss, val_accuracy = self._validate()
        return StepRecord(self.step, epoch, reduced.loss, gather + reduced.compute,
                          reduced.allreduce, reduced.wait, update, val_loss, val_accuracy)

    def _validate(self) -> tuple[float | None, float | None]:
        """Exact validation loss and accuracy: each rank evaluates its part, then sum."""
        n_val = self.data.n_val
        if n_val == 0:
            return None, None
        loss_sum, correct = self.reduction.validate(self.net, self.data)
        return loss_sum / n_val, (correct / n_val if self.net.classifies else None)
