"""`lw.Model`: a functional Keras model whose objective and metrics can read named intermediate tensors.

The functional graph computes the declared outputs and the taps in one forward pass. While Keras's
train step, test step and symbolic build run, `call` returns `(outputs, taps)` so that
`compute_loss` and `compute_metrics` see the taps; everywhere else (`model(x)`, `predict`, export)
it returns the declared outputs only.

>>> import keras, numpy as np
>>> import lossweave as lw
>>> inputs = keras.Input((4,))
>>> hidden = keras.layers.Dense(3, activation="relu")(inputs)
>>> model = lw.Model(inputs, keras.layers.Dense(1)(hidden), taps={"hidden": hidden})
>>> model.compile(optimizer="sgd", loss=lw.Objective({
...     "mse": "mean_squared_error",
...     "activity": lw.Term(lambda hidden: keras.ops.mean(hidden ** 2), weight=1e-3)}))
>>> history = model.fit(np.ones((8, 4)), np.ones((8, 1)), epochs=1, verbose=0)
>>> sorted(history.history)
['activity', 'loss', 'mse']
>>> model.predict(np.ones((2, 4)), verbose=0).shape
(2, 1)
"""

import contextlib

import keras
from keras import ops
from keras.src.backend.common.masking import get_keras_mask
from keras.src.losses.loss import scale_loss_for_distribution

from lossweave.guard import NonFiniteGuard
from lossweave.injection import INJECTABLE
from lossweave.objective import Objective


class _Compiled:
    """What `compile` adds, kept outside Keras's automatic tracking of attributes."""

    def __init__(self, objective=None, metrics=(), check_finite=True, config=None):
        self.objective = objective
        self.metrics = list(metrics)
        self.check_finite = check_finite
        self.config = config or {}


def _is_lw_metric(metric):
    return hasattr(metric, "update_from_tensors")


def _metric_name(metric):
    if isinstance(metric, str):
        return metric
    return getattr(metric, "name", None) or getattr(metric, "__name__", None)


def _masks(outputs):
    if isinstance(outputs, dict):
        return {key: get_keras_mask(value) for key, value in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [get_keras_mask(value) for value in outputs]
    return get_keras_mask(outputs)


class _EpochCounter(keras.callbacks.Callback):
    """Writes the current epoch into the model's epoch variable (read by terms asking for `epoch`)."""

    def __init__(self, variable):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)


@keras.saving.register_keras_serializable(package="lossweave")
class Model(keras.Model):
    """A functional `keras.Model` with named taps on intermediate tensors.

    Args:
        inputs, outputs: as for a functional `keras.Model` (outputs may be a tensor, list or dict).
        taps: `{name: tensor}` intermediate tensors of the same graph that objectives and metrics
            can ask for by name.

    The model owns a non-trainable `step` counter, advanced once per training step and saved with
    the model, from which schedules are computed inside the compiled step.
    """

    def __init__(self, *args, taps=None, **kwargs):
        inputs = args[0] if args else kwargs.pop("inputs")
        outputs = args[1] if len(args) > 1 else kwargs.pop("outputs")
        if kwargs.pop("packed_taps", False):  # from_config: outputs is [outputs, taps]
            outputs, taps = outputs
        taps = dict(taps or {})
        for name in taps:
            if not isinstance(name, str) or not name.isidentifier() or name in INJECTABLE:
                raise ValueError(
                    f"Tap name {name!r} must be an identifier and not one of {INJECTABLE}."
                )
        super().__init__(inputs, [outputs, taps], **kwargs)
        self.output_names = self.output_names[: len(keras.tree.flatten(outputs))]
        self.tap_names = tuple(taps)
        self._taps_visible = False
        self._training_step = False
        self._lw = _Compiled()
        self.step = self._counter("step")
        self.epoch = self._counter("epoch")

    def _counter(self, name):
        return self.add_weight(
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",  # one count per step, whatever the replicas
            name=name,
        )

    # -- one forward pass, two views of it ------------------------------------------------------

    def call(self, inputs, training=None, mask=None, **kwargs):
        outputs, taps = super().call(inputs, training=training, mask=mask, **kwargs)
        if not self._taps_visible:
            return outputs
        # The counters travel with the taps: on JAX, compute_metrics cannot read model variables.
        # Copies: on TF and torch `.value` is live and compute_loss advances the step before
        # compute_metrics runs; both must see the step this batch trained at.
        return outputs, dict(taps, step=ops.copy(self.step.value), epoch=ops.copy(self.epoch.value))

    def compute_output_spec(self, inputs, training=None, mask=None):
        outputs, taps = super().compute_output_spec(inputs, training=training, mask=mask)
        if not self._taps_visible:
            return outputs
        counters = {name: keras.KerasTensor((), "int32") for name in ("step", "epoch")}
        return outputs, dict(taps, **counters)

    @contextlib.contextmanager
    def _showing_taps(self, training=False):
        previous = self._taps_visible, self._training_step
        self._taps_visible, self._training_step = True, training
        try:
            yield
        finally:
            self._taps_visible, self._training_step = previous

    def train_step(self, *args, **kwargs):
        with self._showing_taps(training=True):
            return super().train_step(*args, **kwargs)

    def test_step(self, *args, **kwargs):
        with self._showing_taps():
            return super().test_step(*args, **kwargs)

    def _symbolic_build(self, *args, **kwargs):
        with self._showing_taps():
            return super()._symbolic_build(*args, **kwargs)

    def _split(self, y_pred):
        """`(outputs, taps and counters)` inside the train/test step, `(outputs, counters)` outside."""
        if self._taps_visible:
            return y_pred
        return y_pred, {"step": self.step.value, "epoch": self.epoch.value}

    # -- compile ----------------------------------------------------------------------------------

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, check_finite=True, **kwargs):
        """As `keras.Model.compile`; `loss` may be an `lw.Objective`, `metrics` may hold `lw.metric`s.

        With `check_finite` (the default), `fit` stops at the first step where a term of the
        objective is NaN or infinite, with an error naming the term(s) and the step.
        """
        objective = loss if isinstance(loss, Objective) else None
        if isinstance(metrics, dict):  # per-output Keras metrics, as Keras takes them
            keras_metrics, lw_metrics, names = metrics, [], keras.tree.flatten(metrics)
        else:
            names = list(metrics or [])
            keras_metrics = [m for m in names if not _is_lw_metric(m)] or None
            lw_metrics = [m for m in names if _is_lw_metric(m)]
        super().compile(
            optimizer=optimizer, loss=None if objective else loss, metrics=keras_metrics, **kwargs
        )
        available = list(INJECTABLE) + list(self.tap_names)
        for metric in lw_metrics:
            metric.resolve(available)
        if objective is not None:
            reserved = {"loss"} | {_metric_name(m) for m in names}
            objective.build(available, reserved=reserved)
        config = {"loss": loss, "metrics": metrics, "check_finite": check_finite}
        self._lw = _Compiled(objective, lw_metrics, check_finite, config)

    @property
    def metrics(self):
        metrics = super().metrics
        lw = getattr(self, "_lw", None)
        if lw is None or not self.compiled:
            return metrics
        trackers = lw.objective.trackers if lw.objective is not None else []
        return metrics[:1] + trackers + metrics[1:] + lw.metrics

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config.update(keras.saving.serialize_keras_object(self._lw.config))
        return config

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # -- the objective inside the step ----------------------------------------------------------

    def _step_tensors(self, x, y, outputs, taps, sample_weight, training):
        tensors = dict(taps)
        tensors.update(
            x=x,
            y_true=y,
            y_pred=outputs,
            sample_weight=sample_weight,
            mask=_masks(outputs),
            training=training,
        )
        return tensors

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        outputs, taps = self._split(y_pred)
        objective = self._lw.objective
        if objective is None:  # Keras's own losses, already scaled for distribution
            total = super().compute_loss(x, y, outputs, sample_weight, training=training)
        else:
            # Under tf.distribute each replica's loss is divided by the number of replicas, as
            # Keras scales its own losses; the trainer unscales it again for the logged `loss`.
            total = scale_loss_for_distribution(
                self._objective_loss(x, y, outputs, taps, sample_weight, training)
            )
        if training:
            self.step.assign_add(1)
        return total

    def _objective_loss(self, x, y, outputs, taps, sample_weight, training):
        objective = self._lw.objective
        tensors = self._step_tensors(x, y, outputs, taps, sample_weight, training)
        total, values, weights = objective.compute(tensors)
        batch_size = ops.shape(next(t for t in keras.tree.flatten(x) if t is not None))[0]
        objective.track(values, weights, batch_size)
        for extra in self.losses:  # add_loss() and regularizers, as Keras adds them
            total = total + ops.cast(ops.sum(extra), total.dtype)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        outputs, taps = self._split(y_pred)
        if self._lw.metrics:
            tensors = self._step_tensors(x, y, outputs, taps, sample_weight, self._training_step)
            for metric in self._lw.metrics:
                metric.update_from_tensors(tensors)
        return super().compute_metrics(x, y, outputs, sample_weight=sample_weight)

    def fit(self, *args, callbacks=None, **kwargs):
        guards = []
        if self._lw.objective is not None and self._lw.check_finite:
            guards.append(NonFiniteGuard(self._lw.objective.terms))
        callbacks = guards + list(callbacks or []) + [_EpochCounter(self.epoch)]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    # -- saving -----------------------------------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config["packed_taps"] = True
        return config
