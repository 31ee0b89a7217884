"""The typed Python client, every method against a real service, refusals included: what
it returns are the API's own models, and what it raises names the status and the field."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from common.nn import Network
from common.records import StepRecord
from common.schemas import DatasetPublic, JobPublic, JobSpec, JobState
from service.client import ApiError, Client, PointsEvent, StateEvent
from tests.e2e.helpers import SYNCSGD, Server, start_server
from tests.helpers import four_class_csv

pytestmark = pytest.mark.slow

SPEC = {"name": "typed", "workers": 2, "epochs": 2, "batch_size": 64, "seed": 2,
        "steps_per_chunk": 5,
        "model": {"input_dim": 64, "layers": [{"units": 16, "activation": "relu"},
                                              {"units": 10, "activation": "softmax"}]}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    root = tmp_path_factory.mktemp("client-root")
    server = start_server(tmp_path_factory.mktemp("client") / "data", datasets_root=root)
    yield server, root
    server.stop_cleanly()


@pytest.fixture
def client(served: tuple[Server, Path]) -> Iterator[Client]:
    with served[0].client() as c:
        yield c


def test_a_job_from_submit_to_model_through_the_client(client: Client, tmp_path: Path) -> None:
    assert client.health().status == "ok" and client.health().cluster_cpus == 2
    defaults = client.defaults()
    assert isinstance(defaults, JobSpec) and defaults == JobSpec()
    job = client.submit(JobSpec.model_validate(SPEC))  # a model, or a dict (below)
    assert isinstance(job, JobPublic) and job.spec.workers == 2

    events = list(client.follow(job.id))
    streamed = [p.step for e in events if isinstance(e, PointsEvent) for p in e.points]
    states = [e.job.state for e in events if isinstance(e, StateEvent)]
    assert states[-1] == JobState.succeeded
    done = client.wait(job.id)
    assert done.state == JobState.succeeded and done.total_steps == 46

    curve = client.curve(job.id)
    assert all(isinstance(p, StepRecord) for p in curve)
    assert [p.step for p in curve] == streamed == list(range(1, 47))
    assert [p.step for p in client.curve(job.id, since=40)] == list(range(41, 47))
    frame = client.curve_frame(job.id)
    assert list(frame.index) == streamed and frame["loss"].tolist() == [p.loss for p in curve]

    trace = client.timeline(job.id, from_step=1, to_step=46)
    assert len([e for e in trace["traceEvents"] if e["ph"] == "X"]) == 2 * 46 * 4
    with tarfile.open(client.tensorboard(job.id, tmp_path / "tb.tar.gz")) as archive:
        assert any(name.startswith(f"{job.id}/events.out.tfevents") for name in
                   archive.getnames())

    npz = client.model(job.id, tmp_path / "model.npz")
    net = Network.load(npz)
    onnx = client.model(job.id, tmp_path / "model.onnx", format="onnx")
    rows = np.random.default_rng(0).random((3, 64))
    prediction = client.predict(job.id, rows.tolist())
    np.testing.assert_allclose(prediction.outputs, net.predict(rows), rtol=1e-5)
    session = onnxruntime.InferenceSession(str(onnx))
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: rows.astype(np.float32)})
    np.testing.assert_allclose(onnx_out, prediction.outputs, rtol=1e-4, atol=1e-6)
    assert prediction.classes == [int(c) for c in net.predict(rows).argmax(axis=1)]

    listed = client.jobs(state="succeeded")
    assert job.id in [j.id for j in listed.items] and listed.total >= 1
    client.delete(job.id)
    with pytest.raises(ApiError) as gone:
        client.job(job.id)
    assert gone.value.status_code == 404 and gone.value.field is None


def test_the_cli_writes_the_timeline_and_the_tensorboard_files(
        served: tuple[Server, Path], client: Client, tmp_path: Path) -> None:
    server = served[0]
    job = client.submit({**SPEC, "epochs": 1})
    assert client.wait(job.id).state == JobState.succeeded
    env = {**server.env, "SYNCSGD_URL": server.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SYNCSGD, *args], env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    traced = cli("timeline", job.id, "-o", str(tmp_path / "trace.json"), "--from-step", "3")
    assert traced.returncode == 0, traced.stdout + traced.stderr
    assert "steps 3..23 on 2 rank(s)" in traced.stdout
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert trace == client.timeline(job.id, from_step=3)
    boarded = cli("tensorboard", job.id, "-o", str(tmp_path / "tb.tar.gz"))
    assert boarded.returncode == 0, boarded.stdout + boarded.stderr
    with tarfile.open(tmp_path / "tb.tar.gz") as archive:
        assert archive.getnames()[0] == job.id
    refused = cli("timeline", job.id, "-o", str(tmp_path / "x.json"), "--from-step", "1",
                  "--to-step", "1000000")
    assert refused.returncode == 1 and "SYNCSGD_TIMELINE_MAX_STEPS" in refused.stdout


def test_cancel_and_verify(client: Client) -> None:
    job = client.submit({**SPEC, "epochs": 5000})
    cancelled = client.cancel(job.id)
    assert cancelled.id == job.id
    assert client.wait(job.id).state == JobState.cancelled
    with pytest.raises(ApiError) as again:
        client.cancel(job.id)
    assert again.value.status_code == 409 and "already cancelled" in str(again.value)
    report = client.verify({**SPEC, "deterministic": True}, workers=2, steps=3)
    assert report.identical and report.sha256_one == report.sha256_many and report.workers == 2


def test_refusals_raise_one_error_type_naming_status_and_field(client: Client) -> None:
    with pytest.raises(ApiError) as too_many:
        client.submit({**SPEC, "workers": {"min": 3, "max": 2}})
    assert too_many.value.status_code == 422
    assert too_many.value.field == "workers.range" and too_many.value.location == "body"
    with pytest.raises(ApiError) as over:
        client.submit({**SPEC, "workers": 8})
    assert over.value.status_code == 422 and over.value.field == "workers"
    assert "the cluster has 2 CPUs" in str(over.value)
    job = client.submit({**SPEC, "epochs": 5000})
    with pytest.raises(ApiError) as early:
        client.model(job.id, Path("/nonexistent/never-written.npz"))
    assert early.value.status_code == 409
    with pytest.raises(ApiError) as paged:
        client.timeline(job.id, from_step=1, to_step=10**6)
    assert (paged.value.status_code, paged.value.location, paged.value.field) == (
        422, "query", "to_step")
    client.cancel(job.id)
    client.wait(job.id)
    with pytest.raises(ApiError) as missing:
        client.dataset("ds_nope")
    assert missing.value.status_code == 404


def test_the_datasets_calls(served: tuple[Server, Path], client: Client, tmp_path: Path
                            ) -> None:
    upload = tmp_path / "four.csv"
    upload.write_bytes(four_class_csv())
    uploaded = client.upload_dataset(upload, name="four", label="label", wait=True)
    assert isinstance(uploaded, DatasetPublic) and uploaded.state == "ready"
    assert uploaded.rows == 300 and uploaded.features == 5
    (served[1] / "four.csv").write_bytes(four_class_csv())
    registered = client.register_dataset({"name": "in-place", "path": "four.csv",
                                          "format": "csv", "label": "label"}, wait=True)
    assert registered.state == "ready" and registered.rows == 300
    assert {d.id for d in client.datasets()} >= {uploaded.id, registered.id}
    assert client.dataset(registered.id) == registered
    with pytest.raises(ApiError) as outside:
        client.register_dataset({"name": "x", "path": "../../etc/passwd", "format": "csv"})
    assert outside.value.status_code == 422 and outside.value.field == "path"
    client.delete_dataset(uploaded.id)
    assert uploaded.id not in {d.id for d in client.datasets()}
    assert json.loads(client.dataset(registered.id).model_dump_json())["id"] == registered.id
