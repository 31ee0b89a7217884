"""One flat all-reduce after backward vs buckets overlapped with backward, raw under
mpiexec (2 ranks, 1 BLAS thread each), the 784-1024-1024-10 MLP at global batch 512.

Overlapped: as soon as a layer's dW and db exist (the last layer first), a non-blocking
``Iallreduce`` of that layer's part of the flat gradient buffer starts, and backward goes
on to the earlier layers; ``Testall`` between layers drives MPI's progress, ``Waitall``
before the update. Prints JSON from rank 0 (median ms per step, each way, and the step
with no all-reduce at all: the most any overlap could gain).

    mpiexec -n 2 python -m bench.overlap [--steps 30]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from mpi4py import MPI
from threadpoolctl import threadpool_limits

from bench.engine import model
from bench.machine import median_seconds
from bench.workload import BATCH, SIZES
from common.nn import SGD, Network


def layer_slices(net: Network) -> list[slice]:
    """Each layer's (dW, db) as one slice of the flat gradient buffer."""
    slices, offset = [], 0
    for layer in net.layers:
        end = offset + layer.dW.size + layer.db.size
        slices.append(slice(offset, end))
        offset = end
    return slices


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    world = comm.Get_size()
    net = Network.from_spec(model(list(SIZES)))
    rng = np.random.default_rng(comm.Get_rank())
    n = BATCH // world
    x = rng.standard_normal((n, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], n)
    optimizer = SGD(net.num_parameters, net.dtype, momentum=0.9)
    slices = layer_slices(net)

    def flat_step() -> None:
        net.compute_gradients(x, y, denominator=BATCH)
        comm.Allreduce(MPI.IN_PLACE, net.grads)
        optimizer.step(net.params, net.grads, 1e-4)

    def no_allreduce_step() -> None:  # the bound: what perfect overlap would reach
        net.compute_gradients(x, y, denominator=BATCH)
        optimizer.step(net.params, net.grads, 1e-4)

    def overlapped_step() -> None:
        out = net.forward(x)
        last = net.layers[-1]
        net.compute_loss(y, n)
        net.loss.output_error(last.z[:n], out, y, last.activation, BATCH, last.error[:n],
                              last.scratch[:n])
        requests: list[MPI.Request] = []
        delta = last.error[:n]
        for index in range(len(net.layers) - 1, -1, -1):
            layer = net.layers[index]
            layer.compute_weight_gradients(delta)
            requests.append(comm.Iallreduce(MPI.IN_PLACE, net.grads[slices[index]]))
            if index > 0:
                delta = layer.error_of_previous(delta, net.layers[index - 1])
                MPI.Request.Testall(requests)
        MPI.Request.Waitall(requests)
        optimizer.step(net.params, net.grads, 1e-4)

    with threadpool_limits(limits=1, user_api="blas"):
        results = {}
        for name, step in (("flat", flat_step), ("overlapped", overlapped_step),
                           ("flat again", flat_step), ("no all-reduce", no_allreduce_step)):
            comm.Barrier()
            results[name] = median_seconds(step, repeat=args.steps) * 1e3
    if comm.Get_rank() == 0:
        flat = min(results["flat"], results["flat again"])
        print(json.dumps({"benchmark": "overlap", "world_size": world, "step_ms": results,
                          "results": [{
                              "name": "overlapped buckets vs one flat all-reduce, 2 ranks",
                              "project": results["overlapped"], "reference": flat,
                              "unit": "ms", "ratio": flat / results["overlapped"],
                              "goal": None,
                              "reference_is": "the same step with one flat Allreduce"}]}))


if __name__ == "__main__":
    main()
