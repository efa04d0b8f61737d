"""Stops training at the first step where a term is NaN or infinite, naming the term and the step.

Every term is logged, so a non-finite term shows in the batch logs that Keras hands to callbacks
(its running epoch mean turns non-finite at that very step). `lw.Model.fit` puts this guard first
among the callbacks, so no checkpoint callback saves the broken weights of that step.

>>> guard = NonFiniteGuard(["mse", "kl"])
>>> guard.check({"loss": float("nan"), "mse": 0.5, "kl": float("inf")}, step=7, phase="training")
Traceback (most recent call last):
...
lossweave.guard.NonFiniteTermError: training step 7: term 'kl' is inf. ...
"""

import math

import keras


class NonFiniteTermError(FloatingPointError):
    """A term of the objective became NaN or infinite."""


def _describe(value):
    return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")


class NonFiniteGuard(keras.callbacks.Callback):
    """Raises `NonFiniteTermError` at the first batch whose loss or terms are not finite.

    It is `async_safe`, so on JAX Keras keeps dispatching batch callbacks off the training thread
    and the check costs no device sync of its own; the error then surfaces a step or two later,
    still naming the step where the term broke.

    Args:
        term_names: the objective's term names, looked up in the batch logs.
    """

    async_safe = True

    def __init__(self, term_names):
        super().__init__()
        self.term_names = list(term_names)
        self._first_step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._first_step = int(keras.ops.convert_to_numpy(self.model.step.value))

    def on_train_batch_end(self, batch, logs=None):
        self.check(logs or {}, step=self._first_step + batch, phase="training")

    def on_test_batch_end(self, batch, logs=None):
        self.check(logs or {}, step=batch, phase="validation")

    def check(self, logs, step, phase):
        if "loss" not in logs or math.isfinite(float(logs["loss"])):
            return
        bad = [name for name in self.term_names if not math.isfinite(float(logs.get(name, 0.0)))]
        what = ", ".join(f"term {name!r} is {_describe(float(logs[name]))}" for name in bad)
        raise NonFiniteTermError(
            f"{phase} step {step}: {what or 'the loss is ' + _describe(float(logs['loss']))}. "
            "Training stopped before any later callback (e.g. a checkpoint) saw this step. "
            "Check the inputs of the term(s) at this step (log-of-zero, division by zero, "
            "exp overflow); lw.losses has numerically stable versions of common terms. "
            "To train on regardless, compile with check_finite=False."
        )
