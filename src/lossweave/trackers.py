"""The epoch means of an objective's terms and weights, kept in one fused state.

One `TermTracker` per compiled model holds a vector of sums (one entry per logged name) and a
count, so a step adds all its terms with two variable updates. Each logged name is also a
`Direction` (a stateless `keras.metrics.Metric` with `_direction = "down"`), so that Keras
callbacks in `mode="auto"` (`EarlyStopping`, `ModelCheckpoint`, `ReduceLROnPlateau`) know that a
lower term is better.

>>> from keras import ops
>>> tracker = TermTracker(["mse", "kl"])
>>> tracker.update({"mse": ops.array(1.0), "kl": ops.array(3.0)}, {"x": ops.zeros((2, 1))})
>>> tracker.update({"mse": ops.array(4.0), "kl": ops.array(0.0)}, {"x": ops.zeros((1, 1))})
>>> {name: round(float(value), 4) for name, value in tracker.result().items()}
{'mse': 2.0, 'kl': 2.0}
"""

from __future__ import annotations

import keras
from keras import ops

from lossweave._keras import MetricGroup
from lossweave.step import batch_size

DIRECTIONS = ("down", "up")


class Direction(keras.metrics.Metric):
    """A name Keras logs and the way it improves (`"down"` or `"up"`), for `mode="auto"`."""

    def __init__(self, name: str, direction: str = "down"):
        super().__init__(name=name)
        self._direction = direction

    def update_state(self, *args, **kwargs):
        raise NotImplementedError("A Direction has no state; its TermTracker has.")

    def result(self):
        raise NotImplementedError("A Direction has no state; its TermTracker has.")


class TermTracker(MetricGroup):
    """Batch-size-weighted epoch means of the named values of each step (terms and weights)."""

    def __init__(self, names):
        names = list(names)
        super().__init__([Direction(name) for name in names], name="lw_terms")
        self.names = names
        self.totals = self.add_variable(
            shape=(len(names),), initializer="zeros", dtype="float32", name="totals"
        )
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="count")

    def update(self, values: dict, tensors: dict) -> None:
        """Adds one step: `values` maps every name to a scalar; weighted by the batch size."""
        size = batch_size(tensors)
        step = ops.stack([ops.cast(values[name], "float32") for name in self.names])
        self.totals.assign_add(ops.stop_gradient(step) * size)
        self.count.assign_add(size)

    def reset_state(self):
        self.totals.assign(ops.zeros(self.totals.shape, "float32"))
        self.count.assign(0.0)

    def result(self):
        means = ops.divide_no_nan(self.totals, self.count)
        return {name: means[i] for i, name in enumerate(self.names)}
