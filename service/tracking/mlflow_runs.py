"""One MLflow run per job, logged from the service (never from the ranks).

The run is made once per job (found again by its ``syncsgd.job_id`` tag if the service
died before it stored the run's id), with the flattened spec as params and the job's
id, world size, backend and mode as tags. Metrics are the curve's points: ``loss``,
``val_loss``, ``val_accuracy``, ``lr``, ``grad_norm`` and ``steps_per_s``, sent in
batches behind the training. When the job ends its model (``.npz`` and ``.onnx``) and
its curve (CSV) are logged as artifacts and the run gets the job's end status.

Calls to the server time out after a few seconds and are not retried by the MLflow
client: :class:`service.tracking.follower.Follower` retries them, with backoff, and
every failure is counted on the job (``mlflow.failures``, ``mlflow.last_error``).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import FieldError
from common.records import StepRecord
from common.schemas import JobPublic, JobState, MlflowStatus
from service.config import Settings
from service.exports import curve_csv
from service.store import SqliteJobStore

# The MLflow client's own retries wait minutes; the follower's backoff replaces them.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")

#: Metrics per log_batch call (MLflow's limit is 1000).
METRICS_PER_BATCH = 900
#: Points read from the store per round.
POINTS_PER_ROUND = 5_000
END_STATUS = {JobState.succeeded: "FINISHED", JobState.failed: "FAILED",
              JobState.cancelled: "KILLED"}
JOB_TAG = "syncsgd.job_id"


def check_mlflow_available(settings: Settings) -> None:
    """Raise a :class:`FieldError` on ``tracking.mlflow`` when this service cannot log."""
    if settings.mlflow_tracking_uri is None:
        raise FieldError("tracking.mlflow", "this service has no MLflow tracking server "
                         "(set SYNCSGD_MLFLOW_TRACKING_URI)")
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        raise FieldError("tracking.mlflow", "this service lacks the MLflow client "
                         "(pip install 'syncsgd[mlflow]')") from exc


class MlflowSink:
    name = "mlflow"

    def __init__(self, store: SqliteJobStore, settings: Settings,
                 model_files: Callable[[JobPublic, Path], list[Path]]):
        from mlflow.tracking import MlflowClient

        self.store = store
        self.client = MlflowClient(settings.mlflow_tracking_uri)
        self._model_files = model_files  # writes the job's model files into a directory
        self._reopened: set[str] = set()  # runs whose logged steps this process checked

    def pending(self, limit: int) -> list[str]:
        return self.store.unfinished_mlflow_runs(limit)

    def sync(self, job_id: str) -> None:
        job = self.store.get(job_id)
        status = job.mlflow or MlflowStatus()
        try:
            self._sync(job, status)
        except Exception as exc:
            status.failures += 1
            status.last_error = f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            self.store.set_mlflow(job_id, status)

    def close(self) -> None:
        pass

    def _sync(self, job: JobPublic, status: MlflowStatus) -> None:
        if status.run_id is None:
            status.run_id = self._find_or_create_run(job)
            self._reopened.add(job.id)
        if job.id not in self._reopened:  # a new process: what reached the run before?
            history = self.client.get_metric_history(status.run_id, "loss")
            status.logged_step = max([status.logged_step, *(m.step for m in history)])
            self._reopened.add(job.id)
        while points := self.store.curve(job.id, since=status.logged_step,
                                         limit=POINTS_PER_ROUND):
            self._log_points(status.run_id, points)
            status.logged_step = points[-1].step
        if job.state.terminal:
            self._finish(job, status.run_id)
            status.finished = True
            self._reopened.discard(job.id)

    def _find_or_create_run(self, job: JobPublic) -> str:
        tracking = job.spec.tracking.mlflow
        assert tracking is not None
        experiment = self.client.get_experiment_by_name(tracking.experiment)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(tracking.experiment))
        found = self.client.search_runs([experiment_id], f"tags.`{JOB_TAG}` = '{job.id}'",
                                        max_results=1)
        if found:
            return str(found[0].info.run_id)
        spec = job.spec
        run = self.client.create_run(experiment_id, run_name=tracking.run_name or job.id, tags={
            JOB_TAG: job.id, "syncsgd.world_size": str(spec.workers if not spec.elastic
                                                       else f"{spec.min_workers}-"
                                                            f"{spec.max_workers}"),
            "syncsgd.backend": spec.allreduce, "syncsgd.deterministic": str(spec.deterministic)})
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in flatten(spec.model_dump(mode="json")).items()]
        for i in range(0, len(params), 100):  # MLflow takes 100 params a call
            self.client.log_batch(run.info.run_id, params=params[i:i + 100])
        return str(run.info.run_id)

    def _log_points(self, run_id: str, points: list[StepRecord]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, p.step) for p in points
                   for key, value in point_metrics(p).items()]
        for i in range(0, len(metrics), METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics[i:i + METRICS_PER_BATCH])

    def _finish(self, job: JobPublic, run_id: str) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            directory = Path(scratch)
            (directory / f"{job.id}-curve.csv").write_text(curve_csv(self.store.curve(job.id)))
            self.client.log_artifact(run_id, str(directory / f"{job.id}-curve.csv"))
            for path in self._model_files(job, directory):
                self.client.log_artifact(run_id, str(path), "model")
        self.client.set_terminated(run_id, END_STATUS.get(job.state, "FAILED"))


def point_metrics(point: StepRecord) -> dict[str, float]:
    step_s = point.compute + point.allreduce + point.wait + point.update
    values = {"loss": point.loss, "val_loss": point.val_loss,
              "val_accuracy": point.val_accuracy, "lr": point.lr, "grad_norm": point.grad_norm,
              "steps_per_s": 1.0 / step_s if step_s > 0 else None}
    return {k: float(v) for k, v in values.items() if v is not None}


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": [1, 2]}}`` -> ``{"a.b.0": "1", "a.b.1": "2"}`` (MLflow params)."""
    if isinstance(value, dict):
        items: list[tuple[str, Any]] = list(value.items())
    elif isinstance(value, list):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        return {prefix: str(value)[:6000]}
    flat: dict[str, str] = {}
    for key, item in items:
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else key))
    return flat
