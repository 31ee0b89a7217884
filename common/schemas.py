"""The job spec: the user-facing contract of syncsgd (JSON body of ``POST /jobs``).

Every field has a sensible default and a bound; unknown fields are rejected, so
a typo (``"epoch": 5``) is an error that names the field instead of a silent
default. The models validate only what can be known from the spec alone; what
depends on the data (``model.input_dim`` against the data's width, output units
against the number of classes) is checked when the data is loaded
(:func:`common.data.check_spec_matches_data`).
"""

from __future__ import annotations

import itertools
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from common.records import StepRecord

ActivationName = Literal["identity", "sigmoid", "tanh", "relu", "softmax"]
LossName = Literal["mse", "cross_entropy"]
AllReduceName = Literal["mpi", "ray", "local"]
DTypeName = Literal["float32", "float64"]
Placement = Literal["pack", "spread"]
Priority = Literal["low", "normal", "high"]
#: A priority's rank in the queue: a queued job may preempt running jobs of lower rank.
PRIORITY_RANK: dict[str, int] = {"low": 0, "normal": 1, "high": 2}

# Bounds that keep one job from exhausting a machine by accident. The service
# may impose tighter limits from its settings.
MAX_UNITS = 65_536
MAX_LAYERS = 64
MAX_INPUT_DIM = 1_000_000
MAX_DATASET_VALUES = 200_000_000  # samples x features: 800 MB as float32
#: Names are labels that reach logs: no newlines or other control characters.
NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class StrictModel(BaseModel):
    """A request body: no unknown fields, and no value of another JSON type taken for the
    declared one (``0`` is not ``false``, ``"1"`` not ``1``), so that what the OpenAPI
    schema allows is what is accepted. As in JSON Schema, ``2.0`` is an integer."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _integral_floats_are_integers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {key: int(value) if (isinstance(value, float) and value.is_integer()
                                    and key in cls.model_fields
                                    and _takes_int(cls.model_fields[key].annotation)) else value
                for key, value in data.items()}


def _takes_int(annotation: Any) -> bool:
    """``int``, or a union or ``Annotated`` with an ``int`` in it."""
    if annotation is int:
        return True
    return any(_takes_int(arg) for arg in get_args(annotation) if arg is not annotation)


class _Strict(StrictModel):
    model_config = ConfigDict(frozen=True)


class LayerSpec(_Strict):
    """One dense layer: ``units`` outputs, then ``activation``."""

    units: int = Field(ge=1, le=MAX_UNITS)
    activation: ActivationName = "relu"
    dropout: float = Field(default=0.0, ge=0, lt=1, description="hidden layers: the fraction "
                           "of this layer's outputs zeroed while training (inverted dropout)")


def _default_layers() -> list[LayerSpec]:
    return [LayerSpec(units=128, activation="relu"), LayerSpec(units=10, activation="softmax")]


class ModelSpec(_Strict):
    """A multi-layer perceptron: ``input_dim`` features in, ``layers`` in order."""

    input_dim: int = Field(default=64, ge=1, le=MAX_INPUT_DIM)
    layers: list[LayerSpec] = Field(default_factory=_default_layers, min_length=1,
                                    max_length=MAX_LAYERS)

    @model_validator(mode="after")
    def _softmax_only_last(self) -> Self:
        for index, layer in enumerate(self.layers[:-1]):
            if layer.activation == "softmax":
                raise ValueError(
                    f"layers[{index}].activation: softmax is allowed only on the last layer "
                    f"(it is fused with cross_entropy); use relu, tanh, sigmoid or identity")
        if self.layers[-1].dropout:
            raise ValueError(f"layers[{len(self.layers) - 1}].dropout: dropout applies to "
                             "hidden layers only, not to the outputs")
        return self

    @property
    def layer_sizes(self) -> list[int]:
        """``[input_dim, units_1, ..., units_L]``."""
        return [self.input_dim, *(layer.units for layer in self.layers)]

    @property
    def num_parameters(self) -> int:
        """Weights plus biases of every layer."""
        sizes = self.layer_sizes
        return sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(sizes))


class ConstantSchedule(_Strict):
    """The rate stays ``optimizer.lr``."""

    kind: Literal["constant"] = "constant"


class StepSchedule(_Strict):
    """``lr * gamma ** (epoch // every_epochs)``."""

    kind: Literal["step"]
    every_epochs: int = Field(default=1, ge=1, le=10_000)
    gamma: float = Field(default=0.1, gt=0, le=1)


class ExponentialSchedule(_Strict):
    """``lr * gamma ** epoch``."""

    kind: Literal["exponential"]
    gamma: float = Field(default=0.95, gt=0, le=1)


class CosineSchedule(_Strict):
    """From ``lr`` down to ``min_lr`` along half a cosine, over the job's steps after warmup."""

    kind: Literal["cosine"]
    min_lr: float = Field(default=0.0, ge=0, le=10)


class PlateauSchedule(_Strict):
    """Times ``factor`` (not below ``min_lr``) after ``patience`` epochs in a row whose
    validation loss is not below the best so far."""

    kind: Literal["plateau"]
    factor: float = Field(default=0.1, gt=0, lt=1)
    patience: int = Field(default=5, ge=1, le=10_000)
    min_lr: float = Field(default=0.0, ge=0, le=10)


ScheduleSpec = Annotated[ConstantSchedule | StepSchedule | ExponentialSchedule
                         | CosineSchedule | PlateauSchedule, Field(discriminator="kind")]


class OptimizerSpec(_Strict):
    """SGD (momentum, Nesterov, L2 weight decay), Adam, or AdamW (decoupled weight decay),
    PyTorch's formulas; a learning-rate schedule with warmup; clipping by the global norm."""

    kind: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(default=0.1, gt=0, le=10)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0, le=1)
    schedule: ScheduleSpec = Field(default_factory=ConstantSchedule)
    warmup_steps: int = Field(default=0, ge=0, le=100_000_000, description="the first steps' "
                              "rate rises linearly from 0: step k of them runs at k/warmup_steps")
    clip_norm: float | None = Field(default=None, gt=0, le=1e6, description="scale the averaged "
                                    "gradient down to this global L2 norm when it is larger")

    @model_validator(mode="after")
    def _check_kind_fields(self) -> Self:
        if self.nesterov and (self.kind != "sgd" or self.momentum == 0):
            raise ValueError("nesterov: needs kind 'sgd' and momentum > 0")
        if self.kind != "sgd" and self.momentum != 0:
            raise ValueError(f"momentum: applies to kind 'sgd' only ({self.kind} uses beta1)")
        min_lr = getattr(self.schedule, "min_lr", 0.0)
        if min_lr > self.lr:
            raise ValueError(f"schedule.min_lr: {min_lr} is above optimizer.lr ({self.lr})")
        return self


class EarlyStoppingSpec(_Strict):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs in a row; with ``restore_best``, the job ends with the best epoch's weights."""

    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: int = Field(default=5, ge=1, le=10_000)
    min_delta: float = Field(default=0.0, ge=0, le=1e6)
    restore_best: bool = True


class SyntheticSpec(_Strict):
    """A seeded teacher network that labels Gaussian inputs (for benchmarks and tests)."""

    samples: int = Field(default=10_000, ge=2, le=10_000_000)
    features: int = Field(default=784, ge=1, le=MAX_INPUT_DIM)
    outputs: int = Field(default=10, ge=1, le=MAX_UNITS)
    task: Literal["classification", "regression"] = "classification"
    noise: float = Field(default=0.0, ge=0, le=10)

    @model_validator(mode="after")
    def _bounded_size(self) -> Self:
        for name, width in (("features", self.features), ("outputs", self.outputs)):
            if self.samples * width > MAX_DATASET_VALUES:
                raise ValueError(f"samples x {name}: {self.samples} x {width} is over "
                                 f"the limit of {MAX_DATASET_VALUES} values")
        return self


class DataSpec(_Strict):
    """Which dataset, the validation split, the sample order and the preprocessing."""

    dataset: str = Field(default="digits", pattern=r"^(digits|synthetic|ds_[0-9a-f]{16})$",
                         description="'digits', 'synthetic', or a dataset id (ds_...)")
    validation_fraction: float = Field(default=0.2, ge=0, le=0.9)
    synthetic: SyntheticSpec | None = None
    shuffle: Literal["full", "block"] = Field(
        default="full", description="full: a permutation of all rows each epoch; block: "
        "shuffled blocks of rows, then rows within windows (near-sequential reads)")
    block_rows: int = Field(default=4096, ge=1, le=1 << 24,
                            description="block shuffle: consecutive rows per block")
    window_blocks: int = Field(default=16, ge=1, le=1 << 16,
                               description="block shuffle: blocks whose rows mix")
    standardize: bool = Field(default=True, description="features: subtract the mean, divide "
                              "by the standard deviation (of the training split)")
    standardize_targets: bool = Field(default=True, description="regression targets too; "
                                      "predictions come back in the targets' units")

    @model_validator(mode="after")
    def _synthetic_only_for_synthetic(self) -> Self:
        if self.synthetic is not None and self.dataset != "synthetic":
            raise ValueError("synthetic: settings apply only to dataset 'synthetic'")
        return self


def _count_or_range(value: Any) -> str:
    """Which form of ``workers`` a value is, so an error names the one it was meant as."""
    return "range" if isinstance(value, dict | WorkerRange) else "count"


class MlflowTracking(_Strict):
    """Where a job's MLflow run goes; the tracking server is the service's setting
    (``SYNCSGD_MLFLOW_TRACKING_URI``), never a URL from the spec."""

    experiment: str = Field(default="syncsgd", min_length=1, max_length=100,
                            pattern=NAME_PATTERN, description="created if it does not exist")
    run_name: str | None = Field(default=None, min_length=1, max_length=100,
                                 pattern=NAME_PATTERN, description="default: the job's id")


class TrackingSpec(_Strict):
    mlflow: MlflowTracking | None = Field(
        default=None, description="log params, metrics and the model to one MLflow run")


class WorkerRange(_Strict):
    """An elastic job's world size: it starts as soon as ``min`` ranks fit, grows towards
    ``max`` when CPUs come free, and shrinks (never below ``min``) when ranks are lost.
    Its global batch stays the same whatever the size, so the training does too."""

    min: int = Field(ge=1, le=256)
    max: int = Field(ge=1, le=256)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is over max ({self.max})")
        return self


class JobSpec(_Strict):
    """Everything that defines one training run. Same spec + same seed = same run."""

    name: str = Field(default="job", min_length=1, max_length=100, pattern=NAME_PATTERN,
                      description="a label; no control characters (it goes into logs)")
    model: ModelSpec = Field(default_factory=ModelSpec)
    loss: LossName = "cross_entropy"
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    batch_size: int = Field(default=64, ge=1, le=65_536,
                            description="GLOBAL batch; each step splits it across the workers")
    epochs: int = Field(default=10, ge=1, le=10_000)
    max_steps: int = Field(default=0, ge=0, le=100_000_000,
                           description="stop after this many steps; 0 = all epochs")
    workers: Annotated[Annotated[int, Field(ge=1, le=256), Tag("count")]
                       | Annotated[WorkerRange, Tag("range")],
                       Discriminator(_count_or_range)] = Field(
        default=1, description="ranks: a number, or {min, max} for an elastic "
        "job that grows and shrinks between chunks (the global batch stays the same)")
    allreduce: AllReduceName = "mpi"
    cpus_per_worker: int = Field(default=1, ge=1, le=64,
                                 description="CPUs (and BLAS threads) reserved per worker")
    placement: Placement = Field(default="pack",
                                 description="pack ranks on few nodes, or spread one per node")
    dtype: DTypeName = "float32"
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    steps_per_chunk: int = Field(default=0, ge=0, le=100_000,
                                 description="steps each run() call covers; 0 = about a second")
    fingerprint_every: int = Field(default=50, ge=1, le=1_000_000,
                                   description="compare replica parameter hashes every K steps")
    checkpoint_every: int = Field(default=200, ge=1, le=1_000_000,
                                  description="checkpoint every N steps (and at the end)")
    max_restarts: int = Field(default=3, ge=0, le=100,
                              description="restarts from the last checkpoint when a worker dies")
    deterministic: bool = Field(default=False,
                                description="bit-identical weights for any workers <= micro_shards")
    micro_shards: int = Field(default=4, ge=1, le=4096,
                              description="deterministic mode: fixed pieces of each global batch")
    sharded_update: bool = Field(default=False, description="each rank updates a slice of the "
                                 "parameters and holds that slice of the optimizer state "
                                 "(ZeRO stage 1): reduce-scatter, update, all-gather")
    accumulation_steps: int = Field(default=1, ge=1, le=4096, description="each rank computes "
                                    "its part of a global batch in this many micro-batches, "
                                    "summed before the one all-reduce (less memory per rank)")
    early_stopping: EarlyStoppingSpec | None = Field(
        default=None, description="stop when validation stops improving (needs a split)")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    priority: Priority = Field(default="normal", description="a queued job starts before "
                               "those of lower priority, and takes CPUs from running ones at "
                               "their next chunk (they resume exactly); high: for users "
                               "allowed it")

    @property
    def elastic(self) -> bool:
        return isinstance(self.workers, WorkerRange)

    @property
    def min_workers(self) -> int:
        return self.workers.min if isinstance(self.workers, WorkerRange) else self.workers

    @property
    def max_workers(self) -> int:
        return self.workers.max if isinstance(self.workers, WorkerRange) else self.workers

    def with_workers(self, world_size: int) -> JobSpec:
        """This spec at one world size (what a group of an elastic job runs)."""
        return self.model_copy(update={"workers": world_size})

    def worker_memory_bytes(self) -> int:
        """What one rank's arrays take, at most: parameters, gradients and optimizer state,
        and the per-batch buffers (each layer's pre-activation, output, error and scratch,
        the gathered input rows twice) for the most rows a rank computes at once."""
        itemsize = 4 if self.dtype == "float32" else 8
        rows = self.micro_batch_rows()
        units = sum(layer.units for layer in self.model.layers)
        # dropout: the kept mask, the dropped output, and float64 uniforms (the bool aside)
        dropped = sum(layer.units for layer in self.model.layers if layer.dropout)
        batch = rows * (4 * units + 2 * self.model.input_dim + 2 * dropped)
        best = self.model.num_parameters if self.early_stopping else 0
        return (batch + (6 if self.accumulation_steps > 1 else 5) * self.model.num_parameters
                + best) * itemsize + rows * dropped * 9

    def micro_batch_rows(self) -> int:
        """The most rows a rank computes at once: its part of a global batch, cut into
        ``accumulation_steps`` micro-batches (of whole micro-shards in deterministic mode)."""
        if self.deterministic:
            owned = _ceil_div(self.micro_shards, self.min_workers)
            return (_ceil_div(owned, self.accumulation_steps)
                    * _ceil_div(self.batch_size, self.micro_shards))
        return _ceil_div(_ceil_div(self.batch_size, self.min_workers), self.accumulation_steps)

    @model_validator(mode="after")
    def _check_combinations(self) -> Self:
        last = self.model.layers[-1].activation
        if self.loss == "cross_entropy" and last != "softmax":
            raise ValueError(
                f"loss: cross_entropy needs a softmax last layer "
                f"(model.layers[-1].activation is {last!r})")
        if self.loss == "mse" and last == "softmax":
            raise ValueError("loss: a softmax last layer needs cross_entropy, not mse")
        if self.deterministic and self.max_workers > self.micro_shards:
            raise ValueError(f"micro_shards: deterministic mode needs at least one per worker "
                             f"({self.micro_shards} < {self.max_workers} workers)")
        if self.accumulation_steps > self.batch_size:
            raise ValueError(f"accumulation_steps: {self.accumulation_steps} micro-batches of a "
                             f"global batch of {self.batch_size} (batch_size); at most that many")
        if self.optimizer.warmup_steps and self.max_steps and (
                self.optimizer.warmup_steps >= self.max_steps):
            raise ValueError(f"optimizer.warmup_steps: {self.optimizer.warmup_steps} is not "
                             f"shorter than the job (max_steps {self.max_steps})")
        self._check_validation_users()
        if self.allreduce == "local" and self.max_workers != 1:
            raise ValueError(f"allreduce: 'local' runs in one process; workers is "
                             f"{self.max_workers}, use 'mpi' or 'ray' for more")
        return self

    def _check_validation_users(self) -> None:
        needs = [name for name, on in (
            ("early_stopping", self.early_stopping is not None),
            ("optimizer.schedule", self.optimizer.schedule.kind == "plateau")) if on]
        if needs and self.data.validation_fraction == 0:
            raise ValueError(f"{needs[0]}: needs a validation split "
                             "(data.validation_fraction is 0)")
        if (self.early_stopping is not None and self.early_stopping.monitor == "val_accuracy"
                and self.loss != "cross_entropy"):
            raise ValueError("early_stopping.monitor: val_accuracy needs a classifier "
                             "(loss cross_entropy); use val_loss")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ---- what the service reports ------------------------------------------------------------


class JobState(StrEnum):
    """Where a job is in its life: ``queued -> running -> succeeded | failed | cancelled``."""

    queued = "queued"  # accepted; waits for CPUs (or a free slot) in submission order
    running = "running"  # its workers exist and train
    succeeded = "succeeded"  # every step ran; the weights are stored
    failed = "failed"  # a rank failed, the data did not fit, or the service lost it
    cancelled = "cancelled"  # stopped on request

    @property
    def terminal(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.cancelled)


class Timing(BaseModel):
    """Mean seconds per step over the latest chunk, on rank 0 (see ``StepRecord``)."""

    compute: float
    allreduce: float
    wait: float
    update: float


class RankPlacement(BaseModel):
    rank: int
    node: str
    pid: int


class RestartInfo(BaseModel):
    """One recovery of a job: its workers were replaced and restored from a checkpoint."""

    number: int
    at: datetime
    cause: str  # what died or hung, where
    from_step: int  # the step of the state it continued from (0: the start)
    lost_steps: int = 0  # the steps of the chunk in flight, computed again


class ResizeInfo(BaseModel):
    """An elastic job's group rebuilt at another world size, from the state at ``step``."""

    at: datetime
    step: int
    from_workers: int
    to_workers: int
    cause: str  # "CPUs came free", or the loss and what could be placed
    seconds: float  # from the old group's last chunk (or its failure) to the new group up


class StragglerInfo(BaseModel):
    """A rank whose compute a step was ``factor`` times the ranks' median, chunk after
    chunk, up to ``step``."""

    at: datetime
    step: int
    rank: int
    node: str
    compute_s: float  # its median compute a step, over the last chunk
    median_s: float  # the ranks' (lower) median of the same
    factor: float


class PreemptionInfo(BaseModel):
    """The job was stopped at its chunk boundary ``step`` for job ``by`` of a higher
    priority, and requeued to resume from that step's state."""

    at: datetime
    step: int
    by: str
    by_priority: Priority


class MlflowStatus(BaseModel):
    """Where a job's MLflow run stands: the metrics go out behind the training, retried."""

    run_id: str | None = None  # set once the run exists
    logged_step: int = 0  # the curve's points up to here are in the run
    failures: int = 0  # calls to the tracking server that failed (each is retried)
    last_error: str | None = None  # the newest failure's message
    finished: bool = False  # the artifacts are logged and the run has its end status


class JobPublic(BaseModel):
    """A job as the API returns it."""

    id: str
    name: str
    owner: str | None = None  # the user who submitted it (None: before accounts)
    state: JobState
    spec: JobSpec
    step: int = 0
    total_steps: int | None = None
    curve_stride: int = 1  # the curve keeps every curve_stride-th step (and epochs' last)
    epoch: int = 0
    loss: float | None = None  # latest global training loss
    val_loss: float | None = None  # latest epoch's validation loss
    val_accuracy: float | None = None
    timing: Timing | None = None
    ranks: list[RankPlacement] = Field(default_factory=list)
    world_size: int | None = None  # the ranks it runs on now (an elastic job's change)
    resize_log: list[ResizeInfo] = Field(default_factory=list)
    #: Why a job that ran is back in the queue (an elastic job's min could not be placed,
    #: or a job of higher priority took its CPUs); until a group of it is up again.
    waiting: str | None = None
    error: str | None = None
    restarts: int = 0
    restart_log: list[RestartInfo] = Field(default_factory=list)
    stragglers: list[StragglerInfo] = Field(default_factory=list)
    preemptions: list[PreemptionInfo] = Field(default_factory=list)
    mlflow: MlflowStatus | None = None  # when the spec asks for tracking
    stopped_early_at_epoch: int | None = None  # early stopping ended it after this epoch
    best_epoch: int | None = None  # early stopping's best epoch (its weights are the model's)
    #: Seconds from submission to the first step, by phase: queue, data, placement, actors,
    #: join, data and broadcast (on the ranks), first step. Set after the first step.
    startup: dict[str, float] | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobList(BaseModel):
    """A page of jobs, newest first."""

    items: list[JobPublic]
    total: int
    limit: int
    offset: int


class Curve(BaseModel):
    job_id: str
    points: list[StepRecord]  # the stored step records, one per step


class Prediction(BaseModel):
    outputs: list[list[float]]  # class probabilities, or targets in their own units
    classes: list[str | int] | None  # each row's class, by the name the data gave it


class Health(BaseModel):
    status: str  # "ok", or "degraded" with the reason in ``problem`` (503)
    problem: str | None = None
    cluster_cpus: float  # in the Ray cluster
    free_cpus: float  # not reserved by any placement group or actor, as Ray counts them
    running: list[str] | None = None  # job ids (with the token, where reads need it)
    jobs: dict[str, int] | None = None  # count by state (likewise)
    event_streams: int | None = None  # open GET /jobs/{id}/events streams (likewise)


class DatasetState(StrEnum):
    """``ingesting -> ready | failed``."""

    ingesting = "ingesting"  # being read and written as a training layout
    ready = "ready"  # jobs can name it
    failed = "failed"  # refused while ingesting; ``error`` says why (nothing is stored)


class DatasetPublic(BaseModel):
    """A dataset; a job spec names it by ``id`` in ``data.dataset``."""

    id: str
    name: str
    owner: str | None = None  # the user who added it (None: before accounts)
    state: DatasetState
    rows_done: int = 0  # rows ingested so far
    error: str | None = None
    task: Literal["classification", "regression"]
    format: Literal["csv", "parquet", "npz", "npy"]
    source: str  # "upload", or the registered path under the datasets root
    rows: int | None = None  # once ready
    features: int
    outputs: int | None = None  # classes, or regression targets, once ready
    classes: int | None = None  # None: regression
    class_names: list[str | int] | None = None  # class i's name, as the data had it
    feature_names: list[str]
    label: str | None  # the label column, where the file had columns
    bytes: int  # on disk
    content_hash: str | None = None  # sha256 of the source bytes
    created_at: datetime


class DatasetRegistration(StrictModel):
    """A file, or a directory of Parquet files, under the service's datasets root."""

    name: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN)
    path: str = Field(min_length=1, max_length=4096,
                      description="relative to SYNCSGD_DATASETS_ROOT; nothing outside it")
    format: Literal["csv", "parquet", "npy"]
    label: str | None = Field(default=None, max_length=1000,
                              description="the label column's name; default: the last column")
    task: Literal["classification", "regression"] = "classification"
    dtype: DTypeName = Field(default="float32", description="of the stored features")


class VerifyRequest(StrictModel):
    """Run ``spec`` for ``steps`` steps with 1 worker and with ``workers`` workers."""

    spec: JobSpec
    workers: int = Field(default=2, ge=2, le=256)
    steps: int = Field(default=20, ge=1, le=1000)


class VerifyReport(BaseModel):
    identical: bool  # bit for bit
    steps: int
    workers: int
    sha256_one: str  # the final weights with 1 worker
    sha256_many: str  # ... with ``workers``
    max_abs_difference: float
    max_rel_difference: float
    curves_identical: bool
