"""Datasets, the split, the data order and the sharding that data parallelism relies on."""

import itertools

import numpy as np
import pytest

from common.data import (
    epoch_order,
    load_dataset,
    shard_bounds,
    split_train_validation,
    steps_per_epoch,
)
from common.schemas import DataSpec


@pytest.mark.parametrize("n", [0, 1, 5, 64, 97])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_shards_cover_the_batch_exactly_once_and_evenly(n: int, world_size: int) -> None:
    bounds = [shard_bounds(n, world_size, rank) for rank in range(world_size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_epoch_order_depends_only_on_seed_and_epoch() -> None:
    a = epoch_order(100, seed=3, epoch=2)
    assert sorted(a.tolist()) == list(range(100))
    assert (a == epoch_order(100, seed=3, epoch=2)).all()
    assert not (a == epoch_order(100, seed=3, epoch=3)).all()
    assert steps_per_epoch(100, 32) == 4  # the last, smaller batch is kept


def test_digits_split_is_stratified_and_standardized_on_train_only() -> None:
    data = load_dataset(DataSpec(validation_fraction=0.2), seed=0, dtype="float64")
    assert data.x_train.shape[1] == 64 and data.num_classes == 10
    assert data.x_train.shape[0] + data.x_val.shape[0] == 1797
    for c in range(10):
        train_share = np.mean(data.y_train == c)
        assert np.mean(data.y_val == c) == pytest.approx(train_share, abs=0.01)
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0, atol=1e-12)
    assert abs(data.x_val.mean(axis=0)).max() > 1e-3  # val statistics were not used
    assert data.x_train.dtype == np.float64


def test_split_is_seeded() -> None:
    labels = np.repeat(np.arange(3), 10)
    a = split_train_validation(30, 0.3, seed=1, labels=labels)
    b = split_train_validation(30, 0.3, seed=1, labels=labels)
    c = split_train_validation(30, 0.3, seed=2, labels=labels)
    assert (a[1] == b[1]).all() and not (a[1] == c[1]).all()
    assert np.intersect1d(a[0], a[1]).size == 0 and a[0].size + a[1].size == 30


def test_synthetic_is_deterministic_and_learnable_shapes() -> None:
    spec = DataSpec(dataset="synthetic", synthetic={"samples": 500, "features": 20,  # type: ignore[arg-type]
                                                     "outputs": 4})
    a, b = load_dataset(spec, seed=1), load_dataset(spec, seed=1)
    assert a.x_train.tobytes() == b.x_train.tobytes() and a.x_train.dtype == np.float32
    assert a.x_train.shape == (400, 20) and a.num_classes == 4
    assert len(np.unique(a.y_train)) == 4  # every class occurs
    reg = DataSpec(dataset="synthetic", synthetic={"samples": 50, "features": 3,  # type: ignore[arg-type]
                                                    "outputs": 2, "task": "regression"})
    assert load_dataset(reg, seed=0).y_train.shape == (40, 2)


def test_unknown_uploaded_dataset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"data\.dataset: no dataset 'ds_0123456789abcdef'"):
        load_dataset(DataSpec(dataset="ds_0123456789abcdef"), seed=0)


@pytest.mark.parametrize("spec", [
    DataSpec(), DataSpec(validation_fraction=0.33),
    DataSpec(dataset="synthetic", validation_fraction=0.1,
             synthetic={"samples": 777, "features": 9, "outputs": 3}),  # type: ignore[arg-type]
    DataSpec(dataset="synthetic", synthetic={"samples": 50, "features": 2,  # type: ignore[arg-type]
                                              "outputs": 4, "task": "regression"}),
])
def test_describe_dataset_matches_the_built_data_without_building_it(spec: DataSpec) -> None:
    from common.data import describe_dataset

    assert describe_dataset(spec, seed=5) == load_dataset(spec, seed=5).info
