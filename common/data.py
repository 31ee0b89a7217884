"""Datasets and the deterministic order and sharding of their samples.

The data order depends only on ``(seed, epoch)``, never on the number of
workers: every rank computes the same permutation, cuts the same global
batches from it, and takes its own contiguous part of each. That is what lets
N workers reproduce the 1-worker run.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.errors import FieldError
from common.schemas import DataSpec, DTypeName, JobSpec, SyntheticSpec

Array = npt.NDArray[Any]


class DataMismatchError(FieldError):
    """The spec does not fit its data; ``field`` is the spec field to change."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a job needs to know about its data before any of it is built."""

    name: str
    features: int
    outputs: int  # classes, or regression targets
    num_classes: int | None  # None for regression
    n_train: int
    n_val: int

    @property
    def values(self) -> int:
        """Feature values in all: what the data costs in memory, per copy."""
        return (self.n_train + self.n_val) * self.features


@dataclass(frozen=True)
class Dataset:
    """A train/validation split ready for the network.

    ``x_*``: (n, features) in the job's dtype. ``y_*``: (n,) int64 class labels
    when ``num_classes`` is set, else (n, outputs) regression targets.
    """

    name: str
    x_train: Array
    y_train: Array
    x_val: Array
    y_val: Array
    num_classes: int | None

    @property
    def features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def outputs(self) -> int:
        return self.num_classes if self.num_classes is not None else int(self.y_train.shape[1])

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(self.name, self.features, self.outputs, self.num_classes,
                           int(self.x_train.shape[0]), int(self.x_val.shape[0]))


def load_dataset(spec: DataSpec, *, seed: int, dtype: DTypeName = "float32",
                 datasets_dir: Path | None = None) -> Dataset:
    """Build the dataset a spec names; the split and any generation follow ``seed``.

    Uploaded datasets (``ds_...``) are read from ``datasets_dir``.
    """
    if spec.dataset == "digits":
        return _digits(spec.validation_fraction, seed, dtype)
    if spec.dataset == "synthetic":
        return _synthetic(spec.synthetic or SyntheticSpec(), spec.validation_fraction, seed, dtype)
    with _open_uploaded(spec.dataset, datasets_dir) as archive:
        meta = json.loads(str(archive["meta"]))
        x, y = archive["x"], archive["y"]
    classes = meta["classes"]
    labels = y if classes is not None else None
    train, val = split_train_validation(len(y), spec.validation_fraction, seed, labels)
    return _split(meta["name"], x, y, train, val, dtype, num_classes=classes)


def save_uploaded(path: Path, x: Array, y: Array, name: str, classes: int | None) -> None:
    """Store an uploaded dataset: ``x`` (n, features), ``y`` (n,) labels or (n, outputs)."""
    meta = json.dumps({"name": name, "classes": classes, "features": int(x.shape[1])})
    with open(path, "wb") as f:
        np.savez(f, allow_pickle=False, x=x, y=y, meta=np.array(meta))


def describe_dataset(spec: DataSpec, *, seed: int, datasets_dir: Path | None = None) -> DatasetInfo:
    """The shape of the data ``spec`` names, without generating it (cheap)."""
    if spec.dataset == "digits":
        labels = _digits_labels()
        _, val = split_train_validation(len(labels), spec.validation_fraction, seed, labels)
        return DatasetInfo("digits", 64, 10, 10, len(labels) - len(val), len(val))
    if spec.dataset == "synthetic":
        syn = spec.synthetic or SyntheticSpec()
        n_val = round(spec.validation_fraction * syn.samples)
        classes = syn.outputs if syn.task == "classification" else None
        return DatasetInfo("synthetic", syn.features, syn.outputs, classes,
                           syn.samples - n_val, n_val)
    with _open_uploaded(spec.dataset, datasets_dir) as archive:
        meta = json.loads(str(archive["meta"]))
        y = archive["y"]  # the labels only: x is not read
        features = int(meta["features"])
    classes = meta["classes"]
    _, val = split_train_validation(len(y), spec.validation_fraction, seed,
                                    y if classes is not None else None)
    outputs = classes if classes is not None else int(y.shape[1])
    return DatasetInfo(meta["name"], features, outputs, classes, len(y) - len(val), len(val))


def _open_uploaded(dataset_id: str, datasets_dir: Path | None) -> Any:
    """The .npz of an uploaded dataset; ids are checked, never used as free paths."""
    if datasets_dir is None or not re.fullmatch(r"ds_[0-9a-f]{16}", dataset_id):
        raise DataMismatchError("data.dataset", f"no dataset {dataset_id!r} has been uploaded")
    path = datasets_dir / f"{dataset_id}.npz"
    if not path.is_file():
        raise DataMismatchError("data.dataset", f"no dataset {dataset_id!r} has been uploaded")
    return np.load(path, allow_pickle=False)


def check_spec_matches_data(job: JobSpec, data: Dataset | DatasetInfo) -> None:
    """Raise a :class:`DataMismatchError` naming the field when the model cannot take this data."""
    if isinstance(data, Dataset):
        data = data.info
    if job.model.input_dim != data.features:
        raise DataMismatchError("model.input_dim", f"is {job.model.input_dim} but dataset "
                                f"{data.name!r} has {data.features} features")
    units = job.model.layers[-1].units
    if units != data.outputs:
        what = "classes" if data.num_classes is not None else "outputs"
        raise DataMismatchError("model.layers[-1].units", f"is {units} but dataset "
                                f"{data.name!r} has {data.outputs} {what}")
    if (job.loss == "cross_entropy") != (data.num_classes is not None):
        task = "classification" if data.num_classes is not None else "regression"
        raise DataMismatchError("loss", f"{job.loss} does not fit dataset {data.name!r} ({task})")
    if data.n_train == 0:
        raise DataMismatchError("data.validation_fraction",
                                f"leaves no training samples in {data.name!r}")


def split_train_validation(n: int, fraction: float, seed: int,
                           labels: Array | None = None) -> tuple[Array, Array]:
    """``(train_indices, validation_indices)``, sorted; stratified by ``labels`` if given.

    Each class contributes ``round(fraction * its count)`` samples to validation,
    chosen by a generator seeded with ``seed``.
    """
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c)
                                                   for c in np.unique(labels)]
    val_parts = []
    for group in groups:
        chosen = rng.permutation(group)[: round(fraction * group.size)]
        val_parts.append(chosen)
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.arange(0)
    train = np.setdiff1d(np.arange(n), val, assume_unique=True)
    return train, val


def epoch_order(n: int, seed: int, epoch: int) -> npt.NDArray[np.int64]:
    """The sample order of one epoch: a permutation of ``range(n)`` from (seed, epoch)."""
    return np.random.default_rng((seed, epoch)).permutation(n)


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """Rank's contiguous part ``[lo, hi)`` of ``n`` items, sizes differing by at most 1.

    The first ``n % world_size`` ranks take one extra item; a rank may get none.
    """
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Global batches per epoch; the last one may be smaller (never dropped)."""
    return -(-n_train // batch_size)


@functools.cache
def _digits_arrays() -> tuple[Array, Array]:
    # scikit-learn ships the 1,797 8x8 digits inside its package: no download.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)
    x.flags.writeable = y.flags.writeable = False  # shared by every caller
    return x, y


def _digits_labels() -> Array:
    return _digits_arrays()[1]


def _digits(fraction: float, seed: int, dtype: DTypeName) -> Dataset:
    x, y = _digits_arrays()
    train, val = split_train_validation(len(y), fraction, seed, labels=y)
    return _standardized("digits", x, y, train, val, dtype, num_classes=10)


def _synthetic(spec: SyntheticSpec, fraction: float, seed: int, dtype: DTypeName) -> Dataset:
    """Gaussian inputs labelled by a random one-hidden-layer tanh teacher network."""
    rng = np.random.default_rng((seed, 0x5EED))
    x = rng.standard_normal((spec.samples, spec.features), dtype=np.float32)
    hidden = 64
    w1 = rng.standard_normal((spec.features, hidden), dtype=np.float32) / np.float32(
        np.sqrt(spec.features))
    w2 = rng.standard_normal((hidden, spec.outputs), dtype=np.float32)
    scores = np.tanh(x @ w1) @ w2
    if spec.noise:
        scores += spec.noise * rng.standard_normal(scores.shape, dtype=np.float32)
    train, val = split_train_validation(spec.samples, fraction, seed)
    if spec.task == "classification":
        y = scores.argmax(axis=1).astype(np.int64)
        return _split("synthetic", x, y, train, val, dtype, num_classes=spec.outputs)
    return _split("synthetic", x, scores, train, val, dtype, num_classes=None)


def _standardized(name: str, x: Array, y: Array, train: Array, val: Array, dtype: DTypeName,
                  num_classes: int | None) -> Dataset:
    """Standardize with the TRAINING part's statistics only (no validation leak)."""
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0  # constant features (digits' blank corners) stay 0
    return _split(name, (x - mean) / std, y, train, val, dtype, num_classes)


def _split(name: str, x: Array, y: Array, train: Array, val: Array, dtype: DTypeName,
           num_classes: int | None) -> Dataset:
    def targets(idx: Array) -> Array:
        return y[idx] if num_classes is not None else np.ascontiguousarray(y[idx], dtype=dtype)

    return Dataset(name, np.ascontiguousarray(x[train], dtype=dtype), targets(train),
                   np.ascontiguousarray(x[val], dtype=dtype), targets(val), num_classes)
