"""Datasets against a real service: a 200 MB CSV streamed in while the service's memory
stays flat, and a registered Parquet directory with text labels trained on 2 real MPI
workers, predicting the original label strings."""

from __future__ import annotations

import io
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.machine import memory_of
from tests.e2e.helpers import SYNCSGD, Server, start_server
from tests.helpers import four_class_csv, npz_bomb, run_job, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("root")
    srv = start_server(tmp_path_factory.mktemp("datasets") / "data", datasets_root=root)
    srv.root = root  # type: ignore[attr-defined]
    yield srv
    srv.stop_cleanly()


def big_csv(path: Path, target_bytes: int) -> int:
    """A CSV of at least ``target_bytes``: one block of random rows, written repeatedly
    (the content does not matter here, its size does). Returns the data rows."""
    rng = np.random.default_rng(0)
    block = io.StringIO()
    x = rng.standard_normal((8000, 16))
    np.savetxt(block, np.column_stack([x, (x[:, 0] > 0).astype(int)]), fmt="%.6f",
               delimiter=",")
    text = block.getvalue().encode()
    repeats = -(-target_bytes // len(text))
    with open(path, "wb") as f:
        f.write(b",".join(f"f{i}".encode() for i in range(16)) + b",label\n")
        for _ in range(repeats):
            f.write(text)
    return repeats * 8000


def test_a_200_mb_csv_streams_in_while_the_service_memory_stays_flat(
        server: Server, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    rows = big_csv(path, 200 * 2**20)
    assert path.stat().st_size >= 200 * 2**20
    pid = server.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # restart VmHWM, the peak RSS, here
    baseline = memory_of(pid)["VmRSS"]
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:  # VmHWM is the kernel's own peak; sampling is a second witness
        while not done.is_set():
            peak[0] = max(peak[0], memory_of(pid)["VmRSS"])
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    progress: list[int] = []
    try:
        with open(path, "rb") as body:
            response = httpx.post(f"{server.url}/datasets", content=body, params={
                "name": "big", "label": "label"}, timeout=httpx.Timeout(30, read=600))
        assert response.status_code == 202, response.text  # streamed; ingest goes on

        def ingested() -> dict[str, Any] | None:
            record: dict[str, Any] = server.http.get(f"/datasets/{response.json()['id']}").json()
            progress.append(record["rows_done"])
            return record if record["state"] != "ingesting" else None

        dataset = wait_for(ingested, 120, "the ingest to end", interval=0.02)
    finally:
        done.set()
        sampler.join()
    assert dataset["state"] == "ready" and dataset["rows"] == rows
    assert any(0 < done_rows < rows for done_rows in progress)  # it moved as it went
    assert dataset["features"] == 16 and dataset["class_names"] == [0, 1]
    rise = max(peak[0], memory_of(pid)["VmHWM"]) - baseline
    print(f"\n{path.stat().st_size / 2**20:.0f} MiB CSV, {rows} rows: service RSS "
          f"{baseline / 2**20:.0f} MiB before, peak rise {rise / 2**20:.0f} MiB")
    assert rise < 100 * 2**20, rise
    layout = server.data_dir / "datasets" / dataset["id"]
    assert (layout / "x.npy").stat().st_size == 128 + rows * 16 * 4
    assert not list((server.data_dir / "datasets").glob(".upload-*"))  # the upload is gone


def test_a_registered_parquet_directory_trains_on_two_workers_and_predicts_names(
        server: Server) -> None:
    root: Path = server.root  # type: ignore[attr-defined]
    folder = root / "flowers"
    folder.mkdir()
    rng = np.random.default_rng(1)
    names = np.array(["iris", "rose", "tulip"])
    for part in range(3):
        x = rng.standard_normal((400, 4)) * [1, 10, 100, 0.1]
        kind = names[(x[:, 0] > 0).astype(int) + (x[:, 1] > 5).astype(int)]
        pq.write_table(pa.table({"sepal": x[:, 0], "petal": x[:, 1], "stem": x[:, 2],
                                 "leaf": x[:, 3], "species": kind}),
                       folder / f"part-{part}.parquet")
    dataset = server.http.post("/datasets/register", params={"wait": True}, json={
        "name": "flowers", "path": "flowers", "format": "parquet", "label": "species"})
    assert dataset.status_code == 201, dataset.text
    record = dataset.json()
    assert record["rows"] == 1200 and record["class_names"] == ["iris", "rose", "tulip"]
    assert record["feature_names"] == ["sepal", "petal", "stem", "leaf"]
    job = run_job(server.http, {
        "model": {"input_dim": 4, "layers": [{"units": 16, "activation": "relu"},
                                             {"units": 3, "activation": "softmax"}]},
        "optimizer": {"lr": 0.1, "momentum": 0.9}, "epochs": 20, "batch_size": 32,
        "data": {"dataset": record["id"]}, "workers": 2, "allreduce": "mpi"})
    assert job["state"] == "succeeded", job["error"]
    assert len(job["ranks"]) == 2 and job["val_accuracy"] > 0.9
    rows = [[0.5, 9.0, 3.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [2.0, 30.0, -50.0, 0.1]]
    predicted = server.http.post(f"/jobs/{job['id']}/predict", json={"inputs": rows}).json()
    assert predicted["classes"] == ["tulip", "iris", "tulip"]
    wait_for(lambda: server.http.delete(f"/datasets/{record['id']}").status_code == 204, 10,
             "the dataset to be deletable once no job uses it")


def test_the_cli_adds_a_file_and_follows_its_ingest(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    path.write_bytes(four_class_csv())
    done = subprocess.run([SYNCSGD, "--url", server.url, "datasets", "add", str(path),
                           "--label", "label", "--name", "four"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ready: 300 rows, 5 features, 4 classes" in done.stdout
    listed = subprocess.run([SYNCSGD, "--url", server.url, "datasets", "list"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert "four" in listed.stdout and "ready" in listed.stdout
    refused = subprocess.run([SYNCSGD, "--url", server.url, "datasets", "add", str(path),
                              "--label", "nope"], capture_output=True, text=True,
                             timeout=60, check=False)
    assert refused.returncode == 1 and "label: no column 'nope'" in refused.stdout


def test_a_decompression_bomb_is_refused_before_it_is_read(server: Server) -> None:
    """An .npz of a few KB declaring 10**11 values: refused from its headers, and the
    service's peak RSS barely moves (it used to reach 1.7 GB on such a file)."""
    bomb = npz_bomb(10**10, 10)
    pid = server.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    baseline = memory_of(pid)["VmRSS"]
    refused = server.http.post("/datasets", content=bomb,
                               params={"name": "bomb", "format": "npz"})
    assert refused.status_code == 413, refused.text
    assert "SYNCSGD_DATASETS_QUOTA_BYTES" in refused.json()["detail"]
    assert memory_of(pid)["VmHWM"] - baseline < 50 * 2**20
    assert [d for d in server.http.get("/datasets").json() if d["name"] == "bomb"] == []
