"""`lw.Model` and `lw.Sequential`: Keras models whose objective and metrics read named taps.

Three styles, one mechanism:

- functional: `lw.Model(inputs, outputs, taps={name: tensor})`, or a graph with `lw.Tap` layers;
- subclassed: `class VAE(lw.Model)` with its own `call`, taps from `lw.Tap` layers or `lw.tap(...)`;
- `lw.Sequential([...])` with `lw.Tap` layers in the stack.

Inside the model's own train step, test step and symbolic build, its `call` returns the declared
outputs together with the taps recorded in that same forward pass (see `lossweave.taps`);
`compute_loss` and `compute_metrics` split them again. Everywhere else (`model(x)`, `predict`,
export) `call` returns the declared outputs only. The model owns a non-trainable `step` counter,
advanced once per training step and saved with the model, from which schedules are computed
inside the compiled step.

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

from __future__ import annotations

import threading

import keras
from keras import ops

from lossweave import taps as taps_module
from lossweave._gradients import Stash
from lossweave._gradients import train_step as per_term_train_step
from lossweave._keras import (
    Functional,
    MetricGroup,
    flatten_layers,
    forget_compiled,
    scale_loss_for_distribution,
    unlocked_state,
)
from lossweave.diagnostics import GradientLog
from lossweave.guard import NonFiniteGuard
from lossweave.objective import Objective
from lossweave.step import INJECTABLE, output_keys, step_tensors
from lossweave.trackers import TermTracker

# A functional lw.Model's graph computes the declared outputs and the `taps=` tensors together.
_OUTPUTS, _TAPS = "__lw_outputs__", "__lw_taps__"
_graphs = threading.local()  # ids of the functional lw models whose graph this thread is running


class _Compiled:
    """What `compile` adds, kept outside Keras's automatic tracking of attributes."""

    def __init__(self, objective=None, trackers=None, metrics=(), check_finite=True, config=None):
        self.objective = objective
        self.trackers = trackers
        self.metrics = list(metrics)
        self.metric_group = MetricGroup(self.metrics, name="lw_metrics") if metrics else None
        self.check_finite = check_finite
        self.config = config or {}
        # Balancer and gradient diagnostics (see `Model._setup_gradients`, `lossweave._gradients`).
        self.balance_state = None  # the balancer's variables of this model
        self.balanced_index = []  # the positions of the balanced terms in the objective
        self.balancer = None  # a gradient-based balancer
        self.diagnostics = None
        self.gradient_log = None
        self.stash = None  # what compute_loss leaves for the per-term gradients
        self.pending = None  # what the diagnostics measured, for compute_metrics to log
        self.evaluating = False  # inside evaluate (fit's validation too): no gradient log

    @property
    def per_term_gradients(self) -> bool:
        return self.diagnostics is not None or self.balancer is not None


class _Owned:
    """Variables created by `compile` (a balancer's state), by name, kept across recompiles."""

    def __init__(self):
        self.variables = {}


def _is_lw_metric(metric):
    return hasattr(metric, "update_from_tensors")


def _metric_name(metric):
    if isinstance(metric, str):
        return metric
    return getattr(metric, "name", None) or getattr(metric, "__name__", None)


def _functional_arguments(args, kwargs):
    """Keras's rule: `(inputs, outputs)` positionally or by keyword make a functional model."""
    return len(args) == 2 or (len(args) == 1 and "outputs" in kwargs) or (
        "inputs" in kwargs and "outputs" in kwargs
    )


class _EpochCounter(keras.callbacks.Callback):
    """Writes the current epoch into the model's epoch variable (read by terms asking for `epoch`)."""

    def __init__(self, variable):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)


@keras.saving.register_keras_serializable(package="lossweave")
class Model(keras.Model):
    """A `keras.Model` whose objective and metrics can read named intermediate tensors (taps).

    `lw.Model(inputs, outputs, taps={name: tensor})` builds a functional model (outputs may be a
    tensor, list or dict; `lw.Tap` layers in the graph are taps too). Subclassing `lw.Model` with
    your own `__init__(**kwargs)` and `call(self, inputs, training=False)` builds a subclassed
    model, the keras.io way; its taps come from `lw.Tap` layers and `lw.tap(...)` calls met while
    `call` runs, at any depth.

    Args:
        inputs, outputs: as for a functional `keras.Model`.
        taps: `{name: tensor}` intermediate tensors of the same graph, by name.

    >>> import keras, numpy as np
    >>> import lossweave as lw
    >>> class Net(lw.Model):
    ...     def __init__(self, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.hidden, self.tap, self.head = keras.layers.Dense(4), lw.Tap("h"), keras.layers.Dense(1)
    ...     def call(self, x, training=False):
    ...         return self.head(self.tap(self.hidden(x)))
    >>> net = Net()
    >>> net.compile(optimizer="sgd", loss=lw.Objective({
    ...     "mse": "mse", "activity": lw.Term(lambda h: keras.ops.mean(h ** 2), weight=0.1)}))
    >>> sorted(net.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0).history)
    ['activity', 'loss', 'mse']
    >>> net.predict(np.ones((2, 3)), verbose=0).shape
    (2, 1)
    """

    def __new__(cls, *args, **kwargs):
        if cls is Model and _functional_arguments(args, kwargs):
            return super().__new__(FunctionalModel, *args, **kwargs)
        return super().__new__(cls, *args, **kwargs)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("call")
        if call is not None and not getattr(call, "_lw_tapping", False):
            cls.call = taps_module.tapping(call)

    def __init__(self, *args, **kwargs):
        if _functional_arguments(args, kwargs):
            raise TypeError(
                f"{type(self).__name__} passes inputs and outputs to lw.Model.__init__. Build the "
                "functional model with lw.Model(inputs, outputs, taps=...), or write the model "
                "as a subclass with its own call()."
            )
        super().__init__(*args, **kwargs)
        self._setup_lossweave()

    def _setup_lossweave(self):
        self._lw = _Compiled()
        self._lw_owned = _Owned()
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

    @property
    def tap_names(self) -> tuple:
        """The taps known before the model runs: `taps=` names and `lw.Tap` layers, any depth."""
        return tuple(taps_module.static_tap_names(flatten_layers(self), self.name))

    @property
    def _taps_known_statically(self) -> bool:
        """Functional and Sequential graphs hold every tap; a subclassed `call` may add more."""
        return False

    def _unpack(self, result):
        """`(outputs, taps the graph computed)` from what the wrapped `call` returned."""
        return result, None

    def _tapped(self, outputs, taps):
        # The counters travel with the taps: on JAX, compute_metrics cannot read model variables.
        # Copies: on TF and torch `.value` is live and compute_loss advances the step before
        # compute_metrics runs; both must see the step this batch trained at.
        # Without lw metrics nothing reads them after the step advances: no copies to make.
        copy = ops.copy if self._lw.metrics else (lambda value: value)
        counters = {"step": copy(self.step.value), "epoch": copy(self.epoch.value)}
        return taps_module.Tapped(outputs, dict(taps, **counters))

    def _split(self, y_pred):
        """`(outputs, taps and counters)`; outside the model's own step there are no taps."""
        if isinstance(y_pred, taps_module.Tapped):
            return y_pred.outputs, y_pred.taps
        return y_pred, {"step": self.step.value, "epoch": self.epoch.value}

    def train_step(self, *args, **kwargs):
        with taps_module.stepping(self, training=True):
            if self._lw.per_term_gradients:  # decided once, when the step is traced
                return per_term_train_step(self, *args, **kwargs)
            return super().train_step(*args, **kwargs)

    def test_step(self, *args, **kwargs):
        with taps_module.stepping(self, training=False):
            return super().test_step(*args, **kwargs)

    # Private Keras API (see lossweave._keras.SYMBOLIC_BUILD): the symbolic build before `fit`
    # runs the forward pass, compute_loss and compute_metrics as a step does.
    def _symbolic_build(self, *args, **kwargs):
        with taps_module.stepping(self, training=False):
            return super()._symbolic_build(*args, **kwargs)

    # -- compile ----------------------------------------------------------------------------------

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, check_finite=True,
                diagnostics=None, **kwargs):
        """As `keras.Model.compile`; `loss` may be an `lw.Objective`, `metrics` may hold `lw.metric`s.

        With `check_finite` (the default), `fit` stops at the first step where a term of the
        objective is NaN or infinite, with an error naming the term(s) and the step.
        `diagnostics=lw.diagnostics.gradients(every=N)` logs each term's gradient norm and cosine.
        """
        objective = loss if isinstance(loss, Objective) else None
        if diagnostics is not None and objective is None:
            raise ValueError(
                "diagnostics= measures the terms of an objective: pass loss=lw.Objective(...)."
            )
        if isinstance(metrics, dict):  # per-output Keras metrics, as Keras takes them
            keras_metrics, lw_metrics, names = metrics, [], keras.tree.flatten(metrics)
        else:
            names = list(metrics or [])
            keras_metrics = [m for m in names if not _is_lw_metric(m)] or None
            lw_metrics = [m for m in names if _is_lw_metric(m)]
        forget_compiled(self)
        super().compile(
            optimizer=optimizer, loss=None if objective else loss, metrics=keras_metrics, **kwargs
        )
        available = list(INJECTABLE) + list(self.tap_names)
        late = not self._taps_known_statically
        outputs = self._declared_output_keys()
        for metric in lw_metrics:
            metric.resolve(available, late=late)
        trackers = None
        if objective is not None:
            reserved = {"loss"} | {_metric_name(m) for m in names}
            logged = objective.build(available, reserved=reserved, late=late, outputs=outputs)
            trackers = TermTracker(logged)
        config = {"loss": loss, "metrics": metrics, "check_finite": check_finite}
        if diagnostics is not None:
            config["diagnostics"] = diagnostics
        self._lw = _Compiled(objective, trackers, lw_metrics, check_finite, config)
        if objective is not None:
            self._setup_gradients(objective, diagnostics, reserved | set(logged))

    def _setup_gradients(self, objective, diagnostics, taken):
        """The balancer's state, and the log of the diagnostics (whose names must be free)."""
        lw, names = self._lw, list(objective.terms)
        balancer = objective.balance
        if balancer is not None:
            lw.balance_state = balancer.build(self._owned_variable, len(objective.balanced))
            lw.balanced_index = [names.index(name) for name in objective.balanced]
            lw.balancer = balancer if balancer.uses_gradients else None
        if diagnostics is not None:
            logged = diagnostics.logged_names(names)
            clashes = sorted(set(logged) & taken)
            if clashes:
                raise ValueError(
                    f"diagnostics log {', '.join(clashes)}, a name already logged. Rename the term."
                )
            lw.diagnostics, lw.gradient_log = diagnostics, GradientLog(logged)

    def _owned_variable(self, name, shape, initializer, trainable):
        """A variable of the model made by `compile`; one of the same name and shape is reused."""
        variable = self._lw_owned.variables.get(name)
        if variable is None or tuple(variable.shape) != tuple(shape):
            with unlocked_state(self):
                variable = self.add_weight(
                    shape=shape, initializer=initializer, trainable=trainable, name=name
                )
            self._lw_owned.variables[name] = variable
        return variable

    def _declared_output_keys(self):
        """The output keys of a multi-output model when known before it runs, else None."""
        return None

    @property
    def metrics(self):
        metrics = super().metrics
        lw = self.__dict__.get("_lw")
        if lw is None or not self.compiled:
            return metrics
        head = [lw.trackers] if lw.trackers is not None else []
        if lw.gradient_log is not None and not lw.evaluating:  # measured in training only
            head.append(lw.gradient_log)
        tail = [lw.metric_group] if lw.metric_group is not None else []
        return metrics[:1] + head + metrics[1:] + tail

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

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        outputs, taps = self._split(y_pred)
        objective = self._lw.objective
        if objective is None:  # Keras's own losses, already scaled for distribution
            total = super().compute_loss(x, y, outputs, sample_weight, training=training)
        else:
            # Under tf.distribute each replica's loss is divided by the number of replicas, as
            # Keras scales its own losses; the trainer unscales it again for the logged `loss`.
            tensors = step_tensors(x, y, outputs, taps, sample_weight, training)
            total, logged, weighted, values = objective.compute_terms(tensors, self._lw.balance_state)
            self._lw.trackers.update(logged, tensors)
            if training and self._lw.per_term_gradients:
                self._lw.stash = Stash(weighted, values, ops.copy(self.step.value))
            for extra in self.losses:  # add_loss() and regularizers, as Keras adds them
                total = total + ops.cast(ops.sum(extra), total.dtype)
            total = scale_loss_for_distribution(total)
        if training:
            self.step.assign_add(1)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        outputs, taps = self._split(y_pred)
        if self._lw.pending is not None:  # measured in this train step (lossweave._gradients)
            self._lw.gradient_log.update_state(*self._lw.pending)
            self._lw.pending = None
        if self._lw.metrics:
            training = taps_module.training(self)
            tensors = step_tensors(x, y, outputs, taps, sample_weight, training)
            for metric in self._lw.metrics:
                metric.update_from_tensors(tensors)
        return super().compute_metrics(x, y, outputs, sample_weight=sample_weight)

    def evaluate(self, *args, **kwargs):
        """As `keras.Model.evaluate`; gradient diagnostics, measured in training, are not logged."""
        evaluating, self._lw.evaluating = self._lw.evaluating, True
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self._lw.evaluating = evaluating

    def fit(self, *args, callbacks=None, **kwargs):
        guards = []
        if self._lw.objective is not None and self._lw.check_finite:
            guards.append(NonFiniteGuard(self._lw.objective.terms))
        if self._lw.balance_state is not None:  # before the user's: a checkpoint saves its update
            objective = self._lw.objective
            guards += objective.balance.callbacks(self._lw.balance_state, objective.balanced)
        callbacks = guards + list(callbacks or []) + [_EpochCounter(self.epoch)]
        return super().fit(*args, callbacks=callbacks, **kwargs)


@keras.saving.register_keras_serializable(package="lossweave")
class FunctionalModel(Model, Functional):
    """The class of `lw.Model(inputs, outputs, taps=...)`: a Keras functional model with taps.

    Its graph computes the declared outputs and the `taps=` tensors in one pass; `model.outputs`,
    `model.output`, `model.output_shape` and every call outside the model's own step show only
    the declared outputs.
    """

    # `*args, **kwargs`: Keras revives and clones a model whose constructor looks functional.
    def __init__(self, *args, taps=None, **kwargs):
        inputs = args[0] if args else kwargs.pop("inputs")
        outputs = args[1] if len(args) > 1 else kwargs.pop("outputs")
        if isinstance(outputs, dict) and set(outputs) == {_OUTPUTS, _TAPS}:  # from_config, clone
            outputs, taps = outputs[_OUTPUTS], outputs[_TAPS]
        taps = {taps_module.check_name(name): tensor for name, tensor in (taps or {}).items()}
        Functional.__init__(self, inputs, {_OUTPUTS: outputs, _TAPS: taps}, **kwargs)
        self._graph_tap_names = tuple(taps)
        self._setup_lossweave()
        self.tap_names  # fails now on two taps of one name

    call = taps_module.tapping(Functional.call)

    def _unpack(self, result):
        return result[_OUTPUTS], result[_TAPS]

    @property
    def tap_names(self) -> tuple:
        layers = taps_module.static_tap_names(flatten_layers(self), self.name)
        names = list(self._graph_tap_names)
        for name in layers:
            if name in names:
                raise ValueError(
                    f"Two taps named {name!r} in model {self.name!r} (taps= and an lw.Tap "
                    "layer). Give each its own name."
                )
            names.append(name)
        return tuple(names)

    @property
    def _taps_known_statically(self) -> bool:
        return True

    def _declared_output_keys(self):
        declared = self._outputs_struct[_OUTPUTS]
        return output_keys(declared) if isinstance(declared, (dict, list, tuple)) else None

    def compute_output_spec(self, *args, **kwargs):
        return super().compute_output_spec(*args, **kwargs)[_OUTPUTS]

    # Private Keras API (see lossweave._keras.RUN_THROUGH_GRAPH): Keras's graph runner reads
    # `self.outputs`, which here shows only the declared outputs; while it runs (a call, a clone)
    # `outputs` is every output of the graph, the taps included.
    def _run_through_graph(self, *args, **kwargs):
        running = _graphs.__dict__.setdefault("models", set())
        running.add(id(self))
        try:
            return super()._run_through_graph(*args, **kwargs)
        finally:
            running.discard(id(self))

    @property
    def outputs(self):
        if id(self) in getattr(_graphs, "models", ()):
            return self._outputs
        return keras.tree.flatten(self._outputs_struct[_OUTPUTS])

    @property
    def output(self):
        return self._outputs_struct[_OUTPUTS]


@keras.saving.register_keras_serializable(package="lossweave")
class Sequential(Model, keras.Sequential):
    """A `keras.Sequential` whose objective and metrics read the `lw.Tap` layers of its stack.

    >>> import keras, numpy as np
    >>> import lossweave as lw
    >>> model = lw.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
    ...                        lw.Tap("hidden"), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss=lw.Objective({
    ...     "mse": "mse", "activity": lw.Term(lambda hidden: keras.ops.mean(hidden), weight=0.1)}))
    >>> sorted(model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0).history)
    ['activity', 'loss', 'mse']
    """

    def __init__(self, layers=None, trainable=True, name=None):
        keras.Sequential.__init__(self, layers, trainable=trainable, name=name)
        self._setup_lossweave()
        self.tap_names  # fails now on two taps of one name

    call = taps_module.tapping(keras.Sequential.call)

    @property
    def _taps_known_statically(self) -> bool:
        return True
