"""A job's data: the stored dataset, its train/validation split, the sample order, the
preprocessing, and the deterministic sharding that data parallelism relies on.

Every dataset is a layout on disk (:mod:`common.dataset_files`), memory-mapped; a rank
gathers only the rows of its own part of each global batch. The sample order depends
only on ``(seed, epoch)``, never on the number of workers: every rank computes the same
order, cuts the same global batches from it, and takes its own contiguous part of each.
That is what lets N workers reproduce the 1-worker run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.builtin_data import default_datasets_dir, materialize
from common.dataset_files import StoredDataset, open_layout, write_layout
from common.errors import FieldError
from common.preprocessing import Preprocessing, fit_standardization
from common.schemas import DataSpec, DTypeName, JobSpec, SyntheticSpec

Array = npt.NDArray[Any]
DATASET_ID = re.compile(r"ds_[0-9a-f]{16}")


class DataMismatchError(FieldError):
    """The spec does not fit its data; ``field`` is the spec field to change."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a job needs to know about its data before any of it is read."""

    name: str
    features: int
    outputs: int  # classes, or regression targets
    num_classes: int | None  # None for regression
    n_train: int
    n_val: int


@dataclass(frozen=True)
class DataRef:
    """What a rank needs to open the job's data itself (small: no rows)."""

    directory: str
    spec: DataSpec
    seed: int
    dtype: DTypeName
    preprocessing: Preprocessing = field(default_factory=Preprocessing)


class Dataset:
    """A job's data on one process: rows gathered from the memory map on demand.

    ``train`` and ``val`` are the stored row numbers of each part, ascending. A
    gathered batch is preprocessed into the caller's buffers: features (n, features) in
    the job's dtype; labels (n,) int64, or targets (n, outputs) in the job's dtype.
    """

    def __init__(self, ref: DataRef, stored: StoredDataset):
        self.ref, self.stored, self.meta = ref, stored, stored.meta
        self.dtype = np.dtype(ref.dtype)
        self.num_classes = self.meta.outputs if self.meta.task == "classification" else None
        stratified = self.num_classes is not None and self.meta.stratify
        labels = np.asarray(stored.y) if stratified else None
        self.train, self.val = split_train_validation(self.meta.rows,
                                                      ref.spec.validation_fraction, ref.seed,
                                                      labels)
        self.y_dtype = np.dtype(np.int64) if self.num_classes is not None else self.dtype
        self.y_tail: tuple[int, ...] = () if self.num_classes is not None else (
            self.meta.outputs,)
        self._raw_x: Array = np.empty((0, self.meta.features), dtype=stored.x.dtype)
        self._raw_y: Array = np.empty((0, *self.y_tail), dtype=stored.y.dtype)

    @classmethod
    def open(cls, ref: DataRef) -> Dataset:
        """Open the data a driver described (on a rank: its own memory map)."""
        return cls(ref, open_layout(Path(ref.directory)))

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def features(self) -> int:
        return self.meta.features

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_val(self) -> int:
        return len(self.val)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.ref.preprocessing

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(self.name, self.features, self.meta.outputs, self.num_classes,
                           self.n_train, self.n_val)

    def order(self, epoch: int) -> npt.NDArray[np.int64]:
        """Positions 0..n_train-1 in the order epoch ``epoch`` visits them."""
        spec = self.ref.spec
        if spec.shuffle == "block":
            return block_order(self.n_train, self.ref.seed, epoch, spec.block_rows,
                               spec.window_blocks)
        return epoch_order(self.n_train, self.ref.seed, epoch)

    def gather(self, rows: Array, x_out: Array, y_out: Array) -> None:
        """Stored rows ``rows`` (n,), preprocessed, into ``x_out`` (n, features) and
        ``y_out`` (n,) or (n, outputs)."""
        n = len(rows)
        if self._raw_x.shape[0] < n:  # grow once to the largest batch seen
            self._raw_x = np.empty((n, self.features), dtype=self.stored.x.dtype)
            self._raw_y = np.empty((n, *self.y_tail), dtype=self.stored.y.dtype)
        raw_x, raw_y = self._raw_x[:n], self._raw_y[:n]
        np.take(self.stored.x, rows, axis=0, out=raw_x)
        np.take(self.stored.y, rows, axis=0, out=raw_y)
        self.preprocessing.transform_x(raw_x, x_out)
        if self.num_classes is None:
            self.preprocessing.transform_y(raw_y, y_out)
        else:
            np.copyto(y_out, raw_y)

    def take(self, rows: Array) -> tuple[Array, Array]:
        """Stored rows ``rows``, preprocessed, as new arrays."""
        x = np.empty((len(rows), self.features), dtype=self.dtype)
        y = np.empty((len(rows), *self.y_tail), dtype=self.y_dtype)
        self.gather(rows, x, y)
        return x, y

    # Whole parts as arrays: for small data (tests, the reference trainer, benchmarks).
    @property
    def x_train(self) -> Array:
        return self.take(self.train)[0]

    @property
    def y_train(self) -> Array:
        return self.take(self.train)[1]

    @property
    def x_val(self) -> Array:
        return self.take(self.val)[0]

    @property
    def y_val(self) -> Array:
        return self.take(self.val)[1]


def dataset_directory(spec: DataSpec, *, seed: int, datasets_dir: Path | None = None) -> Path:
    """Where the dataset ``spec`` names is stored (built-in ones are written if needed)."""
    datasets_dir = datasets_dir or default_datasets_dir()
    if spec.dataset in ("digits", "synthetic"):
        return materialize(spec, seed, datasets_dir)
    if not DATASET_ID.fullmatch(spec.dataset) or not (datasets_dir / spec.dataset).is_dir():
        raise DataMismatchError("data.dataset", f"no dataset {spec.dataset!r} has been uploaded")
    return datasets_dir / spec.dataset


def load_dataset(spec: DataSpec, *, seed: int, dtype: DTypeName = "float32",
                 datasets_dir: Path | None = None) -> Dataset:
    """Open the dataset ``spec`` names, split it, and fit its preprocessing on the training
    part (one streaming pass): what a driver does once per job."""
    directory = dataset_directory(spec, seed=seed, datasets_dir=datasets_dir)
    return prepare_dataset(directory, spec, seed=seed, dtype=dtype)


def dataset_from_arrays(directory: Path, x: Array, y: Array, *, spec: DataSpec | None = None,
                        seed: int = 0, dtype: DTypeName = "float32") -> Dataset:
    """Write ``x`` (n, features) and ``y`` (n,) integer labels or (n, outputs) targets as
    a layout at ``directory`` and open it as a job would (tests, benchmarks)."""
    labels = y.ndim == 1 and np.issubdtype(y.dtype, np.integer)
    write_layout(directory, x, y, {"name": directory.name, "feature_names": [
        f"x{i}" for i in range(x.shape[1])], "label": None, "content_hash": ""}, labels=labels)
    return prepare_dataset(directory, spec or DataSpec(), seed=seed, dtype=dtype)


def prepare_dataset(directory: Path, spec: DataSpec, *, seed: int,
                    dtype: DTypeName = "float32") -> Dataset:
    """The layout at ``directory``, split and with its preprocessing fitted for ``spec``."""
    plain = Dataset(DataRef(str(directory), spec, seed, dtype), open_layout(directory))
    preprocessing = fit_preprocessing(plain)
    return Dataset(DataRef(str(directory), spec, seed, dtype, preprocessing), plain.stored)


def fit_preprocessing(data: Dataset) -> Preprocessing:
    """The spec's standardization, fitted on the training part of ``data`` only."""
    spec, stored, train = data.ref.spec, data.stored, data.train
    x_mean = x_inv = y_mean = y_inv = None
    if spec.standardize:
        x_mean, x_inv = fit_standardization(lambda lo, hi: stored.x[train[lo:hi]],
                                            len(train), data.features)
    if spec.standardize_targets and data.num_classes is None:
        y_mean, y_inv = fit_standardization(lambda lo, hi: stored.y[train[lo:hi]],
                                            len(train), data.meta.outputs)
    return Preprocessing(x_mean, x_inv, y_mean, y_inv, data.meta.class_names)


def describe_dataset(spec: DataSpec, *, seed: int, datasets_dir: Path | None = None
                     ) -> DatasetInfo:
    """The shape of the data ``spec`` names, without generating or reading its rows."""
    if spec.dataset == "synthetic":
        syn = spec.synthetic or SyntheticSpec()
        n_val = round(spec.validation_fraction * syn.samples)
        classes = syn.outputs if syn.task == "classification" else None
        return DatasetInfo("synthetic", syn.features, syn.outputs, classes,
                           syn.samples - n_val, n_val)
    directory = dataset_directory(spec, seed=seed, datasets_dir=datasets_dir)
    return Dataset(DataRef(str(directory), spec, seed, "float32"), open_layout(directory)).info


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
    _check_controls_match_data(job, data)


def _check_controls_match_data(job: JobSpec, data: DatasetInfo) -> None:
    """The training controls that depend on the number of steps or on a validation split."""
    total = steps_per_epoch(data.n_train, job.batch_size) * job.epochs
    total = min(total, job.max_steps) if job.max_steps else total
    warmup = job.optimizer.warmup_steps
    if warmup >= total:
        raise DataMismatchError("optimizer.warmup_steps", f"is {warmup}, not shorter than the "
                                f"job's {total} steps on {data.name!r}")
    watchers = [name for name, on in (
        ("early_stopping", job.early_stopping is not None),
        ("optimizer.schedule", job.optimizer.schedule.kind == "plateau")) if on]
    if watchers and data.n_val == 0:
        raise DataMismatchError(watchers[0], f"needs validation samples; "
                                f"data.validation_fraction leaves none in {data.name!r}")


def split_train_validation(n: int, fraction: float, seed: int,
                           labels: Array | None = None) -> tuple[Array, Array]:
    """``(train_indices, validation_indices)``, sorted; stratified by ``labels`` if given.

    Each class (in sorted order) contributes ``round(fraction * its count)`` samples to
    validation, chosen by one generator seeded with ``seed``. O(n log n).
    """
    rng = np.random.default_rng(seed)
    if labels is None:
        groups = [np.arange(n)]
    else:
        by_class = np.argsort(labels, kind="stable")  # each class's rows stay ascending
        bounds = np.flatnonzero(np.diff(labels[by_class])) + 1
        groups = np.split(by_class, bounds) if n else []
    val_parts = [rng.permutation(group)[: round(fraction * group.size)] for group in groups]
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.arange(0)
    keep = np.ones(n, dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep), val


def epoch_order(n: int, seed: int, epoch: int) -> npt.NDArray[np.int64]:
    """The sample order of one epoch: a permutation of ``range(n)`` from (seed, epoch)."""
    return np.random.default_rng((seed, epoch)).permutation(n)


def block_order(n: int, seed: int, epoch: int, block_rows: int, window_blocks: int
                ) -> npt.NDArray[np.int64]:
    """A permutation of ``range(n)`` that reads near-sequentially: blocks of ``block_rows``
    consecutive rows in a shuffled order, then rows shuffled within each window of
    ``window_blocks`` consecutive blocks of that order. A pure function of (seed, epoch)."""
    rng = np.random.default_rng((seed, epoch, 0xB10C))
    blocks = rng.permutation(-(-n // block_rows))
    order = np.concatenate([np.arange(b * block_rows, min(n, (b + 1) * block_rows))
                            for b in blocks.tolist()]) if n else np.arange(0)
    window = block_rows * window_blocks
    for lo in range(0, n, window):
        order[lo:lo + window] = rng.permutation(order[lo:lo + window])
    return order


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
