"""Dropout: a mask per (seed, step, sample position, layer), whoever computes the sample."""

import numpy as np
import pytest

from common.nn import Network, gradcheck
from common.nn.dropout import DropoutKey

SPEC = {"input_dim": 6, "layers": [{"units": 9, "activation": "tanh", "dropout": 0.4},
                                   {"units": 7, "activation": "sigmoid", "dropout": 0.25},
                                   {"units": 3, "activation": "softmax"}]}


def net() -> Network:
    return Network.from_spec(SPEC, seed=1, dtype="float64")


def batch(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)), rng.integers(0, 3, size=n)


def masks(network: Network) -> list[np.ndarray]:
    n = network.layers[0].x.shape[0]
    return [layer.mask[:n].copy() for layer in network.layers[:-1]]


def test_a_sample_gets_the_same_mask_whichever_rank_computes_it() -> None:
    x, _ = batch()
    key = DropoutKey(seed=5, step=12)
    whole = net()
    whole.forward(x, key)
    everyone = masks(whole)
    # a "rank" computing rows 5..11 of the global batch, and one computing 11..16
    for lo, hi in ((5, 11), (11, 16), (0, 1)):
        part = net()
        part.forward(x[lo:hi], key.at(lo))
        for layer, mask in enumerate(masks(part)):
            np.testing.assert_array_equal(mask, everyone[layer][lo:hi])
    # and another step, seed or layer draws another mask
    other = net()
    other.forward(x, DropoutKey(seed=5, step=13))
    assert not np.array_equal(masks(other)[0], everyone[0])
    assert not np.array_equal(everyone[0][:, :7], everyone[1])


def test_the_mask_drops_at_the_rate_and_keeps_the_expected_output() -> None:
    x = np.random.default_rng(1).normal(size=(4000, 6))
    network = net()
    network.forward(x, DropoutKey(seed=0, step=0))
    first, second = masks(network)
    assert np.mean(first == 0) == pytest.approx(0.4, abs=0.01)
    assert np.mean(second == 0) == pytest.approx(0.25, abs=0.01)
    assert set(np.unique(first)) == {0.0, 1 / 0.6}  # inverted: kept units scaled up


def test_training_outputs_differ_from_evaluation_and_predictions_are_deterministic() -> None:
    x, _ = batch()
    network = net()
    training = network.forward(x, DropoutKey(seed=0, step=0)).copy()
    evaluation = network.forward(x).copy()
    assert not np.allclose(training, evaluation)
    # no dropout at prediction: the same outputs every time, equal to the plain forward
    np.testing.assert_array_equal(network.predict(x), network.predict(x))
    np.testing.assert_array_equal(network.predict(x), evaluation)


def test_gradients_with_a_fixed_mask_match_finite_differences() -> None:
    x, y = batch()
    result = gradcheck(net(), x, y, dropout=DropoutKey(seed=3, step=7, first=40))
    assert result.passed(), result.per_tensor
    # the mask matters: without it the gradients are another function's
    network = net()
    _, with_mask = network.loss_and_gradients(x, y, DropoutKey(seed=3, step=7, first=40))
    _, without = network.loss_and_gradients(x, y)
    assert not np.allclose(with_mask[0][0], without[0][0])
