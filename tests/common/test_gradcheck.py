"""The hand-written backprop against independent references.

Finite differences (float64, central) for every activation with every loss it
may go with, on nets of 3+ layers with random shapes; and PyTorch autograd on
the same weights, a second reference that shares no code with the engine.
"""

import itertools
import zlib

import numpy as np
import pytest

from common.nn import Network, gradcheck
from common.nn.layers import Dense
from common.schemas import ModelSpec

HIDDEN = ["identity", "sigmoid", "tanh", "relu"]
# (loss, output activation): softmax goes only with cross_entropy, and vice versa.
HEADS = [("cross_entropy", "softmax")] + [("mse", act) for act in HIDDEN]


def random_net(rng: np.random.Generator, hidden: list[str], head: str, loss: str) -> Network:
    depth = len(hidden) + 1
    units = [int(u) for u in rng.integers(2, 9, size=depth)]
    layers = [{"units": u, "activation": a} for u, a in zip(units, [*hidden, head], strict=True)]
    spec = ModelSpec(input_dim=int(rng.integers(2, 8)), layers=layers)  # type: ignore[arg-type]
    net = Network.from_spec(spec, loss=loss, dtype="float64", seed=int(rng.integers(1000)))  # type: ignore[arg-type]
    # Zero biases put relu exactly on its kink wherever a whole layer is dead for
    # a sample (z = b = 0); finite differences are meaningless there.
    for _, b in net.parameters():
        b[...] = 0.1 * rng.standard_normal(b.shape)
    return net


def random_batch(rng: np.random.Generator, net: Network, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((n, net.input_dim))
    if net.classifies:
        return x, rng.integers(0, net.output_dim, n)
    y = rng.standard_normal((n, net.output_dim))
    return x, y


@pytest.mark.parametrize(("loss", "head"), HEADS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_gradients_match_finite_differences(hidden: str, loss: str, head: str) -> None:
    # crc32, not hash(): str hashes change from process to process.
    rng = np.random.default_rng(zlib.crc32(f"{hidden}-{head}".encode()))
    for depth in (3, 4):
        net = random_net(rng, [hidden] * (depth - 1), head, loss)
        x, y = random_batch(rng, net, n=int(rng.integers(3, 12)))
        result = gradcheck(net, x, y)
        assert result.checked == net.num_parameters
        assert result.max_relative_error < 1e-6, result.per_tensor


def test_mixed_activations_and_one_hot_targets() -> None:
    rng = np.random.default_rng(7)
    for hidden in itertools.permutations(HIDDEN, 3):
        net = random_net(rng, list(hidden), "softmax", "cross_entropy")
        x, labels = random_batch(rng, net, n=6)
        assert gradcheck(net, x, np.eye(net.output_dim)[labels]).max_relative_error < 1e-6


def test_gradcheck_catches_a_wrong_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself must be able to fail: skew every dW by 1% and see it."""
    rng = np.random.default_rng(3)
    net = random_net(rng, ["tanh", "relu"], "softmax", "cross_entropy")
    x, y = random_batch(rng, net, 8)
    assert gradcheck(net, x, y).passed()
    real = Dense.compute_weight_gradients

    def skewed(self: Dense, delta: np.ndarray) -> None:
        real(self, delta)
        self.dW *= 1.01

    monkeypatch.setattr(Dense, "compute_weight_gradients", skewed)
    assert not gradcheck(net, x, y).passed()


@pytest.mark.parametrize(("loss", "head"), HEADS)
def test_gradients_match_torch_autograd(loss: str, head: str) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    net = random_net(rng, ["relu", "tanh", "sigmoid"], head, loss)
    x, y = random_batch(rng, net, 16)
    engine_loss, grads = net.loss_and_gradients(x, y)

    params = [(torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True))
              for W, b in net.parameters()]
    act = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
           "identity": lambda t: t}
    a = torch.tensor(x)
    for (W, b), layer in zip(params[:-1], net.spec.layers[:-1], strict=True):
        a = act[layer.activation](a @ W + b)
    z = a @ params[-1][0] + params[-1][1]
    if loss == "cross_entropy":
        reference = torch.nn.functional.cross_entropy(z, torch.tensor(y))
    else:
        reference = 0.5 * ((act[head](z) - torch.tensor(y)) ** 2).sum(dim=1).mean()
    reference.backward()
    assert engine_loss == pytest.approx(reference.item(), rel=1e-12)
    for (dW, db), (W, b) in zip(grads, params, strict=True):
        np.testing.assert_allclose(dW, W.grad.numpy(), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(db, b.grad.numpy(), rtol=1e-10, atol=1e-14)
