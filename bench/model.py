"""A cost model of a data-parallel step, calibrated here, predicting past this machine.

Per step, with N workers, a global batch B, P parameters of 4 bytes::

    T(N) = (c * B/N + u * P/N) * k(N)                       compute, the sharded update
         + 2(N-1)/N * 4P / bandwidth + 2(N-1) * latency     ring reduce-scatter + all-gather
         + o                                                 the rest (driver, Python)

``c`` (seconds per sample), ``u`` (seconds per parameter updated) and ``o`` come from
the 1-worker run of the benchmark job (bench.scaling's: the 784-1024-1024-10 MLP,
batch 512, MPI, one thread per worker, the sharded update); ``latency`` and
``bandwidth`` are fitted to raw MPI all-reduces of several sizes between 2 processes on
this machine. ``k(N) = max(1, N / cores)``: ranks beyond the machine's cores share them
(only the calibration runs here have it; the predictions give each worker a core). It
does not hold for MPI: a rank waiting in an all-reduce spins on its core, so 3 MPI
ranks on 2 cores starve each other far beyond 3/2. That run is measured and printed,
and left out of the model's error.

The model is checked against measured 1 and 2 worker runs (its error is printed; the 3
worker run is printed beside them), and, with root and iproute2, against a two-node run:
2 ranks in network namespaces of their own, joined over a veth link (UCX over TCP),
whose network constants are fitted to all-reduces timed across that link
(``bench.netns_rank``). It then predicts steps/s and scaling efficiency for 8 to 512
workers on 10, 25 and 100 Gbit/s networks, for the benchmark MLP and for one with 10x
the parameters and the compute, scaling weakly (each worker keeps 256 samples a step,
the benchmark's share at 2 workers, so the global batch grows with N, as data-parallel
users scale) and strongly (the global batch of 512 split ever finer). Efficiency is the
samples per second over N times the 1-worker rate. A network latency of 10 us per message is
assumed there (TCP within a rack). Writes a chart to docs/img/cost-model.png. Prints
JSON.

    python -m bench.model [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.machine import machine_info
from bench.scaling import measure, spec_for
from worker import cluster

BATCH, PER_WORKER = 512, 256
WORKERS = (2, 4, 8, 16, 32, 64, 128, 256, 512)
GBITS = (10, 25, 100)
ASSUMED_LATENCY_S = 10e-6
CHART = Path(__file__).resolve().parents[1] / "docs" / "img" / "cost-model.png"
SIZES_MB = (0.004, 0.06, 1.0, 7.5, 30.0)


def fit_network() -> tuple[float, float]:
    """``(latency s, bandwidth bytes/s)`` from raw MPI all-reduces between 2 processes."""
    mpiexec = str(Path(sys.executable).with_name("mpiexec"))
    done = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "bench.raw_mpi",
                           *map(str, SIZES_MB)], capture_output=True, text=True, timeout=600,
                          check=True)
    return fit(json.loads(done.stdout[done.stdout.index("{"):]))


def fit(seconds: dict[str, float]) -> tuple[float, float]:
    """At N=2 an all-reduce of b bytes takes ``b / bandwidth + 2 latency``: the bandwidth
    from the two largest sizes timed (MB as keys), the latency from the smallest."""
    sizes = [mb * 2**20 for mb in SIZES_MB]
    times = [seconds[str(mb)] for mb in SIZES_MB]
    bandwidth = (sizes[-1] - sizes[-2]) / (times[-1] - times[-2])
    return max((times[0] - sizes[0] / bandwidth) / 2, 1e-7), bandwidth


class Model:
    """``T(N)`` for ``params`` parameters (module docstring)."""

    def __init__(self, per_sample: float, per_parameter: float, rest: float, latency: float,
                 bandwidth: float, params: int, cores: int):
        self.c, self.u, self.o = per_sample, per_parameter, rest
        self.latency, self.bandwidth, self.params, self.cores = latency, bandwidth, params, cores

    def step_s(self, workers: int, batch: int) -> float:
        n = workers
        share = max(1.0, n / self.cores)
        compute = (self.c * batch / n + self.u * self.params / n) * share
        wire = 2 * (n - 1) / n * 4 * self.params / self.bandwidth + 2 * (n - 1) * self.latency
        return compute + (wire if n > 1 else 0.0) + self.o

    def scaled(self, factor: float, bandwidth: float, latency: float, cores: int) -> Model:
        """The same machine's compute for a model ``factor`` times larger, on a network."""
        return Model(self.c * factor, self.u, self.o, latency, bandwidth,
                     int(self.params * factor), cores)


def calibrate(steps: int) -> tuple[Model, list[dict[str, Any]]]:
    latency, bandwidth = fit_network()
    cluster.connect(num_cpus=3)
    try:
        runs = {n: measure(spec_for(n, 1, "mpi" if n > 1 else "local", steps, sharded=True))
                for n in (1, 2, 3)}
    finally:
        cluster.disconnect()
    spec = spec_for(1, 1, "local", steps)
    params = spec.model.num_parameters
    rate, split = runs[1]
    per_sample = split["compute"] / 1e3 / BATCH
    per_parameter = split["update"] / 1e3 / params
    rest = max(0.0, 1 / rate - (split["compute"] + split["update"]) / 1e3)
    model = Model(per_sample, per_parameter, rest, latency, bandwidth, params,
                  os.cpu_count() or 1)
    checks = []
    for n, (measured, _) in runs.items():
        predicted = 1 / model.step_s(n, BATCH)
        checks.append({"workers": n, "measured_steps_per_s": measured,
                       "predicted_steps_per_s": predicted,
                       "error": abs(predicted - measured) / measured,
                       "in_model": n <= model.cores})
    return model, checks


def two_nodes(model: Model, steps: int) -> dict[str, Any] | None:
    """The 2-worker job on two network namespaces; the model's prediction for it, with the
    network constants fitted across the link. None without root or iproute2."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return None
    from tests.cluster.netns import topology

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "UCX_TLS": "tcp,self", "PYTHONPATH": str(root)}
    with tempfile.TemporaryDirectory(prefix="bench-nodes-") as tmp, \
            topology(["node1", "node2"]) as net:
        port = Path(tmp) / "port"
        ranks = [net.spawn(f"node{r + 1}", [sys.executable, "-m", "bench.netns_rank", str(r),
                                            str(port), str(steps)], env,
                           Path(tmp) / f"rank{r}.log", cwd=root) for r in (0, 1)]
        for rank in ranks:
            rank.wait(timeout=900)
        output = (Path(tmp) / "rank0.log").read_text()
        assert all(rank.returncode == 0 for rank in ranks), output
        measured = json.loads(output[output.rindex("{\"allreduce_s\""):])
    assert not net.leftovers(), net.leftovers()  # namespaces, route and processes gone
    latency, bandwidth = fit(measured["allreduce_s"])
    linked = Model(model.c, model.u, model.o, latency, bandwidth, model.params, model.cores)
    predicted = 1 / linked.step_s(2, BATCH)
    rate = measured["steps_per_s"]
    return {"workers": 2, "nodes": 2, "measured_steps_per_s": rate,
            "predicted_steps_per_s": predicted, "error": abs(predicted - rate) / rate,
            "latency_s": latency, "bandwidth_bytes_per_s": bandwidth,
            "step_split_ms": measured["step_split_ms"]}


#: How the global batch grows with N: weakly (each worker keeps 256 samples a step), or
#: strongly (the benchmark's global batch of 512 is split ever finer).
SCALINGS = {"weak": lambda n: PER_WORKER * n, "strong": lambda n: BATCH}


def predictions(base: Model) -> list[dict[str, Any]]:
    rows = []
    for factor, label in ((1, "benchmark MLP"), (10, "10x larger MLP")):
        for gbits in GBITS:
            model = base.scaled(factor, gbits * 1e9 / 8, ASSUMED_LATENCY_S, cores=10**6)
            for scaling, batch in SCALINGS.items():
                one = model.step_s(1, batch(1))
                for n in (1, *WORKERS):
                    step = model.step_s(n, batch(n))
                    rows.append({"model": label, "gbit_s": gbits, "scaling": scaling,
                                 "workers": n, "steps_per_s": 1 / step,
                                 "samples_per_s": batch(n) / step,
                                 "efficiency": batch(n) / step / (batch(1) / one) / n})
    return rows


def break_even(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model, network and scaling: the most workers still at >= 50% efficiency, and
    (strong scaling) the workers past which the job runs no faster."""
    out = []
    for label in sorted({r["model"] for r in rows}):
        for gbits in GBITS:
            for scaling in SCALINGS:
                mine = [r for r in rows if (r["model"], r["gbit_s"], r["scaling"])
                        == (label, gbits, scaling)]
                good = [r["workers"] for r in mine if r["efficiency"] >= 0.5]
                fastest = max(mine, key=lambda r: r["samples_per_s"])
                out.append({"model": label, "gbit_s": gbits, "scaling": scaling,
                            "workers_at_50pct_efficiency": max(good) if good else None,
                            "fastest_at_workers": fastest["workers"],
                            "efficiency_at_512": mine[-1]["efficiency"]})
    return out


def chart(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100, sharey=True)
    for ax, scaling in zip(axes, SCALINGS, strict=True):
        for label, style in (("benchmark MLP", "-"), ("10x larger MLP", "--")):
            for gbits in GBITS:
                mine = [r for r in rows if (r["model"], r["gbit_s"], r["scaling"])
                        == (label, gbits, scaling)]
                ax.plot([r["workers"] for r in mine], [r["efficiency"] for r in mine],
                        style, marker="o", markersize=3, label=f"{label}, {gbits} Gbit/s")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("workers")
        ax.set_ylim(0, 1.05)
        ax.axhline(0.5, color="grey", linewidth=0.8)
        ax.set_title("weak: 256 samples a worker" if scaling == "weak"
                     else "strong: a global batch of 512")
    axes[0].set_ylabel("scaling efficiency")
    axes[1].legend(fontsize=7)
    fig.suptitle("Predicted scaling (cost model calibrated on this machine)")
    fig.tight_layout()
    CHART.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(CHART)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    model, checks = calibrate(args.steps)
    nodes = two_nodes(model, args.steps)
    if nodes is not None:
        checks.append(nodes)
    rows = predictions(model)
    chart(rows)
    worst = max(c["error"] for c in checks if c.get("in_model", True))
    results = [{"name": "cost model: worst error on the measured runs (1 and 2 workers; "
                        "2 nodes)",
                "project": worst, "reference": 0.15, "unit": "fraction",
                "ratio": 0.15 / max(worst, 1e-9), "goal": 1.0}]
    print(json.dumps({
        "benchmark": "model", "machine": machine_info(), "results": results,
        "calibration": {"per_sample_s": model.c, "per_parameter_s": model.u,
                        "rest_s": model.o, "latency_s": model.latency,
                        "bandwidth_bytes_per_s": model.bandwidth, "checks": checks},
        "predictions": rows, "break_even": break_even(rows),
        "chart": str(CHART.relative_to(CHART.parents[2]))}, indent=2))


if __name__ == "__main__":
    main()
