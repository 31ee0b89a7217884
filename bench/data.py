"""The data path, each figure beside its reference, printed as JSON.

- **ingest**: a CSV and the same rows as Parquet (about ``--mb`` MB of CSV) through the
  project's ingest (parse, check, write the layout) against pyarrow's own read of the
  same file into a table. Goal: at least 0.7x pyarrow's speed. Medians of 3.
- **memory-mapped vs in memory**: training steps per second of one in-process rank on
  the 60,000 x 784 benchmark data, gathered from the memory-mapped layout, against the
  same rows held in memory. Goal: at least 0.95x.
- **cold page cache**: a larger dataset whose pages are dropped from the page cache
  before each run (``posix_fadvise(DONTNEED)``): steps/s with the ``full`` shuffle
  (random reads) and the ``block`` shuffle (near-sequential), as a dataset larger than
  the memory left to the workers would behave.
- **RssAnon**: each rank's anonymous memory while 2 workers train on the layout (the
  file's pages are page cache, shared, not the rank's own).
- **the service's RSS**: its peak while a CSV of ``--mb`` MB streams in and is ingested,
  and a 2-worker job trains on it, against its RSS before.

    python -m bench.data [--mb 100] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from bench.machine import RankMemory, machine_info, median_seconds, memory_of, random_layout
from bench.workload import job_spec
from common.collective import LocalAllReduce
from common.data import Dataset, load_dataset, prepare_dataset
from common.dataset_files import StoredDataset
from common.schemas import JobSpec
from worker import cluster
from worker.driver import train
from worker.group import GroupOptions
from worker.trainer import Trainer


def tabular(mb: int, seed: int) -> Any:
    """About ``mb`` MB of CSV as an Arrow table: 19 float features and a 0/1 label."""
    import pyarrow as pa

    x = np.random.default_rng(seed).standard_normal((mb * 2**20 // 180, 19)).astype(np.float32)
    return pa.table({**{f"f{i}": x[:, i] for i in range(19)},
                     "label": (x[:, 0] > 0).astype(np.int64)})


def ingest_rows(directory: Path, mb: int) -> list[dict[str, Any]]:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from service.ingest import ingest, open_source

    table = tabular(mb, seed=0)
    rows = table.num_rows
    files = {"csv": directory / "in.csv", "parquet": directory / "in.parquet"}
    pcsv.write_csv(table, files["csv"])
    pq.write_table(table, files["parquet"])
    reads = {"csv": lambda: pcsv.read_csv(files["csv"]),
             "parquet": lambda: pq.read_table(files["parquet"])}
    results = []
    for fmt, path in files.items():
        def ours(fmt: str = fmt, path: Path = path) -> None:
            source = open_source(path, fmt, "classification", "label")  # type: ignore[arg-type]
            ingest(source, directory / f"layout-{fmt}-{time.monotonic_ns()}", name=fmt,
                   task="classification", x_dtype="float32", content_hash="",
                   source_info=None, byte_budget=1 << 40)

        project = median_seconds(ours, repeat=3, warmup=0)
        reference = median_seconds(reads[fmt], repeat=3, warmup=0)
        size = path.stat().st_size / 2**20
        results.append({"name": f"ingest {fmt}, {size:.0f} MB, {rows} rows",
                        "project": size / project, "reference": size / reference,
                        "unit": "MB/s", "ratio": reference / project, "goal": 0.7,
                        "reference_is": f"pyarrow reading the {fmt} into a table"})
    return results


def steps_per_second(trainer: Trainer, steps: int) -> float:
    trainer.run(3)  # warm up
    began = time.perf_counter()
    trainer.run(steps)
    return steps / (time.perf_counter() - began)


def in_memory(data: Dataset) -> Dataset:
    """The same dataset with its rows read into memory (no memory map)."""
    stored = StoredDataset(data.stored.directory)
    stored.x, stored.y = np.array(stored.x), np.array(stored.y)
    return Dataset(data.ref, stored)


def mapped_vs_memory(steps: int) -> dict[str, Any]:
    spec = JobSpec.model_validate({**job_spec(), "workers": 1, "allreduce": "local"})
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    with threadpool_limits(limits=1, user_api="blas"):
        rates: dict[str, list[float]] = {"mapped": [], "memory": []}
        held = in_memory(data)
        for _ in range(3):  # in turns
            rates["mapped"].append(steps_per_second(Trainer(spec, data, LocalAllReduce()),
                                                    steps))
            rates["memory"].append(steps_per_second(Trainer(spec, held, LocalAllReduce()),
                                                    steps))
    mapped, memory = statistics.median(rates["mapped"]), statistics.median(rates["memory"])
    return {"name": "steps/s, 60,000 x 784 memory-mapped vs in memory, 1 rank, full shuffle",
            "project": mapped, "reference": memory, "unit": "steps/s",
            "ratio": mapped / memory, "goal": 0.95, "reference_is": "the rows in memory"}


def cold_cache(directory: Path, steps: int) -> list[dict[str, Any]]:
    """A 1.2 GB layout, evicted from the page cache before each run."""
    features = 784
    random_layout(directory / "cold", 400_000, features)
    results = {}
    for shuffle in ("full", "block"):
        spec = JobSpec.model_validate({
            "model": {"input_dim": features, "layers": [{"units": 64}, {
                "units": 2, "activation": "softmax"}]}, "batch_size": 512, "workers": 1,
            "allreduce": "local", "data": {"shuffle": shuffle, "validation_fraction": 0.0,
                                           "standardize": False}})
        data = prepare_dataset(directory / "cold", spec.data, seed=0)
        evict(directory / "cold" / "x.npy")
        with threadpool_limits(limits=1, user_api="blas"):
            trainer = Trainer(spec, data, LocalAllReduce())
            began = time.perf_counter()
            trainer.run(steps)
            results[shuffle] = steps / (time.perf_counter() - began)
    return [{"name": f"steps/s, cold page cache, 400,000 x 784 (1.2 GB), {shuffle} shuffle",
             "project": rate, "reference": results["full"], "unit": "steps/s",
             "ratio": rate / results["full"], "goal": None,
             "reference_is": "the full shuffle, cold"} for shuffle, rate in results.items()]


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def rank_memory(steps: int) -> dict[str, Any]:
    spec = JobSpec.model_validate({**job_spec(), "max_steps": steps})
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)

    hooks = RankMemory()
    cluster.connect(num_cpus=2)
    try:
        train(spec, data, GroupOptions(), hooks)
    finally:
        cluster.disconnect()
    size = data.stored.x.nbytes
    return {"name": "RssAnon per rank, 2 workers on 60,000 x 784 (MiB)",
            "project": max(hooks.peaks.values()) / 2**20, "reference": size / 2**20,
            "unit": "MiB", "ratio": size / max(hooks.peaks.values()), "goal": None,
            "reference_is": "the features file", "per_rank_mib": {
                str(rank): round(v / 2**20, 1) for rank, v in sorted(hooks.peaks.items())}}


def service_memory(directory: Path, mb: int) -> dict[str, Any]:
    """The service's peak RSS over an upload, its ingest and a 2-worker job on it."""
    import pyarrow.csv as pcsv

    from service.local import local_service

    path = directory / "upload.csv"
    pcsv.write_csv(tabular(mb, seed=2), path)
    with local_service("bench-data", cpus=2) as client:
        Path(f"/proc/{client.pid}/clear_refs").write_text("5")
        before = memory_of(client.pid)["VmRSS"]
        dataset = client.upload_dataset(path, name="upload", wait=True)
        job = client.submit({"model": {"input_dim": 19, "layers": [
            {"units": 64}, {"units": 2, "activation": "softmax"}]}, "epochs": 1,
            "batch_size": 512, "workers": 2, "data": {"dataset": dataset.id}})
        client.wait(job.id, poll_s=0.2)
        peak = memory_of(client.pid)["VmHWM"]
    size = path.stat().st_size / 2**20
    return {"name": f"service peak RSS, a {size:.0f} MB CSV uploaded, ingested and trained "
                    "on by 2 workers (MiB)", "project": peak / 2**20,
            "reference": before / 2**20, "unit": "MiB", "ratio": before / peak, "goal": None,
            "reference_is": "its RSS before the upload"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="syncsgd-bench-data-") as tmp:
        results = ingest_rows(Path(tmp), args.mb)
        results.append(mapped_vs_memory(args.steps))
        results += cold_cache(Path(tmp), args.steps)
        results.append(rank_memory(args.steps))
        results.append(service_memory(Path(tmp), args.mb))
    print(json.dumps({"benchmark": "data", "machine": machine_info(), "results": results},
                     indent=2))


if __name__ == "__main__":
    main()
