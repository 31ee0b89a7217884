"""The network's contract: flat buffers with views, dtypes, the loss formulas, save/load."""

import numpy as np
import pytest

from common.nn import Network
from common.schemas import ModelSpec

SPEC = {"input_dim": 4, "layers": [{"units": 5, "activation": "relu"},
                                    {"units": 3, "activation": "softmax"}]}


def test_parameters_are_views_into_one_flat_buffer() -> None:
    net = Network.from_spec(SPEC)
    assert net.params.shape == (4 * 5 + 5 + 5 * 3 + 3,)
    (W1, b1), (W2, b2) = net.parameters()
    assert W1.shape == (4, 5) and b1.shape == (5,) and W2.shape == (5, 3) and b2.shape == (3,)
    for array in (W1, b1, W2, b2):
        assert np.shares_memory(array, net.params)
    W2[0, 0] = 42.0
    assert net.params[4 * 5 + 5] == 42.0
    x, y = np.ones((2, 4)), np.array([0, 2])
    net.loss_and_gradients(x, y)
    for (dW, db), (W, b) in zip(net.gradient_views(), net.parameters(), strict=True):
        assert np.shares_memory(dW, net.grads) and np.shares_memory(db, net.grads)
        assert dW.shape == W.shape and db.shape == b.shape


def test_float32_by_default_and_float64_on_request() -> None:
    net = Network.from_spec(SPEC)
    x = np.random.default_rng(0).standard_normal((6, 4))  # float64 input
    net.loss_and_gradients(x, np.array([0, 1, 2, 0, 1, 2]))
    assert net.params.dtype == net.grads.dtype == np.float32
    assert net.predict(x).dtype == np.float32
    assert Network.from_spec(SPEC, dtype="float64").params.dtype == np.float64


def test_loss_is_the_documented_batch_mean() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 4))
    ce = Network.from_spec(SPEC, dtype="float64")
    labels = rng.integers(0, 3, 7)
    probs = ce.predict(x)
    loss, _ = ce.loss_and_gradients(x, labels)
    assert loss == pytest.approx(-np.mean(np.log(probs[np.arange(7), labels])), rel=1e-12)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)

    mse_spec = {"input_dim": 4, "layers": [{"units": 2, "activation": "identity"}]}
    mse = Network.from_spec(mse_spec, dtype="float64")
    targets = rng.standard_normal((7, 2))
    loss, _ = mse.loss_and_gradients(x, targets)
    assert loss == pytest.approx(np.mean(0.5 * ((mse.predict(x) - targets) ** 2).sum(axis=1)))


def test_cross_entropy_never_overflows() -> None:
    net = Network.from_spec(SPEC, dtype="float32")
    net.params[...] = 1e4  # logits around 1e5: exp() would overflow without the shift
    x = np.abs(np.random.default_rng(2).standard_normal((3, 4)))
    loss, grads = net.loss_and_gradients(x, np.array([0, 1, 2]))
    assert np.isfinite(loss) and all(np.isfinite(dW).all() for dW, _ in grads)


def test_one_hot_and_index_labels_agree() -> None:
    net = Network.from_spec(SPEC, dtype="float64")
    x, labels = np.random.default_rng(3).standard_normal((5, 4)), np.array([2, 0, 1, 1, 0])
    loss_a, grads_a = net.loss_and_gradients(x, labels)
    loss_b, grads_b = net.loss_and_gradients(x, np.eye(3)[labels])
    assert loss_a == pytest.approx(loss_b, rel=1e-14)
    for (dWa, dba), (dWb, dbb) in zip(grads_a, grads_b, strict=True):
        np.testing.assert_allclose(dWa, dWb, rtol=1e-14)
        np.testing.assert_allclose(dba, dbb, rtol=1e-14)


def test_gradients_of_a_shard_sum_to_the_full_batch() -> None:
    """The identity data parallelism rests on: sum over shards of (shard sum / N) = batch mean."""
    net = Network.from_spec(SPEC, dtype="float64")
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((9, 4)), rng.integers(0, 3, 9)
    full_loss, full = net.loss_and_gradients(x, y)
    total, loss = np.zeros_like(net.grads), 0.0
    for lo, hi in ((0, 4), (4, 7), (7, 9)):
        loss += net.compute_gradients(x[lo:hi], y[lo:hi], denominator=9)
        total += net.grads
    assert loss == pytest.approx(full_loss, rel=1e-13)
    np.testing.assert_allclose(total, np.concatenate([np.r_[dW.ravel(), db] for dW, db in full]),
                               rtol=1e-12)


def test_save_and_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    net = Network.from_spec(SPEC, seed=5)
    path = tmp_path / "model.npz"
    net.save(path)
    loaded = Network.load(path)
    assert loaded.spec == net.spec and loaded.params.tobytes() == net.params.tobytes()
    x = np.random.default_rng(6).standard_normal((3, 4))
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))


def test_same_seed_same_weights_different_seed_different() -> None:
    a, b, c = (Network.from_spec(SPEC, seed=s) for s in (1, 1, 2))
    assert a.params.tobytes() == b.params.tobytes() != c.params.tobytes()


def test_init_scales_he_for_relu_glorot_otherwise() -> None:
    spec = ModelSpec(input_dim=400, layers=[{"units": 300, "activation": "relu"},  # type: ignore[list-item]
                                            {"units": 200, "activation": "tanh"},
                                            {"units": 10, "activation": "softmax"}])
    (W1, b1), (W2, _), _ = Network.from_spec(spec, dtype="float64").parameters()
    assert W1.std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert W2.std() == pytest.approx(np.sqrt(2 / (300 + 200)), rel=0.02)  # uniform: limit/sqrt(3)
    assert not b1.any()
