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

import bisect
import math
import threading

import keras


class NonFiniteTermError(FloatingPointError):
    """A term of the objective became NaN or infinite."""


def _describe(value):
    return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")


class _InOrder:
    """Runs end-of-batch checks in the order the batches began, and keeps the first error.

    Keras dispatches the batch-end callbacks of async-safe callbacks to a thread pool, where they
    may run in any order; batch begins are called in order on the training thread.
    """

    def __init__(self):
        self._turn = threading.Condition()
        self._begun = []
        self._done = 0
        self.error = None

    def begin(self, batch):
        with self._turn:
            if self._begun and batch <= self._begun[-1]:  # a new epoch or evaluation
                self._begun, self._done, self.error = [], 0, None
            self._begun.append(batch)

    def end(self, batch, check):
        with self._turn:
            position = max(bisect.bisect_right(self._begun, batch) - 1, 0)
            self._turn.wait_for(lambda: self._done >= position or not self._begun)
            try:
                if self.error is None:
                    check()
            except NonFiniteTermError as error:
                self.error = error
            finally:
                self._done += 1
                self._turn.notify_all()
        if self.error is not None:
            raise self.error


class NonFiniteGuard(keras.callbacks.Callback):
    """Raises `NonFiniteTermError` at the first batch whose loss or terms are not finite.

    It is `async_safe`, so on JAX Keras keeps dispatching batch callbacks off the training thread
    and the check costs no device sync of its own; the error then surfaces a step or two later,
    still naming the first step where a term broke (the checks run in the order of the steps).

    Args:
        term_names: the objective's term names, looked up in the batch logs.
    """

    async_safe = True

    def __init__(self, term_names):
        super().__init__()
        self.term_names = list(term_names)
        self._first_step = 0
        self._train, self._test = _InOrder(), _InOrder()

    def on_epoch_begin(self, epoch, logs=None):
        self._first_step = int(keras.ops.convert_to_numpy(self.model.step))

    def on_train_batch_begin(self, batch, logs=None):
        self._train.begin(batch)

    def on_test_batch_begin(self, batch, logs=None):
        self._test.begin(batch)

    def on_train_batch_end(self, batch, logs=None):
        step = self._first_step + batch
        self._train.end(batch, lambda: self.check(logs or {}, step=step, phase="training"))

    def on_test_batch_end(self, batch, logs=None):
        self._test.end(batch, lambda: self.check(logs or {}, step=batch, phase="validation"))

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
