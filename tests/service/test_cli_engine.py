"""The engine's commands, run as a user runs them: the installed ``syncsgd`` in a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the installed commands in subprocesses

SYNCSGD = str(Path(sys.executable).with_name("syncsgd"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYNCSGD, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_gradcheck_passes_for_a_model_spec(tmp_path: Path) -> None:
    spec = tmp_path / "model.json"
    spec.write_text(json.dumps({"input_dim": 6, "layers": [
        {"units": 9, "activation": "tanh"}, {"units": 5, "activation": "relu"},
        {"units": 3, "activation": "softmax"}]}))
    result = run("gradcheck", str(spec))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "W3" in result.stdout and "(ok: tolerance 1e-06)" in result.stdout


def test_gradcheck_accepts_a_job_spec_and_rejects_a_bad_one(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model": {"input_dim": 4, "layers": [
        {"units": 3, "activation": "sigmoid"}, {"units": 2, "activation": "identity"}]},
        "loss": "mse"}))
    assert run("gradcheck", str(job)).returncode == 0
    job.write_text(json.dumps({"model": {"input_dim": 4, "layers": [{"units": 0}]}}))
    result = run("gradcheck", str(job))
    assert result.returncode == 2 and "units" in result.stdout
