"""Real data in, a usable model out, through the API in process: registration by path and
its bounds, raw rows in and original class names out (against scikit-learn on the same
data), the ONNX export against /predict (onnxruntime), a registered file that changes."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from common.data import split_train_validation
from tests.helpers import run_job
from tests.service.conftest import AppFactory


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


def register(api: TestClient, **fields: Any) -> Any:
    return api.post("/datasets/register", params={"wait": True},
                    json={"name": "r", "format": "parquet", **fields})


def test_a_path_outside_the_root_is_refused_naming_path(make_app: AppFactory,
                                                         root: Path, tmp_path: Path) -> None:
    api = make_app(datasets_root=root)
    outside = tmp_path / "outside.csv"
    outside.write_text("a,b\n1,0\n2,1\n")
    (root / "escape").symlink_to(outside)
    (root / "inside.csv").write_text("a,b\n1,0\n2,1\n")
    for path in ("../outside.csv", str(outside), "escape", "sub/../../outside.csv"):
        response = register(api, path=path, format="csv")
        assert response.status_code == 422, (path, response.text)
        (error,) = response.json()["detail"]
        assert (error["loc"] == ["body", "path"] and "outside the datasets root" in error["msg"]) \
            or "is absolute" in error["msg"], (path, error)
    missing = register(api, path="nope.csv", format="csv")
    assert missing.status_code == 422 and "does not exist" in missing.text
    too_long = register(api, path="0" * 1000, format="csv")  # the fuzzer's: was a 500
    assert too_long.status_code == 422 and "File name too long" in too_long.text
    pq.write_table(pa.table({"x": [[1.0, 2.0], [3.0]], "label": [0, 1]}), root / "lists.parquet")
    lists = register(api, path="lists.parquet")
    assert lists.status_code == 422 and "column 'x' holds lists" in lists.text
    assert api.get("/datasets").json() == []
    assert register(api, path="inside.csv", format="csv").status_code == 201
    no_root = make_app()
    off = register(no_root, path="inside.csv", format="csv")
    assert off.status_code == 422 and "SYNCSGD_DATASETS_ROOT" in off.text


def test_digits_predicts_raw_pixels_as_well_as_the_job_reported(api: TestClient) -> None:
    """The model file carries the standardization: raw rows, as the user has them."""
    from sklearn.datasets import load_digits

    job = run_job(api, {"optimizer": {"lr": 0.1, "momentum": 0.9}, "epochs": 20,
                        "workers": 2, "seed": 1})
    digits = load_digits()
    _, val = split_train_validation(len(digits.target), 0.2, 1, digits.target)
    raw = digits.data[val]  # pixel values 0..16, never standardized by the test
    predicted = api.post(f"/jobs/{job['id']}/predict", json={"inputs": raw.tolist()}).json()
    accuracy = float(np.mean(np.array(predicted["classes"]) == digits.target[val]))
    assert accuracy == pytest.approx(job["val_accuracy"], abs=0.01)
    assert job["val_accuracy"] > 0.95


def tabular(rng: np.random.Generator, rows: int, regression: bool,
            far_targets: bool = True) -> tuple[np.ndarray, Any]:
    """Features on wildly different scales (1e-3 to 1e4), a label from a few of them;
    regression targets far from 0 and 1 too, or of unit scale."""
    from sklearn.datasets import make_classification, make_regression

    if regression:
        x, y = make_regression(rows, 8, n_informative=5, noise=5.0, random_state=0)
        y = y * 40 + 1000 if far_targets else y / y.std()
    else:
        x, y = make_classification(rows, 8, n_informative=5, n_classes=3, random_state=0)
        y = np.array(["gold", "silver", "bronze"])[y]
    return x * np.logspace(-3, 4, 8), y


def to_csv(x: np.ndarray, y: np.ndarray) -> bytes:
    lines = ["f0,f1,f2,f3,f4,f5,f6,f7,target"] + [
        ",".join(f"{v:.9g}" for v in row) + f",{t}" for row, t in zip(x, y, strict=True)]
    return "\n".join(lines).encode()


@pytest.mark.parametrize("regression", [False, True])
def test_raw_tabular_data_trains_as_well_as_a_scikit_learn_pipeline(
        api: TestClient, regression: bool) -> None:
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.metrics import r2_score
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = tabular(np.random.default_rng(0), 1500, regression)
    x_fit, y_fit, x_held, y_held = x[:1200], y[:1200], x[1200:], y[1200:]
    task = "regression" if regression else "classification"
    created = api.post("/datasets", content=to_csv(x_fit, y_fit), params={
        "name": task, "task": task, "label": "target", "wait": True})
    assert created.status_code == 201, created.text
    spec = {"model": {"input_dim": 8, "layers": [
        {"units": 32, "activation": "relu"},
        {"units": 1 if regression else 3, "activation": "identity" if regression else "softmax"}]},
        "loss": "mse" if regression else "cross_entropy",
        "optimizer": {"lr": 0.01, "momentum": 0.9}, "batch_size": 32, "epochs": 40,
        "data": {"dataset": created.json()["id"], "validation_fraction": 0}, "workers": 2}
    job = run_job(api, spec)
    assert job["state"] == "succeeded", job["error"]
    outputs = api.post(f"/jobs/{job['id']}/predict", json={"inputs": x_held.tolist()}).json()
    kind = MLPRegressor if regression else MLPClassifier
    reference = make_pipeline(StandardScaler(), kind(
        hidden_layer_sizes=(32,), solver="sgd", learning_rate_init=0.01, momentum=0.9,
        nesterovs_momentum=False, batch_size=32, max_iter=40, alpha=0.0, random_state=0,
        n_iter_no_change=1000, tol=0))
    if regression:  # the targets standardized too, as the job's standardize_targets does
        reference = TransformedTargetRegressor(reference, transformer=StandardScaler())
    reference.fit(x_fit, y_fit)
    if regression:
        ours = r2_score(y_held, np.array(outputs["outputs"])[:, 0])
        theirs = r2_score(y_held, reference.predict(x_held))
        assert ours >= theirs - 0.05 and ours > 0.9, (ours, theirs)
    else:
        assert set(outputs["classes"]) <= {"gold", "silver", "bronze"}
        ours = float(np.mean(np.array(outputs["classes"]) == y_held))
        theirs = float(np.mean(reference.predict(x_held) == y_held))
        assert ours >= theirs - 0.02 and ours > 0.8, (ours, theirs)


@pytest.mark.parametrize("regression", [False, True])
def test_the_onnx_export_runs_in_onnxruntime_as_predict_does(api: TestClient,
                                                             regression: bool) -> None:
    """Float32 outputs of unit scale: the two runtimes round differently only in the last
    bits (a regressor's outputs in the thousands would differ by their float32 ulps)."""
    import onnxruntime

    x, y = tabular(np.random.default_rng(1), 400, regression, far_targets=False)
    task = "regression" if regression else "classification"
    dataset = api.post("/datasets", content=to_csv(x, y), params={
        "name": "t", "task": task, "wait": True}).json()
    job = run_job(api, {"model": {"input_dim": 8, "layers": [
        {"units": 16, "activation": "tanh"}, {"units": 8, "activation": "sigmoid"},
        {"units": 1 if regression else 3, "activation": "identity" if regression else "softmax"}]},
        "loss": "mse" if regression else "cross_entropy", "epochs": 5,
        "data": {"dataset": dataset["id"]}})
    rows = x[:100]
    predicted = api.post(f"/jobs/{job['id']}/predict", json={"inputs": rows.tolist()}).json()
    exported = api.get(f"/jobs/{job['id']}/model", params={"format": "onnx"})
    assert exported.status_code == 200
    session = onnxruntime.InferenceSession(exported.content)
    (onnx_out,) = session.run(None, {"input": rows.astype(np.float32)})
    assert np.abs(onnx_out - np.array(predicted["outputs"])).max() < 1e-5
    meta = session.get_modelmeta().custom_metadata_map
    if not regression:
        import json

        names = json.loads(meta["class_names"])
        assert [names[i] for i in onnx_out.argmax(axis=1)] == predicted["classes"]


def test_a_registered_parquet_file_that_changes_fails_its_next_job(make_app: AppFactory,
                                                                   root: Path) -> None:
    api = make_app(datasets_root=root)
    table = pa.table({"a": np.arange(200.0), "b": np.arange(200.0) % 7,
                      "kind": np.where(np.arange(200) % 2, "odd", "even")})
    pq.write_table(table, root / "data.parquet")
    dataset = register(api, path="data.parquet", label="kind").json()
    assert dataset["class_names"] == ["even", "odd"] and dataset["source"] == "data.parquet"
    spec = {"model": {"input_dim": 2, "layers": [{"units": 2, "activation": "softmax"}]},
            "data": {"dataset": dataset["id"]}, "epochs": 1}
    assert run_job(api, spec)["state"] == "succeeded"
    pq.write_table(table.slice(0, 150), root / "data.parquet")  # changed in place
    failed = run_job(api, spec)
    assert failed["state"] == "failed"
    assert "the registered file 'data.parquet' changed after ingest" in failed["error"]
    stat = (root / "data.parquet").stat()
    pq.write_table(table, root / "data.parquet")  # the same bytes again, newer mtime
    os.utime(root / "data.parquet", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert run_job(api, spec)["state"] == "succeeded"


def test_a_model_file_loads_with_its_preprocessing_and_class_names(api: TestClient) -> None:
    from common.nn import Network

    x, y = tabular(np.random.default_rng(2), 300, False)
    dataset = api.post("/datasets", content=to_csv(x, y), params={
        "name": "t", "wait": True}).json()
    job = run_job(api, {"model": {"input_dim": 8, "layers": [
        {"units": 3, "activation": "softmax"}]}, "data": {"dataset": dataset["id"]}})
    net = Network.load(io.BytesIO(api.get(f"/jobs/{job['id']}/model").content))
    assert net.preprocessing.class_names == ["bronze", "gold", "silver"]
    predicted = api.post(f"/jobs/{job['id']}/predict", json={"inputs": x[:5].tolist()}).json()
    assert net.class_names(net.predict(x[:5])) == predicted["classes"]
