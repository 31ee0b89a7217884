"""Run under ``mpiexec -n N python -m tests.worker.sharded_probe WHAT``: real MPI ranks
that report what a sharded update holds (``sizes``) or how a NaN in one slice of the
gradient ends the step (``nan float|deterministic``). One JSON line per rank on stdout."""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from common.data import load_dataset
from common.nn import Network
from common.schemas import JobSpec
from worker.backends.mpi import MpiAllReduce
from worker.reduction import DivergedError, make_reduction
from worker.trainer import Trainer

SPEC = {"model": {"input_dim": 64, "layers": [{"units": 37, "activation": "tanh"},
                                              {"units": 10, "activation": "softmax"}]},
        "optimizer": {"kind": "adam", "lr": 0.01}, "batch_size": 60, "dtype": "float64",
        "sharded_update": True}


def sizes(comm: MpiAllReduce) -> dict[str, Any]:
    spec = JobSpec.model_validate(SPEC)
    trainer = Trainer(spec, load_dataset(spec.data, seed=0, dtype="float64"), comm)
    trainer.run(3)
    state = trainer.state()  # collective: the slices gathered
    return {"owned": list(trainer.owned), "m": trainer.optimizer.state_dict()["m"].shape[0],
            "v": trainer.optimizer.state_dict()["v"].shape[0],
            "gathered_m": state.optimizer["m"].shape[0], "parameters": trainer.net.num_parameters}


class PoisonedNetwork(Network):
    """A real network whose gradient gets one NaN, at ``index``, on rank 0 only."""

    index, poison = -1, False

    def compute_gradients(self, *args: Any, **kwargs: Any) -> float:
        loss = super().compute_gradients(*args, **kwargs)
        if self.poison:
            self.grads[self.index] = np.nan
        return loss


def nan(comm: MpiAllReduce, slice_rank: int, deterministic: bool) -> str | None:
    spec = JobSpec.model_validate({**SPEC, "deterministic": deterministic, "micro_shards": 3})
    reduction = make_reduction(spec, comm, spec.model.num_parameters)
    assert reduction.slices is not None
    net = PoisonedNetwork(spec.model, loss="cross_entropy", dtype="float64",
                          grads=reduction.gradient_buffer)
    lo, hi = reduction.slices.bounds(slice_rank)
    net.index, net.poison = (lo + hi) // 2, comm.rank == 0
    rng = np.random.default_rng(comm.rank)
    x, y = rng.normal(size=(60, 64)), rng.integers(0, 10, size=60)
    try:
        reduction.step(net, lambda a, b: (x[a:b], y[a:b]), 60, 7, None)
    except DivergedError as exc:
        return str(exc)
    return None


def main() -> None:
    from mpi4py import MPI

    comm = MpiAllReduce(MPI.COMM_WORLD)
    what = sys.argv[1]
    if what == "sizes":
        report = sizes(comm)
    else:  # a NaN in each slice in turn
        report = {"errors": [nan(comm, index, sys.argv[2] == "deterministic")
                             for index in range(comm.world_size)]}
    print(json.dumps({"rank": comm.rank, **report}), flush=True)


if __name__ == "__main__":
    main()
