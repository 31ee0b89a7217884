"""The trainer (world size 1) against a plain loop written from the engine's public API."""

from pathlib import Path

import numpy as np
import pytest

from common.collective import LocalAllReduce
from common.data import dataset_from_arrays, epoch_order, load_dataset
from common.nn import Network, make_optimizer
from common.schemas import DataSpec, JobSpec
from worker.trainer import DivergedError, Trainer

SPEC = JobSpec.model_validate({
    "model": {"input_dim": 64, "layers": [{"units": 32, "activation": "tanh"},
                                          {"units": 10, "activation": "softmax"}]},
    "optimizer": {"kind": "adam", "lr": 0.01}, "batch_size": 100, "epochs": 2,
    "allreduce": "local", "dtype": "float64", "seed": 4})


def test_trainer_equals_a_plain_loop() -> None:
    data = load_dataset(SPEC.data, seed=SPEC.seed, dtype=SPEC.dtype)
    trainer = Trainer(SPEC, data, LocalAllReduce())
    records = trainer.run(10**6).records

    net = Network.from_spec(SPEC.model, seed=SPEC.seed, dtype="float64", loss=SPEC.loss)
    opt = make_optimizer(SPEC.optimizer, net.num_parameters, net.dtype)
    losses = []
    for epoch in range(SPEC.epochs):
        order = epoch_order(len(data.y_train), SPEC.seed, epoch)
        for start in range(0, len(order), SPEC.batch_size):
            rows = order[start:start + SPEC.batch_size]
            loss, _ = net.loss_and_gradients(data.x_train[rows], data.y_train[rows])
            opt.step(net.params, net.grads, SPEC.optimizer.lr)
            losses.append(loss)
    assert [r.loss for r in records] == pytest.approx(losses, rel=1e-12)
    np.testing.assert_allclose(trainer.net.params, net.params, rtol=1e-12)
    probs = net.predict(data.x_val)
    assert records[-1].val_accuracy == pytest.approx(np.mean(probs.argmax(1) == data.y_val))


def test_chunks_resume_where_they_stopped() -> None:
    data = load_dataset(SPEC.data, seed=SPEC.seed, dtype=SPEC.dtype)
    whole = Trainer(SPEC, data, LocalAllReduce())
    whole.run(10**6)
    chunked = Trainer(SPEC, data, LocalAllReduce())
    steps = []
    while not chunked.done:
        steps += [r.step for r in chunked.run(7).records]
    assert steps == list(range(1, whole.total_steps + 1))
    assert chunked.fingerprint() == whole.fingerprint()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("deterministic", [False, True])
def test_divergence_stops_before_the_update(deterministic: bool) -> None:
    spec = SPEC.model_copy(update={"optimizer": SPEC.optimizer.model_copy(update={"lr": 10.0}),
                                   "deterministic": deterministic})
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    trainer = Trainer(spec, data, LocalAllReduce())
    trainer.net.params[0] = np.inf  # poison one weight: the next loss is not finite
    before = trainer.net.params.copy()
    with pytest.raises(DivergedError, match=r"diverged at step 1 \(loss=nan\)"):
        trainer.run(1)
    np.testing.assert_array_equal(trainer.net.params, before)


def test_deterministic_mode_refuses_sums_too_large_to_add_exactly(tmp_path: Path) -> None:
    """Finite but huge gradients (raw targets ~1e9): their fixed-point sums would pass 2**53,
    where float64 stops adding integers exactly, and the bits would depend on the order."""
    rng = np.random.default_rng(0)
    data = dataset_from_arrays(tmp_path / "huge", rng.standard_normal((44, 3)),
                               rng.standard_normal((44, 1)) * 1e9, dtype="float64",
                               spec=DataSpec(standardize_targets=False,
                                             validation_fraction=0.1))
    spec = JobSpec.model_validate({"model": {"input_dim": 3, "layers": [
        {"units": 1, "activation": "identity"}]}, "loss": "mse", "batch_size": 20,
        "dtype": "float64", "allreduce": "local", "deterministic": True, "micro_shards": 2})
    trainer = Trainer(spec, data, LocalAllReduce())
    before = trainer.net.params.copy()
    with pytest.raises(DivergedError, match=r"diverged at step 1 \(loss=.*below 2\*\*17"):
        trainer.run(1)
    np.testing.assert_array_equal(trainer.net.params, before)
