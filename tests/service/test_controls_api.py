"""The training controls through the API (in process): the job record, the model a user
downloads, the curve's rate and norm, the defaults, and refusals naming field and limit."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from common.checkpoint import latest_checkpoint, save_checkpoint
from common.collective import LocalAllReduce
from common.data import load_dataset
from common.nn import Network
from common.schemas import JobSpec
from tests.helpers import assert_refused, run_job
from tests.service.conftest import AppFactory
from tests.worker.test_controls import OVERFIT
from worker.trainer import Trainer

SMALL: dict[str, Any] = {
    "model": {"input_dim": 64, "layers": [{"units": 16, "activation": "relu"},
                                          {"units": 10, "activation": "softmax"}]},
    "batch_size": 64, "epochs": 2, "seed": 1}


def test_an_early_stopped_job_serves_the_best_epochs_weights(api: TestClient,
                                                             tmp_path: Path) -> None:
    job = run_job(api, OVERFIT)
    assert job["state"] == "succeeded", job["error"]
    stopped, best = job["stopped_early_at_epoch"], job["best_epoch"]
    assert stopped is not None and stopped < OVERFIT["epochs"] - 1 and stopped == best + 3
    assert job["step"] == (stopped + 1) * 6  # 6 steps an epoch

    model = api.get(f"/jobs/{job['id']}/model")
    assert model.status_code == 200
    downloaded = Network.load(io.BytesIO(model.content))
    # The reference: the same spec trained to the best epoch's end, without early stopping
    # (which changes nothing before it stops), checkpointed there.
    for epochs, name in ((best + 1, "best"), (stopped + 1, "stop")):
        spec = JobSpec.model_validate({**OVERFIT, "epochs": epochs, "early_stopping": None})
        trainer = Trainer(spec, load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype),
                          LocalAllReduce())
        trainer.run(trainer.total_steps)
        save_checkpoint(tmp_path / name, trainer.state())
    at_best = latest_checkpoint(tmp_path / "best")
    at_stop = latest_checkpoint(tmp_path / "stop")
    assert at_best is not None and at_stop is not None
    assert at_best[0].step == (best + 1) * 6
    np.testing.assert_array_equal(downloaded.params, at_best[0].params)
    assert not np.array_equal(downloaded.params, at_stop[0].params)
    # and it predicts with them: the best epoch's validation accuracy, not the last one's
    points = api.get(f"/jobs/{job['id']}/curve").json()["points"]
    ends = {p["epoch"]: p for p in points if p["val_loss"] is not None}
    assert job["val_loss"] == ends[stopped]["val_loss"] > ends[best]["val_loss"]


def test_each_point_carries_its_rate_and_gradient_norm(api: TestClient) -> None:
    job = run_job(api, {**SMALL, "optimizer": {
        "lr": 0.2, "warmup_steps": 10, "clip_norm": 0.5,
        "schedule": {"kind": "step", "every_epochs": 1, "gamma": 0.5}}})
    points = api.get(f"/jobs/{job['id']}/curve").json()["points"]
    assert len(points) == 46  # 1437 rows, batches of 64: 23 steps an epoch
    rates = [p["lr"] for p in points]
    assert rates[:10] == pytest.approx([0.2 * k / 10 for k in range(1, 11)])
    assert rates[10:23] == pytest.approx([0.2] * 13) and rates[23:] == pytest.approx([0.1] * 23)
    assert all(p["grad_norm"] > 0 for p in points)
    table = api.get(f"/jobs/{job['id']}/curve", params={"format": "csv"}).text.splitlines()
    assert table[0].endswith(",lr,grad_norm") and table[1].startswith("1,0,")


def test_the_defaults_show_every_control(api: TestClient) -> None:
    defaults = api.get("/jobs/defaults").json()
    assert defaults["optimizer"]["schedule"] == {"kind": "constant"}
    assert defaults["optimizer"]["warmup_steps"] == 0
    assert defaults["optimizer"]["clip_norm"] is None
    assert defaults["accumulation_steps"] == 1 and defaults["early_stopping"] is None
    assert all(layer["dropout"] == 0 for layer in defaults["model"]["layers"])
    assert "adamw" in str(api.get("/openapi.json").json()["components"]["schemas"]
                          ["OptimizerSpec"]["properties"]["kind"])


LAYERS = [{"units": 16, "activation": "relu"}, {"units": 10, "activation": "softmax"}]
BAD_CONTROLS = [
    ({"optimizer": {"schedule": {"kind": "step", "gamma": -0.5}}},
     ["body", "optimizer", "schedule", "step", "gamma"], "greater than 0"),
    ({"optimizer": {"warmup_steps": 5000}}, ["body", "optimizer", "warmup_steps"],
     "is 5000, not shorter than the job's 46 steps"),
    ({"max_steps": 10, "optimizer": {"warmup_steps": 10}},
     ["body", "optimizer", "warmup_steps"], "not shorter than the job (max_steps 10)"),
    ({"model": {"input_dim": 64, "layers": [{**LAYERS[0], "dropout": 1.0}, LAYERS[1]]}},
     ["body", "model", "layers", 0, "dropout"], "less than 1"),
    ({"model": {"input_dim": 64, "layers": [LAYERS[0], {**LAYERS[1], "dropout": 0.5}]}},
     ["body", "model", "layers", 1, "dropout"], "hidden layers only"),
    ({"optimizer": {"clip_norm": 0}}, ["body", "optimizer", "clip_norm"], "greater than 0"),
    ({"early_stopping": {"patience": 2}, "data": {"validation_fraction": 0}},
     ["body", "early_stopping"], "needs a validation split"),
    ({"optimizer": {"schedule": {"kind": "plateau"}}, "data": {"validation_fraction": 0.0001}},
     ["body", "optimizer", "schedule"], "needs validation samples"),
    ({"optimizer": {"lr": 0.1, "schedule": {"kind": "cosine", "min_lr": 0.2}}},
     ["body", "optimizer", "schedule", "min_lr"], "is above optimizer.lr"),
    ({"accumulation_steps": 65}, ["body", "accumulation_steps"],
     "65 micro-batches of a global batch of 64"),
    ({"loss": "mse", "model": {"input_dim": 64, "layers": [{"units": 10}]},
      "early_stopping": {"monitor": "val_accuracy"}},
     ["body", "early_stopping", "monitor"], "val_accuracy needs a classifier"),
    ({"optimizer": {"kind": "adamw", "momentum": 0.9}}, ["body", "optimizer", "momentum"],
     "applies to kind 'sgd' only"),
]


def test_bad_controls_are_refused_naming_the_field_and_the_limit(api: TestClient) -> None:
    assert_refused(api, SMALL, BAD_CONTROLS)
    assert api.get("/jobs").json()["total"] == 0


def test_the_job_record_splits_its_start_by_phase(api: TestClient) -> None:
    job = run_job(api, {**SMALL, "max_steps": 2})
    split = job["startup"]
    assert list(split) == ["queue", "data", "data and broadcast", "first step"]  # one rank
    assert all(seconds >= 0 for seconds in split.values())
    assert api.get(f"/jobs/{job['id']}").json()["startup"] == split


BAD_RANGES: list[tuple[dict[str, Any], list[str | int], str]] = [
    ({"workers": {"min": 2, "max": 1}}, ["body", "workers", "range"], "min (2) is over max (1)"),
    ({"workers": {"min": 0, "max": 2}}, ["body", "workers", "range", "min"],
     "greater than or equal to 1"),
    ({"workers": {"min": 1}}, ["body", "workers", "range", "max"], "Field required"),
    ({"workers": {"min": 1, "max": 3}}, ["body", "workers", "max"],
     "3 x 1 CPU asked, the cluster has 2 CPUs"),
    ({"workers": {"min": 1, "max": 2}, "deterministic": True, "micro_shards": 1},
     ["body", "micro_shards"], "at least one per worker (1 < 2 workers)"),
    ({"workers": {"min": 1, "max": 2}, "allreduce": "local"}, ["body", "allreduce"],
     "'local' runs in one process"),
    ({"workers": 3}, ["body", "workers"], "3 x 1 CPU asked, the cluster has 2 CPUs"),
    ({"workers": 0}, ["body", "workers", "count"], "greater than or equal to 1"),
]


def test_a_bad_elastic_range_is_refused_naming_the_field(make_app: AppFactory) -> None:
    api = make_app(max_workers_per_job=4)
    assert_refused(api, SMALL, BAD_RANGES)
    over = api.post("/jobs", json={**SMALL, "workers": {"min": 1, "max": 5}})
    assert over.status_code == 422
    assert over.json()["detail"][0]["loc"] == ["body", "workers", "max"]
    assert "SYNCSGD_MAX_WORKERS_PER_JOB" in over.json()["detail"][0]["msg"]
    assert api.get("/jobs").json()["total"] == 0


def test_a_fixed_worker_count_is_recorded_as_before(api: TestClient) -> None:
    job = run_job(api, {**SMALL, "workers": 2, "max_steps": 3})
    assert job["spec"]["workers"] == 2 and job["resize_log"] == []
    elastic = run_job(api, {**SMALL, "workers": {"min": 1, "max": 2}, "max_steps": 3})
    assert elastic["state"] == "succeeded", elastic["error"]
    assert elastic["spec"]["workers"] == {"min": 1, "max": 2}


def test_tracking_without_a_tracking_server_is_refused_naming_the_setting(
        api: TestClient) -> None:
    refused = api.post("/jobs", json={**SMALL, "tracking": {"mlflow": {"experiment": "x"}}})
    assert refused.status_code == 422
    (error,) = refused.json()["detail"]
    assert error["loc"] == ["body", "tracking", "mlflow"]
    assert "SYNCSGD_MLFLOW_TRACKING_URI" in error["msg"]
    bad_name = api.post("/jobs", json={**SMALL, "tracking": {"mlflow": {"experiment": "a\nb"}}})
    assert bad_name.status_code == 422
    assert bad_name.json()["detail"][0]["loc"][:4] == ["body", "tracking", "mlflow", "experiment"]
    assert api.get("/jobs").json()["total"] == 0  # nothing stored
