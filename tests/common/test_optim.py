"""Optimizer steps against values computed by hand, element by element, in Python floats."""

import math

import numpy as np
import pytest

from common.nn import SGD, Adam, make_optimizer
from common.nn.optim import BLOCK
from common.schemas import OptimizerSpec

P0 = [1.0, -2.0, 0.5]
GRADS = [[0.1, -0.2, 0.3], [0.05, 0.4, -0.1], [-0.3, 0.1, 0.2]]  # steps 1..3


def run(optimizer: SGD | Adam, lr: float) -> np.ndarray:
    params = np.array(P0)
    for g in GRADS:
        optimizer.step(params, np.array(g), lr)
    return params


def hand_sgd(lr: float, mu: float = 0.0, nesterov: bool = False, wd: float = 0.0) -> list[float]:
    out = []
    for i, p in enumerate(P0):
        v = 0.0
        for g_step in GRADS:
            g = g_step[i] + wd * p
            v = mu * v + g
            d = (g + mu * v if nesterov else v) if mu else g
            p = p - lr * d
        out.append(p)
    return out


@pytest.mark.parametrize(("mu", "nesterov", "wd"),
                         [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 0.0),
                          (0.0, False, 0.01), (0.5, True, 0.1)])
def test_sgd_matches_hand_computation(mu: float, nesterov: bool, wd: float) -> None:
    sgd = SGD(3, np.dtype("float64"), momentum=mu, nesterov=nesterov, weight_decay=wd)
    np.testing.assert_allclose(run(sgd, 0.1), hand_sgd(0.1, mu, nesterov, wd), rtol=1e-15)


def test_plain_sgd_first_step_literally() -> None:
    params = np.array([1.0, 2.0])
    SGD(2, np.dtype("float64")).step(params, np.array([0.2, -0.4]), 0.5)
    assert params.tolist() == [0.9, 2.2]


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adam_matches_hand_computation(wd: float) -> None:
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    expected = []
    for i, p in enumerate(P0):
        m = v = 0.0
        for t, g_step in enumerate(GRADS, start=1):
            g = g_step[i] + wd * p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            p = p - lr * m_hat / (math.sqrt(v_hat) + eps)
        expected.append(p)
    adam = Adam(3, np.dtype("float64"), beta1=b1, beta2=b2, eps=eps, weight_decay=wd)
    np.testing.assert_allclose(run(adam, lr), expected, rtol=1e-12)


def test_adamw_three_steps_match_hand_computation() -> None:
    """torch.optim.AdamW: the decay shrinks the parameter first (by lr * wd), and the
    moments see the raw gradient; every rate differs, as a schedule would make it."""
    rates, b1, b2, eps, wd = [0.01, 0.02, 0.005], 0.9, 0.99, 1e-6, 0.1
    expected = []
    for i, p in enumerate(P0):
        m = v = 0.0
        for t, (g_step, lr) in enumerate(zip(GRADS, rates, strict=True), start=1):
            p = p * (1 - lr * wd)
            g = g_step[i]
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            p = p - (lr / (1 - b1**t)) * m / (math.sqrt(v) / math.sqrt(1 - b2**t) + eps)
        expected.append(p)
    adamw = make_optimizer(OptimizerSpec(kind="adamw", beta1=b1, beta2=b2, eps=eps,
                                         weight_decay=wd), 3, np.dtype("float64"))
    params = np.array(P0)
    for g, lr in zip(GRADS, rates, strict=True):
        adamw.step(params, np.array(g), lr)
    np.testing.assert_allclose(params, expected, rtol=1e-13)
    # not Adam with L2: the same numbers through Adam move the parameters elsewhere
    adam = make_optimizer(OptimizerSpec(kind="adam", beta1=b1, beta2=b2, eps=eps,
                                        weight_decay=wd), 3, np.dtype("float64"))
    other = np.array(P0)
    for g, lr in zip(GRADS, rates, strict=True):
        adam.step(other, np.array(g), lr)
    assert np.abs(other - params).max() > 1e-4


def test_state_round_trips_and_float32_stays_float32() -> None:
    spec = OptimizerSpec(kind="adam", lr=0.01)
    a = make_optimizer(spec, 3, np.dtype("float32"))
    params = np.array(P0, dtype=np.float32)
    a.step(params, np.array(GRADS[0], dtype=np.float32), 0.01)
    assert params.dtype == np.float32
    b = make_optimizer(spec, 3, np.dtype("float32"))
    b.load_state_dict(a.state_dict())
    p_a, p_b = params.copy(), params.copy()
    a.step(p_a, np.array(GRADS[1], dtype=np.float32), 0.01)
    b.step(p_b, np.array(GRADS[1], dtype=np.float32), 0.01)
    assert p_a.tobytes() == p_b.tobytes()


def whole_array_sgd(params: np.ndarray, velocity: np.ndarray, g: np.ndarray, lr: float,
                    mu: float, wd: float) -> None:
    """SGD with momentum and L2 as single passes over the whole arrays: the reference the
    block-by-block update must equal bit for bit."""
    g = g + wd * params
    velocity *= mu
    velocity += g
    params -= velocity * lr


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_blocked_update_is_bitwise_the_whole_array_update(dtype: str) -> None:
    """Sizes that end mid-block and on a block edge: every block, the last partial one
    too, is updated, with its own slice of the state."""
    rng = np.random.default_rng(0)
    for size in (2 * BLOCK + 7, BLOCK):
        sgd = SGD(size, np.dtype(dtype), momentum=0.9, weight_decay=0.01)
        params = rng.standard_normal(size).astype(dtype)
        expected, velocity = params.copy(), np.zeros(size, dtype=dtype)
        for _ in range(3):
            g = rng.standard_normal(size).astype(dtype)
            sgd.step(params, g, 0.05)
            whole_array_sgd(expected, velocity, g, 0.05, 0.9, 0.01)
        assert params.tobytes() == expected.tobytes()
        assert sgd.velocity.tobytes() == velocity.tobytes()


def test_blocked_adam_is_bitwise_the_same_update_in_one_block() -> None:
    """Adam over 2.5 blocks at once equals Adam run on each block's slice on its own."""
    rng = np.random.default_rng(1)
    size = 5 * BLOCK // 2
    whole = Adam(size, np.dtype("float32"), weight_decay=0.01)
    parts = [(lo, min(lo + BLOCK, size)) for lo in range(0, size, BLOCK)]
    pieces = [Adam(hi - lo, np.dtype("float32"), weight_decay=0.01) for lo, hi in parts]
    params = rng.standard_normal(size).astype(np.float32)
    sliced = params.copy()
    for _ in range(3):
        g = rng.standard_normal(size).astype(np.float32)
        whole.step(params, g, 0.01)
        for (lo, hi), piece in zip(parts, pieces, strict=True):
            piece.step(sliced[lo:hi], g[lo:hi], 0.01)
    assert params.tobytes() == sliced.tobytes()
