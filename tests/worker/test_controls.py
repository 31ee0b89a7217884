"""The training controls in one rank's trainer (no Ray): clipping, accumulation, early
stopping and the rate on each point, against hand computations and plain runs."""

from typing import Any

import numpy as np
import pytest

from common.collective import LocalAllReduce
from common.data import load_dataset
from common.nn import Network
from common.schemas import JobSpec
from tests.reference import single_process_run
from worker.trainer import Trainer

BASE: dict[str, Any] = {
    "model": {"input_dim": 64, "layers": [{"units": 24, "activation": "tanh"},
                                          {"units": 10, "activation": "softmax"}]},
    "dtype": "float64", "seed": 4, "epochs": 1}

#: 180 training digits (validation 0.9), 6 steps an epoch: a big net learns them by heart
#: and the validation loss turns up after a few epochs.
OVERFIT: dict[str, Any] = {
    "model": {"input_dim": 64, "layers": [{"units": 256, "activation": "relu"},
                                          {"units": 256, "activation": "relu"},
                                          {"units": 10, "activation": "softmax"}]},
    "optimizer": {"lr": 0.05, "momentum": 0.9}, "data": {"validation_fraction": 0.9},
    "batch_size": 30, "epochs": 60, "early_stopping": {"patience": 3},
    "dtype": "float64", "seed": 2}


def job(base: dict[str, Any] = BASE, **overrides: Any) -> JobSpec:
    return JobSpec.model_validate({**base, **overrides})


def trainer(spec: JobSpec) -> Trainer:
    return Trainer(spec, load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype),
                   LocalAllReduce())


def first_batch_gradient(spec: JobSpec, params: np.ndarray) -> np.ndarray:
    """The mean gradient of the first global batch at ``params``, by the plain network."""
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    x, y = data.take(data.train[data.order(0)[:spec.batch_size]])
    net = Network.from_spec(spec.model, dtype=spec.dtype, loss=spec.loss)
    net.params[...] = params
    net.loss_and_gradients(x, y)
    return net.grads.copy()


@pytest.mark.parametrize("clip", [0.05, 1e3])
def test_clipping_scales_the_step_to_the_clip_over_the_norm(clip: float) -> None:
    spec = job(optimizer={"lr": 0.5, "clip_norm": clip}, batch_size=40, max_steps=1)
    one = trainer(spec)
    before = one.net.params.copy()
    record = one.run(1).records[0]
    g = first_batch_gradient(spec, before)
    norm = float(np.linalg.norm(g))
    assert record.grad_norm == pytest.approx(norm, rel=1e-12)  # before clipping
    assert record.lr == 0.5
    scale = clip / norm if clip < norm else 1.0  # binds: lr * g * clip / ||g||
    expected = before - 0.5 * g * scale
    np.testing.assert_allclose(one.net.params, expected, rtol=1e-13, atol=1e-16)
    assert clip > norm or np.linalg.norm(one.net.params - before) == pytest.approx(0.5 * clip)


@pytest.mark.parametrize("deterministic", [False, True])
def test_four_micro_batches_equal_one_batch_with_a_quarter_of_the_buffers(
        deterministic: bool) -> None:
    spec = job(batch_size=256, epochs=2, deterministic=deterministic, micro_shards=4,
               optimizer={"lr": 0.2, "momentum": 0.9})
    whole, accumulated = trainer(spec), trainer(spec.model_copy(update={"accumulation_steps": 4}))
    records = [t.run(t.total_steps).records for t in (whole, accumulated)]
    np.testing.assert_allclose([r.loss for r in records[1]], [r.loss for r in records[0]],
                               rtol=1e-10)
    if deterministic:  # one mechanism with the micro-shards: not a bit changes
        assert accumulated.net.params.tobytes() == whole.net.params.tobytes()
    else:
        np.testing.assert_allclose(accumulated.net.params, whole.net.params, rtol=1e-10,
                                   atol=1e-13)
    # the rank's batch buffers, after training and validating: a micro-batch, 256 / 4 rows
    for t, rows in ((whole, 256), (accumulated, 64)):
        assert t._x.shape[0] == t._y.shape[0] == rows
        assert {layer.z.shape[0] for layer in t.net.layers} == {rows}
        assert {layer.error.shape[0] for layer in t.net.layers} == {rows}


def test_an_overfitting_run_stops_early_with_the_best_epochs_weights() -> None:
    spec = job(OVERFIT)
    one = trainer(spec)
    states = {}
    while not one.done:
        one.run(one.steps_per_epoch)
        states[one.step // one.steps_per_epoch - 1] = one.state()  # after each epoch
    report = one.early_report()
    assert report is not None and report.stopped_at_epoch is not None
    assert report.stopped_at_epoch < spec.epochs - 1  # before its last epoch
    best = report.best_epoch
    assert best is not None and report.stopped_at_epoch == best + 3  # patience 3
    assert one.step == one.total_steps == (report.stopped_at_epoch + 1) * one.steps_per_epoch
    # the final weights are the best epoch's, not the last one's
    np.testing.assert_array_equal(one.net.params, states[best].params)
    assert not np.array_equal(one.net.params, states[best + 1].params)


def test_a_run_resumed_after_the_best_epoch_stops_at_the_same_epoch_with_the_same_weights(
        ) -> None:
    spec = job(OVERFIT)
    params, records = single_process_run(spec)
    steps_per_epoch = 6
    stopped = records[-1].epoch
    resumed_from = (stopped - 1) * steps_per_epoch  # after the best epoch, before the stop
    first = trainer(spec)
    first.run(resumed_from)
    second = trainer(spec)
    second.restore(first.state())
    rest = second.run(10**6).records
    assert [r.step for r in rest] == [r.step for r in records[resumed_from:]]
    assert rest[-1].epoch == stopped
    assert second.net.params.tobytes() == params.tobytes()
