"""Learning-rate schedules and early stopping against values worked out by hand."""

import math

import numpy as np
import pytest

from common.nn.early_stopping import EarlyStopping
from common.nn.schedules import LearningRate
from common.schemas import EarlyStoppingSpec, OptimizerSpec

# 10 steps per epoch, 100 steps in the job
SPE, TOTAL = 10, 100


def rate(schedule: dict, warmup: int = 0, lr: float = 0.4) -> LearningRate:
    spec = OptimizerSpec.model_validate({"lr": lr, "schedule": schedule,
                                         "warmup_steps": warmup})
    return LearningRate(spec, SPE, TOTAL)


@pytest.mark.parametrize(("schedule", "expected"), [
    # step t (0-based) -> rate; epoch = t // 10
    ({"kind": "constant"}, {0: 0.4, 55: 0.4, 99: 0.4}),
    ({"kind": "step", "every_epochs": 3, "gamma": 0.5},
     {0: 0.4, 29: 0.4, 30: 0.2, 59: 0.2, 60: 0.1, 99: 0.05}),
    ({"kind": "exponential", "gamma": 0.9},
     {0: 0.4, 9: 0.4, 10: 0.36, 25: 0.4 * 0.81, 99: 0.4 * 0.9**9}),
    ({"kind": "cosine", "min_lr": 0.1},
     {0: 0.4, 50: 0.25, 25: 0.1 + 0.3 * (1 + math.cos(math.pi / 4)) / 2, 100: 0.1}),
])
def test_each_schedule_gives_the_hand_computed_rate(schedule: dict,
                                                    expected: dict[int, float]) -> None:
    lr = rate(schedule)
    for step, value in expected.items():
        assert lr.at(step) == pytest.approx(value, rel=1e-12), step


@pytest.mark.parametrize("kind", ["constant", "step", "exponential", "cosine"])
def test_warmup_rises_linearly_from_zero_then_hands_over(kind: str) -> None:
    schedule = {"kind": kind} if kind != "step" else {"kind": "step", "gamma": 0.5}
    warm, cold = rate(schedule, warmup=20), rate(schedule)
    # step k (1-based) of the warmup runs at k/20 of what the schedule says then
    if kind != "cosine":
        for t in (0, 4, 9, 10, 19):
            assert warm.at(t) == pytest.approx(cold.at(t) * (t + 1) / 20, rel=1e-12)
        assert warm.at(20) == cold.at(20) and warm.at(77) == cold.at(77)
    else:
        # cosine starts its descent when the warmup ends: full rate at step 20, min at 100
        assert warm.at(0) == pytest.approx(0.4 / 20) and warm.at(19) == pytest.approx(0.4)
        assert warm.at(20) == pytest.approx(0.4)
        assert warm.at(60) == pytest.approx(0.2)  # half way through 20..100: (1 + cos(pi/2))/2
        assert warm.at(100) == pytest.approx(0.0, abs=1e-15)


def test_plateau_lowers_the_rate_after_patience_epochs_without_a_new_best() -> None:
    lr = rate({"kind": "plateau", "factor": 0.5, "patience": 2, "min_lr": 0.06}, warmup=5)
    assert lr.at(0) == pytest.approx(0.4 / 5)  # warmup applies to the plateau's level too
    levels = []
    #          best  best  worse  same(2: cut) better  worse  worse(2: cut) worse worse(cut)
    for loss in (1.0, 0.8, 0.9, 0.8, 0.7, 0.75, 0.71, 0.72, 0.9, 0.95, 0.99):
        lr.observe(loss)
        levels.append(lr.at(50))
    assert levels == pytest.approx([0.4, 0.4, 0.4, 0.2, 0.2, 0.2, 0.1, 0.1, 0.06, 0.06, 0.06])
    # its counters travel in checkpoints: a copy continues the same way
    copy = rate({"kind": "plateau", "factor": 0.5, "patience": 2, "min_lr": 0.06}, warmup=5)
    copy.load_state_dict(lr.state_dict())
    for loss in (0.5, 0.6, 0.6):
        lr.observe(loss)
        copy.observe(loss)
        assert copy.at(50) == lr.at(50)
    assert lr.at(50) == 0.06  # not below min_lr


def test_early_stopping_waits_patience_epochs_and_keeps_the_best_weights() -> None:
    early = EarlyStopping(EarlyStoppingSpec(patience=3, min_delta=0.01), 2, np.dtype("float64"))
    history = [1.0, 0.8, 0.795, 0.7, 0.75, 0.699, 0.72]  # 0.795 and 0.699: within min_delta
    stops = [early.observe(epoch, loss, None, np.array([epoch, -epoch], dtype=float))
             for epoch, loss in enumerate(history)]
    assert stops == [False, False, False, False, False, False, True]
    assert (early.best_epoch, early.stopped_epoch) == (3, 6)
    params = np.zeros(2)
    early.restore_best(params)
    assert params.tolist() == [3.0, -3.0]


def test_early_stopping_on_accuracy_looks_for_a_rise_and_resumes_from_its_state() -> None:
    spec = EarlyStoppingSpec(monitor="val_accuracy", patience=2)
    early = EarlyStopping(spec, 1, np.dtype("float64"))
    for epoch, accuracy in enumerate([0.5, 0.7, 0.6]):
        assert not early.observe(epoch, 9.0, accuracy, np.array([float(epoch)]))
    resumed = EarlyStopping(spec, 1, np.dtype("float64"))
    resumed.load_state_dict(early.state_dict())
    assert resumed.observe(3, 9.0, 0.7, np.array([3.0]))  # 0.7 again is no improvement
    assert (resumed.best_epoch, resumed.stopped_epoch) == (1, 3)
    assert resumed.best_params.tolist() == [1.0]
