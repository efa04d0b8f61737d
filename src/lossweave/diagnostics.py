"""Per-term gradient diagnostics: which term drives the update, and which pulls against it.

`compile(..., diagnostics=lw.diagnostics.gradients(every=N))` logs, for every term `k` of the
objective, with `g_k` the gradient of `weight_k * term_k` with respect to the model's trainable
variables and `g = sum_k g_k` (+ `add_loss` terms) the gradient of the loss:

    <k>_grad_norm = ||g_k||_2
    <k>_grad_cos  = <g_k, g> / (||g_k|| ||g||)     (negative: the term pulls against the update)

Both come from the forward pass of the training step itself (see `lossweave._gradients`). They
are measured on the steps whose step count (before the step) is a multiple of `every`; the step
between those costs what it costs without diagnostics. The logged value of an epoch is the mean
over that epoch's measured steps; an epoch without one shows the last measured values (0 before
the first measurement).

>>> import keras, numpy as np
>>> import lossweave as lw
>>> inputs = keras.Input((3,))
>>> model = lw.Model(inputs, keras.layers.Dense(1)(inputs))
>>> model.compile(optimizer="sgd", loss=lw.Objective({
...     "mse": "mse", "l1": lambda y_pred: keras.ops.mean(keras.ops.abs(y_pred))}),
...     diagnostics=lw.diagnostics.gradients(every=1))
>>> logs = model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0).history
>>> sorted(logs)
['l1', 'l1_grad_cos', 'l1_grad_norm', 'loss', 'mse', 'mse_grad_cos', 'mse_grad_norm']
"""

from __future__ import annotations

import keras
from keras import ops


def squared_norm(grads):
    """`sum_v ||g_v||^2` over the variables' parts `grads` (a list) of one gradient.

    >>> float(squared_norm([ops.array([3.0]), ops.array([[4.0]])]))
    25.0
    """
    return sum(ops.sum(ops.square(g)) for g in grads)


def inner(a, b):
    """`<a, b>` for two gradients given as lists over the same variables.

    >>> float(inner([ops.array([1.0, 2.0])], [ops.array([3.0, -1.0])]))
    1.0
    """
    return sum(ops.sum(x * y) for x, y in zip(a, b))


@keras.saving.register_keras_serializable(package="lossweave")
class Gradients:
    """Logs `<term>_grad_norm` and `<term>_grad_cos` every `every` training steps.

    Args:
        every: measure on the steps whose count (0 for the first step) is a multiple of `every`.

    >>> gradients(every=100).logged_names(["mse", "kl"])
    ['mse_grad_norm', 'mse_grad_cos', 'kl_grad_norm', 'kl_grad_cos']
    """

    def __init__(self, every: int = 1):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"gradients(every=...) takes a positive integer; got {every!r}.")
        self.every = every

    def logged_names(self, terms) -> list:
        return [f"{name}_{kind}" for name in terms for kind in ("grad_norm", "grad_cos")]

    def due(self, step):
        """True on a step (counted before it runs) where the gradients are measured."""
        return ops.equal(ops.mod(step, self.every), 0)

    def measure(self, term_grads, grads):
        """`[norm_0, cos_0, norm_1, cos_1, ...]` from each term's gradient and the total one."""
        total = ops.sqrt(squared_norm(grads))
        measured = []
        for term in term_grads:
            norm = ops.sqrt(squared_norm(term))
            measured += [norm, ops.divide_no_nan(inner(term, grads), norm * total)]
        return ops.cast(ops.stack(measured), "float32")

    def nothing(self, terms: int):
        """What a step without a measurement hands on: zeros, ignored by the log."""
        return ops.zeros((2 * terms,), "float32")

    def get_config(self):
        return {"every": self.every}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"gradients(every={self.every})"


gradients = Gradients


class GradientLog(keras.metrics.Metric):
    """The epoch mean of the measured steps' values; the last measured ones when none was.

    >>> log = GradientLog(["mse_grad_norm"])
    >>> log.update_state(ops.array([2.0]), True)
    >>> log.reset_state()  # a new epoch, nothing measured yet: the last value
    >>> log.update_state(ops.array([5.0]), False)
    >>> float(log.result()["mse_grad_norm"])
    2.0
    """

    def __init__(self, names):
        super().__init__(name="lw_gradients")
        self.names = list(names)
        size = (len(self.names),)
        self.totals = self.add_variable(shape=size, initializer="zeros", dtype="float32", name="totals")
        self.last = self.add_variable(shape=size, initializer="zeros", dtype="float32", name="last")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="count")

    def update_state(self, values, measured):
        measured = ops.cast(measured, "float32")
        values = ops.stop_gradient(values)
        self.totals.assign_add(values * measured)
        self.count.assign_add(measured)
        self.last.assign(ops.where(measured > 0, values, self.last.value))

    def reset_state(self):  # `last` outlives the epoch
        self.totals.assign(ops.zeros(self.totals.shape, "float32"))
        self.count.assign(0.0)

    def result(self):
        means = ops.where(self.count > 0, ops.divide_no_nan(self.totals, self.count), self.last.value)
        return {name: means[i] for i, name in enumerate(self.names)}
