"""Whether a job can run here: the service's limits, the cluster's CPUs, its data (the
user's own datasets only), the space its generated data takes. Every refusal is a
:class:`common.errors.FieldError` naming the field to change and the limit."""

from __future__ import annotations

from common.data import check_spec_matches_data, describe_dataset
from common.schemas import JobSpec, SyntheticSpec
from service.config import Settings
from service.datasets import DatasetCatalog
from service.errors import SubmissionError
from service.tracking.mlflow_runs import check_mlflow_available


def check(spec: JobSpec, s: Settings, catalog: DatasetCatalog, cluster_cpus: float | None,
          *, runs_epochs: bool = True, owner: str | None = None) -> None:
    """Raise a :class:`common.errors.FieldError` naming what keeps ``spec`` from running
    on a cluster of ``cluster_cpus`` (None: unknown, Ray is lost; the job is queued and
    checked when it starts). ``runs_epochs=False``: it runs a bounded number of steps
    (``/verify``), not ``spec.epochs``, so the epochs x samples limit does not apply.
    ``owner``: a user who may train on its own datasets only (None: on any)."""
    most = "workers.max" if spec.elastic else "workers"
    if spec.max_workers > s.max_workers_per_job:
        raise SubmissionError(most, f"{spec.max_workers} is over the limit of "
                              f"{s.max_workers_per_job} (SYNCSGD_MAX_WORKERS_PER_JOB)")
    need = spec.max_workers * spec.cpus_per_worker
    if cluster_cpus is not None and need > cluster_cpus:
        raise SubmissionError(most, f"{spec.max_workers} x {spec.cpus_per_worker} CPU "
                              f"asked, the cluster has {cluster_cpus:g} CPUs")
    if spec.model.num_parameters > s.max_parameters:
        raise SubmissionError("model", f"{spec.model.num_parameters} parameters is over the "
                              f"limit of {s.max_parameters} (SYNCSGD_MAX_PARAMETERS)")
    memory = spec.worker_memory_bytes()
    if memory > s.max_worker_memory_bytes:
        raise SubmissionError("batch_size", f"each rank's arrays (its batch of the "
                              f"activations, parameters and optimizer state) take "
                              f"{memory} bytes, over the limit of "
                              f"{s.max_worker_memory_bytes} "
                              "(SYNCSGD_MAX_WORKER_MEMORY_BYTES); use a smaller "
                              "batch_size or more workers")
    if spec.tracking.mlflow is not None:
        check_mlflow_available(s)
    catalog.check_usable(spec.data.dataset, owner)
    info = describe_dataset(spec.data, seed=spec.seed, datasets_dir=s.datasets_path)
    check_spec_matches_data(spec, info)
    _check_generated_size(spec, s, catalog)
    if runs_epochs and spec.epochs * info.n_train > s.max_epoch_samples:
        raise SubmissionError("epochs", f"{spec.epochs} x {info.n_train} samples is over the "
                              f"limit of {s.max_epoch_samples} (SYNCSGD_MAX_EPOCH_SAMPLES)")


def _check_generated_size(spec: JobSpec, settings: Settings, catalog: DatasetCatalog) -> None:
    """A synthetic dataset is written to disk before its job runs: within the quota."""
    if spec.data.dataset != "synthetic":
        return
    syn = spec.data.synthetic or SyntheticSpec()
    size = syn.samples * (syn.features + syn.outputs) * 8
    used, quota = catalog.used_bytes(), settings.datasets_quota_bytes
    if used + size > quota:
        raise SubmissionError("data.synthetic", f"{syn.samples} samples x "
                              f"{syn.features + syn.outputs} values take up to {size} "
                              f"bytes; {quota - used} are left of "
                              "SYNCSGD_DATASETS_QUOTA_BYTES")
