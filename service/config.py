"""The service's settings: environment variables with the prefix ``SYNCSGD_``.

For example ``SYNCSGD_DATA_DIR=/var/lib/syncsgd SYNCSGD_TOKEN=... syncsgd serve``.
The defaults are the embedded default: a local Ray started by the service,
SQLite under ``./syncsgd-data``, no auth, loopback only.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SYNCSGD_", extra="forbid")

    # where things live
    data_dir: Path = Field(default=Path("syncsgd-data"),
                           description="SQLite database, models and datasets live here")
    datasets_dir: Path | None = Field(
        default=None, description="ingested datasets; every node's workers read them here "
                                  "(shared storage on a cluster). Default: DATA_DIR/datasets")
    datasets_root: Path | None = Field(
        default=None, description="POST /datasets/register takes paths under this directory "
                                  "(shared storage on a cluster); unset: registration is off")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    # Ray
    ray_address: str | None = Field(default=None,
                                    description="a cluster's address; unset = embedded local Ray")
    ray_auth_mode: Literal["disabled", "token"] | None = Field(
        default=None, description="RAY_AUTH_MODE; default disabled locally, token on a cluster")
    ray_num_cpus: int | None = Field(default=None, ge=1, le=4096,
                                     description="CPUs of the embedded Ray (default: all)")
    ray_dashboard: bool = Field(default=False, description="start the embedded Ray's dashboard")
    ray_dashboard_port: int = Field(default=8265, ge=1, le=65535)
    ray_temp_dir: Path | None = Field(default=None,
                                      description="the embedded Ray's temp dir (short path)")
    warm_workers: int = Field(default=2, ge=0, le=256, description="idle rank processes kept "
                              "started on each node jobs ran on, so a job's ranks need not "
                              "start a process (0: start them per job)")
    worker_env: dict[str, str] = Field(
        default_factory=dict,
        description="environment of the worker actors, e.g. {\"UCX_TLS\": \"tcp,self\"} for MPI "
                    "across nodes, {\"GLOO_SOCKET_IFNAME\": \"eth0\"} for gloo")

    # auth
    token: SecretStr | None = Field(default=None,
                                    description="if set, mutating requests need 'Bearer <token>'")
    auth_reads: bool = Field(default=False, description="require the token for reads too")

    # limits
    max_workers_per_job: int = Field(default=16, ge=1, le=1024)
    max_worker_memory_bytes: int = Field(
        default=8 * 2**30, ge=2**20,
        description="the arrays of one rank (parameters, optimizer state, batch buffers)")
    max_start_attempts: int = Field(
        default=3, ge=1, le=100, description="a job whose start the service did not survive "
                                             "this many times is failed, not started again")
    max_parameters: int = Field(default=50_000_000, ge=1)
    max_epoch_samples: int = Field(default=2_000_000_000, ge=1,
                                   description="epochs x training samples, per job")
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    max_concurrent_jobs: int = Field(default=4, ge=1, le=1024)
    max_curve_page: int = Field(default=100_000, ge=1)
    max_points_per_job: int = Field(
        default=100_000, ge=100, le=10_000_000,
        description="a job with more steps keeps every k-th step's point (and every "
                    "epoch's last and the final one), each exact")
    max_verify_steps: int = Field(default=1000, ge=1, le=1000,
                                  description="steps of each of POST /verify's two runs")
    max_event_streams: int = Field(default=1_000, ge=1, le=100_000,
                                   description="open GET /jobs/{id}/events streams at once")
    event_poll_s: float = Field(default=0.25, gt=0, le=10,
                                description="how often a followed job's store is read")
    datasets_quota_bytes: int = Field(default=50 * 2**30, ge=1024,
                                      description="disk for datasets: uploads, ingested "
                                                  "layouts, generated built-ins")
    keep_checkpoints: int = Field(default=3, ge=1, le=100)

    # timing
    placement_timeout_s: float = Field(default=60.0, gt=0)
    join_timeout_s: float = Field(default=60.0, gt=0)
    chunk_timeout_s: float = Field(default=60.0, gt=0)
    ray_connect_timeout_s: float = Field(default=600.0, ge=0, description="how long a "
                                         "starting service tries to join a cluster whose "
                                         "head does not answer")
    supervise_interval_s: float = Field(default=1.0, gt=0, le=60,
                                        description="how often the service checks its Ray")
    elastic_wait_s: float = Field(default=5.0, gt=0, le=600,
                                  description="an elastic job waits this long to replace lost "
                                              "ranks whole, then goes on with fewer")
    straggler_factor: float = Field(default=2.0, gt=1, le=100,
                                    description="a rank whose compute a step is this many "
                                                "times the ranks' median is a straggler...")
    straggler_chunks: int = Field(default=3, ge=1, le=1000,
                                  description="... when it is, chunk after chunk, this many")
    mlflow_tracking_uri: str | None = Field(
        default=None, max_length=2048, description="the MLflow tracking server jobs with "
        "tracking.mlflow log to (http://host:5000); needs the mlflow extra")
    tracking_interval_s: float = Field(default=1.0, gt=0, le=600,
                                       description="how often TensorBoard files and MLflow "
                                                   "runs catch up with the curves")
    timeline_keep_steps: int = Field(default=10_000, ge=1, le=10_000_000,
                                     description="each job keeps its ranks' timings of this "
                                                 "many latest steps")
    timeline_max_steps: int = Field(default=2_000, ge=1, le=100_000,
                                    description="the most steps one GET /jobs/{id}/timeline "
                                                "returns")

    log_format: Literal["text", "json"] = Field(default="text",
                                                description="json: one JSON object per line")
    metrics_user_labels: bool = Field(
        default=False, description="/metrics also has gauges labelled by user name (the "
        "CPUs each user's running jobs hold, its queued jobs); off: no user data in it")

    # operators' drills and tests only
    fault_injection: bool = Field(default=False,
                                  description="enable POST /jobs/{id}/faults (kills workers)")

    @model_validator(mode="after")
    def _auth_where_it_listens(self) -> Self:
        if self.token is not None and not self.token.get_secret_value().strip():
            raise ValueError("token: SYNCSGD_TOKEN is set but empty, which would let every "
                             "request through; set a secret, or unset it")
        if self.token is None and not _loopback(self.host):
            raise ValueError(f"token: the service would listen on {self.host}, beyond "
                             "loopback, with no SYNCSGD_TOKEN; set one")
        return self

    @property
    def reads_need_token(self) -> bool:
        """Reads need the token when asked, and whenever the service listens beyond
        loopback (its data and weights are no one else's)."""
        return self.token is not None and (self.auth_reads or not _loopback(self.host))

    @cached_property
    def database_path(self) -> Path:
        return self.data_dir / "syncsgd.sqlite3"

    @cached_property
    def audit_path(self) -> Path:
        """Who changed what, a JSON line each (:mod:`service.audit`)."""
        return self.data_dir / "audit.log"

    @cached_property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @cached_property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @cached_property
    def datasets_path(self) -> Path:
        """Where ingested datasets live (``datasets_dir``, else under the data dir)."""
        return self.datasets_dir or self.data_dir / "datasets"

    def model_path(self, job_id: str) -> Path:
        """Where a succeeded job's weights live (an .npz ``Network.load`` reads)."""
        return self.models_dir / f"{job_id}.npz"

    def checkpoint_dir(self, job_id: str) -> Path:
        """A running job's checkpoints, gone once it ends."""
        return self.checkpoints_dir / job_id

    def tensorboard_dir(self, job_id: str) -> Path:
        """A job's TensorBoard event files (``tensorboard --logdir`` this dir's parent)."""
        return self.data_dir / "tensorboard" / job_id


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
