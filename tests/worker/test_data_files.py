"""Training on datasets stored as files, on a real local Ray with real MPI: every rank
memory-maps the dataset itself and gathers only its rows. N workers still equal 1 (to
rounding, bit for bit in deterministic mode) with the full and the block shuffle, and a
rank's own memory stays a small fraction of the dataset."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.machine import RankMemory, random_layout
from common.data import Dataset, dataset_from_arrays, load_dataset, prepare_dataset
from common.schemas import DataSpec, JobSpec
from tests.reference import single_process_run
from worker.driver import Recorder, train
from worker.errors import RankFailedError
from worker.group import GroupOptions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classification dataset of 1,303 rows x 12 features, as ingest writes it."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1303, 12)) * np.logspace(-2, 3, 12)
    y = (x[:, 0] * 100 + x[:, 5] > 0).astype(np.int64) + 2 * (x[:, 7] > 0)
    directory = tmp_path_factory.mktemp("files") / "layout"
    dataset_from_arrays(directory, x, y)
    return directory


def spec_for(shuffle: str, **fields: Any) -> JobSpec:
    return JobSpec.model_validate({
        "model": {"input_dim": 12, "layers": [{"units": 24, "activation": "tanh"},
                                              {"units": 4, "activation": "softmax"}]},
        "optimizer": {"lr": 0.05, "momentum": 0.9}, "batch_size": 71, "epochs": 2,
        "data": {"shuffle": shuffle, "block_rows": 50, "window_blocks": 3},
        "dtype": "float64", "seed": 9, **fields})


def opened(directory: Path, spec: JobSpec) -> Dataset:
    """The stored layout opened for ``spec`` (its split, shuffle and preprocessing)."""
    return prepare_dataset(directory, spec.data, seed=spec.seed, dtype=spec.dtype)


@pytest.mark.parametrize("shuffle", ["full", "block"])
def test_n_workers_equal_one_on_a_stored_dataset(ray_cluster: Any, stored: Path,
                                                 shuffle: str) -> None:
    spec = spec_for(shuffle)
    expected, expected_records = single_process_run(spec, opened(stored, spec))
    for workers in (2, 3):
        many = spec.model_copy(update={"workers": workers, "allreduce": "mpi"})
        hooks = Recorder()
        result = train(many, opened(stored, many), GroupOptions(), hooks)
        np.testing.assert_allclose(result.params, expected, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose([r.loss for r in hooks.steps],
                                   [r.loss for r in expected_records], rtol=1e-10)


@pytest.mark.parametrize("shuffle", ["full", "block"])
def test_deterministic_mode_gives_one_sha256_for_1_2_and_4_workers(
        ray_cluster: Any, stored: Path, shuffle: str) -> None:
    digests = set()
    for workers in (1, 2, 4):
        spec = spec_for(shuffle, dtype="float32", deterministic=True, workers=workers,
                        allreduce="mpi")
        result = train(spec, opened(stored, spec), GroupOptions())
        digests.add(hashlib.sha256(result.params.tobytes()).hexdigest())
    assert len(digests) == 1


def test_ranks_hold_a_small_part_of_a_large_dataset_in_their_own_memory(
        ray_cluster: Any, tmp_path: Path) -> None:
    """800 MB of features, memory-mapped by 2 ranks: each rank's anonymous memory (its
    buffers, indices and libraries; the file's pages are shared page cache) stays several
    times smaller than the file."""
    features = 1000
    random_layout(tmp_path / "big", 200_000, features)
    file_bytes = (tmp_path / "big" / "x.npy").stat().st_size
    spec = JobSpec.model_validate({
        "model": {"input_dim": features, "layers": [{"units": 16}, {
            "units": 2, "activation": "softmax"}]}, "batch_size": 512, "max_steps": 120,
        "data": {"validation_fraction": 0.01}, "workers": 2, "allreduce": "mpi",
        "steps_per_chunk": 20})

    hooks = RankMemory()
    result = train(spec, opened(tmp_path / "big", spec), GroupOptions(), hooks)
    assert result.steps == 120 and len(hooks.peaks) == 2
    largest = max(hooks.peaks.values())
    print(f"\nfeatures file {file_bytes / 2**20:.0f} MiB; RssAnon per rank "
          f"{[round(v / 2**20) for v in hooks.peaks.values()]} MiB")
    assert file_bytes > 3 * largest, (file_bytes, hooks.peaks)


def test_a_rank_that_cannot_open_the_data_fails_the_job_at_start_naming_it(
        ray_cluster: Any, tmp_path: Path, stored: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(stored, copy)
    spec = spec_for("full", workers=2, allreduce="mpi")
    data = opened(copy, spec)
    shutil.rmtree(copy)  # the driver had it open; the ranks look for it now
    with pytest.raises(RankFailedError) as failure:
        train(spec, data, GroupOptions())
    message = str(failure.value)
    assert message.startswith("opening the data and broadcasting rank 0's weights: ranks 0, 1")
    assert "(node " in message and "No such file or directory" in message


def test_load_dataset_refuses_an_unknown_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no dataset 'ds_0123456789abcdef'"):
        load_dataset(DataSpec(dataset="ds_0123456789abcdef"), seed=0, datasets_dir=tmp_path)

