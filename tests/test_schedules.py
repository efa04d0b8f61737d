"""Schedules against their formulas in numpy, at integer-tensor steps, on every backend."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from lossweave import schedules

STEPS = np.array([0, 1, 7, 50, 99, 100, 101, 1000, 123456])


def evaluate(schedule):
    return np.array([float(schedule(ops.convert_to_tensor(s, dtype="int32"))) for s in STEPS])


CASES = [
    (schedules.constant(0.3), lambda s: 0.3 + 0 * s),
    (schedules.linear(0.1, 0.9, steps=100, begin=1),
     lambda s: 0.1 + 0.8 * np.clip((s - 1) / 100, 0, 1)),
    (schedules.cosine(1.0, 0.1, steps=100),
     lambda s: 0.1 + 0.9 * 0.5 * (1 + np.cos(math.pi * np.clip(s / 100, 0, 1)))),
    (schedules.sigmoid(0.0, 2.0, midpoint=50, width=10),
     lambda s: 2.0 / (1 + np.exp(-(s - 50) / 10))),
    (schedules.cyclical(0.0, 1.0, period=40, ratio=0.5),
     lambda s: np.minimum((s % 40) / 20, 1.0)),
    (schedules.exponential_approach(0.01, 0.5, decay=0.99995),
     lambda s: 0.5 - (0.5 - 0.01) * 0.99995**s),
    (schedules.piecewise([100], [0.0, schedules.linear(0.0, 1.0, steps=1000)]),
     lambda s: np.where(s >= 100, np.clip((s - 100) / 1000, 0, 1), 0.0)),
    (schedules.epochwise(schedules.linear(0.0, 1.0, steps=10), steps_per_epoch=50),
     lambda s: np.clip((s // 50) / 10, 0, 1)),
]


@pytest.mark.parametrize("schedule, formula", CASES, ids=[type(s).__name__ for s, _ in CASES])
def test_schedule_matches_formula(schedule, formula):
    np.testing.assert_allclose(evaluate(schedule), formula(STEPS.astype(np.float64)),
                               rtol=1e-5, atol=1e-6)


def test_float_weight_is_constant_and_bad_weight_is_rejected():
    assert schedules.get(2).is_constant and float(schedules.get(2)(10)) == 2.0
    with pytest.raises(TypeError, match="weight must be a float or a schedule"):
        schedules.get("0.5")


@pytest.mark.parametrize("make", [
    lambda: schedules.cyclical(0, 1, period=0),
    lambda: schedules.cyclical(0, 1, period=10, ratio=0),
    lambda: schedules.exponential_approach(0, 1, decay=1.5),
    lambda: schedules.sigmoid(0, 1, midpoint=0, width=0),
    lambda: schedules.piecewise([10, 5], [0, 1, 2]),
    lambda: schedules.piecewise([10], [0]),
    lambda: schedules.epochwise(1.0, steps_per_epoch=0),
])
def test_bad_arguments_fail_clearly(make):
    with pytest.raises(ValueError):
        make()


def test_a_schedule_is_a_keras_learning_rate_that_saves_and_resumes(tmp_path):
    rate = schedules.piecewise([2], [0.1, schedules.linear(0.1, 0.0, steps=4)])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=rate), loss="mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")
    model.fit(x, y, batch_size=1, epochs=1, verbose=0)  # 4 steps
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)  # 0.1 * (1 - 2/4)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    loaded.fit(x, y, batch_size=1, epochs=1, verbose=0)  # 4 more: the schedule goes on to 0
    assert float(loaded.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-7)
