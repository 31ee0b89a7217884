"""The training loop of ONE rank. It sees an ``AllReduce``, a network and its data.

Synchronization points (every rank must reach them in the same order, or the
collectives hang; this is why ``run(k)`` is the same call on every rank):

1. construction: ``broadcast`` of rank 0's initial parameters;
2. every step: ONE ``allreduce_sum`` of the gradient buffer, whose padding
   also carries the shard's loss and each rank's compute time (in
   :mod:`worker.reduction`: float, or exact fixed point when deterministic); with
   ``sharded_update`` instead a ``reduce_scatter_sum``, one small ``allreduce_sum``,
   and after the update an ``allgather`` of the parameters (:mod:`worker.sharding`);
3. the last step of every epoch: one small ``allreduce_sum`` of the
   validation loss sum and correct count.

Data parallelism without approximation: every rank derives the same sample
order from ``(seed, epoch)``, cuts the same global batch, and takes its own
contiguous part of it (sizes differ by at most one; a rank may get none). Each
rank's loss and gradients are sums over its part divided by the GLOBAL batch
size, so their all-reduced sum is exactly the full-batch mean, with no padding
and no duplicated samples. Every rank then applies the same optimizer step to
the same parameters, so replicas stay identical (checked by ``fingerprint``).

The training controls keep that promise because each is a function of what every rank
already holds identically: the learning rate of a step is a function of the step and
the reduced validation losses (:mod:`common.nn.schedules`); clipping scales the reduced
gradient by its own norm; early stopping watches the reduced validation metric
(:mod:`common.nn.early_stopping`); a dropout mask depends on the sample's place in the
global batch, not on the rank (:mod:`common.nn.dropout`); accumulation only cuts a
rank's rows into micro-batches (:mod:`worker.reduction`).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from common.checkpoint import TrainingState
from common.collective import AllReduce
from common.data import Dataset, steps_per_epoch
from common.nn import Network, make_optimizer
from common.nn.dropout import DropoutKey
from common.nn.early_stopping import EarlyStopping
from common.nn.schedules import LearningRate
from common.records import ChunkResult, EarlyStopReport, StepRecord, step_spans
from common.schemas import JobSpec
from worker.reduction import DivergedError, make_reduction
from worker.sharding import ShardedOptimizerState

__all__ = ["DivergedError", "Trainer"]

Array = npt.NDArray[Any]


class Trainer:
    """Trains ``spec`` on ``data`` as rank ``comm.rank`` of ``comm.world_size``."""

    def __init__(self, spec: JobSpec, data: Dataset, comm: AllReduce):
        self.spec, self.data, self.comm = spec, data, comm
        self.rank, self.world_size = comm.rank, comm.world_size
        self.reduction = make_reduction(spec, comm, spec.model.num_parameters)
        self.net = Network.from_spec(spec.model, seed=spec.seed, dtype=spec.dtype, loss=spec.loss,
                                     grads=self.reduction.gradient_buffer)
        # The parameters this rank updates: all of them, or its slice (sharded update).
        slices = self.reduction.slices
        self.owned = slices.bounds(self.rank) if slices else (0, self.net.num_parameters)
        self.optimizer = make_optimizer(spec.optimizer, self.owned[1] - self.owned[0],
                                        self.net.dtype)
        self._sharded_state = (ShardedOptimizerState(comm, slices, self.optimizer.per_parameter)
                               if slices else None)
        self.n_train = data.n_train
        self.steps_per_epoch = steps_per_epoch(self.n_train, spec.batch_size)
        self.total_steps = self.steps_per_epoch * spec.epochs
        if spec.max_steps:
            self.total_steps = min(self.total_steps, spec.max_steps)
        self.rate = LearningRate(spec.optimizer, self.steps_per_epoch, self.total_steps)
        self.early = (EarlyStopping(spec.early_stopping, self.net.num_parameters, self.net.dtype)
                      if spec.early_stopping is not None else None)
        self._dropout = any(layer.dropout for layer in spec.model.layers)
        self.step = 0
        self.slow_s = 0.0  # seconds a drill adds to each step's compute
        # The rank's batch buffers: one micro-batch (its share of a global batch, cut
        # into accumulation_steps), never more.
        capacity = self.reduction.capacity
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
        """Run up to ``steps`` synchronized steps (fewer at the end of training)."""
        first = self.step
        records: list[StepRecord] = []
        starts: list[float] = []
        while len(records) < steps and not self.done:
            starts.append(time.time())
            records.append(self._train_step())
        K = self.spec.fingerprint_every
        due = self.done or first // K != self.step // K
        return ChunkResult(self.rank, records, self.step, self.fingerprint() if due else None,
                           total_steps=self.total_steps, early_stopping=self.early_report(),
                           spans=step_spans(records, starts))

    def early_report(self) -> EarlyStopReport | None:
        """Early stopping's best epoch and stop, when the job has early stopping."""
        if self.early is None:
            return None
        return EarlyStopReport(self.early.best_epoch if self.early.best_epoch >= 0 else None,
                               self.early.stopped_epoch if self.early.stopped else None)

    def state(self) -> TrainingState:
        """A copy of what a checkpoint needs: step, parameters, optimizer and controls.
        With a sharded update the optimizer's slices are gathered: every rank calls this."""
        optimizer = self.optimizer.state_dict()
        if self._sharded_state is not None:
            optimizer = self._sharded_state.gather(optimizer)
        controls = {f"schedule.{k}": v for k, v in self.rate.state_dict().items()}
        if self.early is not None:
            controls.update({f"early.{k}": v for k, v in self.early.state_dict().items()})
        return TrainingState(self.step, self.net.params.copy(), optimizer, controls)

    def restore(self, state: TrainingState) -> None:
        """Continue from ``state`` exactly: the data order follows from (seed, epoch)."""
        if state.params.shape != self.net.params.shape:
            raise ValueError(f"checkpoint: {state.params.shape} parameters, the model has "
                             f"{self.net.params.shape}")
        if not 0 <= state.step <= self.total_steps:
            raise ValueError(f"checkpoint: step {state.step} is outside 0..{self.total_steps}")
        self.net.params[...] = state.params
        optimizer = state.optimizer  # whole arrays, whatever the world size that wrote them
        if self._sharded_state is not None:
            optimizer = self._sharded_state.slice(optimizer)
        self.optimizer.load_state_dict(optimizer)
        self.step = state.step
        if state.controls:  # checkpoints of earlier versions have none (and no controls)
            self.rate.load_state_dict(_part(state.controls, "schedule."))
            if self.early is not None:
                self.early.load_state_dict(_part(state.controls, "early."))
                if self.early.stopped:
                    self.total_steps = self.step

    def fingerprint(self) -> str:
        """sha256 of this replica's parameters: equal on every rank, or they diverged."""
        return hashlib.sha256(self.net.params.tobytes()).hexdigest()

    def _train_step(self) -> StepRecord:
        epoch, batch = divmod(self.step, self.steps_per_epoch)
        if epoch != self._order_epoch:
            self._order, self._order_epoch = self.data.order(epoch), epoch
        start = batch * self.spec.batch_size
        global_batch = min(self.spec.batch_size, self.n_train - start)
        positions = self._order[start:start + global_batch]

        slow = [self.slow_s]  # a drill's straggler: once a step, inside its compute

        def load(lo: int, hi: int) -> tuple[Array, Array]:
            if slow[0]:
                time.sleep(slow[0])
                slow[0] = 0.0
            x, y = self._x[:hi - lo], self._y[:hi - lo]
            self.data.gather(self.data.train[positions[lo:hi]], x, y)
            return x, y

        dropout = DropoutKey(self.spec.seed, self.step) if self._dropout else None
        reduced = self.reduction.step(self.net, load, global_batch, self.step + 1, dropout)
        t2 = time.perf_counter()
        gradient, norm = reduced.gradient, math.sqrt(reduced.squared_norm)
        clip = self.spec.optimizer.clip_norm
        if clip is not None and norm > clip:  # the same on every rank: reduced values only
            np.multiply(gradient, clip / norm, out=gradient)
        lr = self.rate.at(self.step)
        lo, hi = self.owned
        self.optimizer.step(self.net.params[lo:hi], gradient, lr)
        update = time.perf_counter() - t2
        gather = 0.0
        if self.reduction.slices is not None:  # every rank's updated slice to every rank
            self.comm.allgather(self.net.params, self.reduction.slices.counts)
            gather = time.perf_counter() - t2 - update

        self.step += 1
        val_loss = val_accuracy = None
        if batch == self.steps_per_epoch - 1:
            val_loss, val_accuracy = self._validate()
            self._end_epoch(epoch, val_loss, val_accuracy)
        if self.done and self.early is not None:
            self.early.restore_best(self.net.params)
        return StepRecord(self.step, epoch, reduced.loss, reduced.compute,
                          reduced.allreduce + gather, reduced.wait, update, val_loss,
                          val_accuracy, lr, norm)

    def _end_epoch(self, epoch: int, val_loss: float | None, val_accuracy: float | None
                   ) -> None:
        """The controls that watch validation: the plateau schedule, early stopping."""
        if val_loss is None:
            return
        self.rate.observe(val_loss)
        if self.early is not None and self.early.observe(epoch, val_loss, val_accuracy,
                                                         self.net.params):
            self.total_steps = self.step

    def _validate(self) -> tuple[float | None, float | None]:
        """Exact validation loss and accuracy: each rank evaluates its part, then sum."""
        n_val = self.data.n_val
        if n_val == 0:
            return None, None
        loss_sum, correct = self.reduction.validate(self.net, self.data)
        return loss_sum / n_val, (correct / n_val if self.net.classifies else None)


def _part(state: dict[str, Array], prefix: str) -> dict[str, Array]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
