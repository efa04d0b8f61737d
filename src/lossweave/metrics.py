"""Metrics from any function with injected arguments, aggregated exactly over an epoch.

`metric(fn, name)` turns a function whose parameters are filled by name (`y_true`, `y_pred`, `x`,
`sample_weight`, `mask`, `step`, `epoch`, `training`, tap names) into a `keras.metrics.Metric`. How batches
combine is declared once per aggregation kind (`AGGREGATIONS`): the state variables, how they
combine across batches, what one batch adds and how the result follows from the state. So the value
after N batches equals the value computed once on the concatenated data.

Metrics compose with arithmetic: `tp / predicted_positive` is a metric whose result is the ratio
of the two final results (exact, unlike a mean of per-batch ratios).

>>> import numpy as np
>>> from keras import ops
>>> m = metric(lambda y_true, y_pred: ops.abs(y_pred - y_true), name="mae")
>>> m.update_state(np.zeros((2, 1)), np.array([[1.0], [3.0]]))
>>> m.update_state(np.zeros((1, 1)), np.array([[8.0]]))
>>> round(float(m.result()), 4)  # (1 + 3 + 8) / 3
4.0
"""

import itertools

import keras
from keras import ops

from lossweave.aggregations import AGGREGATIONS, COMBINE
from lossweave.composed import Arithmetic, ComposedMetric
from lossweave.injection import Injector
from lossweave.replicas import reduce_across_replicas
from lossweave.serialization import deserialize_function, serialize_function
from lossweave.step import for_output
from lossweave.trackers import DIRECTIONS

# The names a metric can ask for inside a plain `keras.Model`, which calls `update_state`.
_PLAIN_KERAS_NAMES = ("y_true", "y_pred", "sample_weight")


def _float(x):
    return ops.cast(x, "float32")


def _as_tensor(x):
    """A tensor; floating point data (numpy's float64 included) as float32."""
    if x is None:
        return None
    x = ops.convert_to_tensor(x)
    is_float = keras.backend.is_float_dtype(keras.backend.standardize_dtype(x.dtype))
    return _float(x) if is_float else x


# -- the metric classes ----------------------------------------------------------------------------

_KEYS = itertools.count()


@keras.saving.register_keras_serializable(package="lossweave")
class InjectedMetric(Arithmetic, keras.metrics.Metric):
    """A `keras.metrics.Metric` computed by `fn` with injected arguments; build it with `metric`.

    In an `lw.Model`, `compile` calls `resolve(available_names)` and every train/test step calls
    `update_from_tensors(tensors)`; in a plain `keras.Model`, Keras calls
    `update_state(y_true, y_pred, sample_weight)`. Its state holds the aggregation's variables
    (float32).

    >>> m = InjectedMetric(lambda y_pred: y_pred, name="peak", aggregation="max")
    >>> m.update_state([[0.0], [0.0]], [[1.0], [5.0]])
    >>> round(float(m.result()), 4)
    5.0
    """

    def __init__(self, fn, name, aggregation="mean", bind=None, output=None, direction="down",
                 **kwargs):
        if direction not in DIRECTIONS:
            raise ValueError(
                f"metric {name!r}: direction must be 'down' (lower is better) or 'up', "
                f"got {direction!r}."
            )
        if aggregation not in AGGREGATIONS:
            raise ValueError(
                f"metric {name!r}: aggregation must be one of {tuple(AGGREGATIONS)}, "
                f"got {aggregation!r}."
            )
        if not isinstance(name, str) or not name:
            raise ValueError(f"metric: name must be a non-empty string, got {name!r}.")
        super().__init__(name=name, dtype="float32")
        self.fn = fn
        self.aggregation = aggregation
        self.bind = dict(bind or {})
        self.output = output
        self.direction = direction
        self._direction = direction  # read by Keras callbacks in mode="auto"
        self.kwargs = kwargs
        self._injector = Injector(fn, bind=self.bind, fixed=kwargs, owner=self._owner)
        self._resolved_for = None
        self._key = next(_KEYS)  # copies share it, so an expression updates each metric once
        self._aggregation = AGGREGATIONS[aggregation]
        self._combine = {state: COMBINE[how] for state, how in self._aggregation.states.items()}
        self._state = {
            state: self.add_variable(
                shape=(),
                initializer=keras.initializers.Constant(combine.initial),
                dtype="float32",
                # A summed state is summed when read across replicas; any other is reduced
                # across replicas at every step, so every replica holds the global value.
                aggregation="sum" if combine.across_replicas == "sum" else "only_first_replica",
                name=state,
            )
            for state, combine in self._combine.items()
        }

    @property
    def _owner(self):
        return f"metric {self.name!r}"

    def resolve(self, available, late: bool = False):
        """Checks, once, that every argument of `fn` is among the `available` names.

        With `late`, a name not yet available (a tap of a subclassed model) is resolved at the
        first step instead.
        """
        available = tuple(available)
        self._injector.owner = self._owner
        self._injector.resolve(available, late=late)
        self._resolved_for = available

    def update_from_tensors(self, tensors):
        """Adds one step to the state; `tensors` holds `y_true, y_pred, x, ...` and the taps."""
        tensors = for_output(tensors, self.output, self._owner)
        value = self._injector(tensors)
        if not isinstance(value, (tuple, list)):
            value = _float(value)
        batch = self._aggregation.batch(value, tensors, self._owner)
        for state, variable in self._state.items():
            combine = self._combine[state]
            statistic = reduce_across_replicas(ops.stop_gradient(_float(batch[state])),
                                               combine.across_replicas)
            variable.assign(combine.local(variable, statistic))

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Keras's protocol (a plain `keras.Model`): only `y_true, y_pred, sample_weight` exist."""
        if self._resolved_for != _PLAIN_KERAS_NAMES:
            try:
                self.resolve(_PLAIN_KERAS_NAMES)
            except ValueError as e:
                raise ValueError(
                    f"{e} A plain keras.Model gives metrics only y_true, y_pred and "
                    "sample_weight; use lw.Model for x, mask, step, epoch, training and taps."
                ) from None
        tensors = {"y_true": y_true, "y_pred": y_pred, "sample_weight": sample_weight}
        self.update_from_tensors({k: _as_tensor(v) for k, v in tensors.items()})

    def reset_state(self):
        for state, variable in self._state.items():
            variable.assign(ops.full((), self._combine[state].initial, dtype="float32"))

    def result(self):
        return self._aggregation.result({k: _float(v) for k, v in self._state.items()})

    def _copy(self):
        """A fresh metric with the same definition (and identity key), its own zero state."""
        copy = InjectedMetric(
            self.fn, self.name, self.aggregation, self.bind, self.output, self.direction,
            **self.kwargs
        )
        copy._key = self._key
        return copy

    def get_config(self):
        return {
            "fn": serialize_function(self.fn, self._owner),
            "name": self.name,
            "aggregation": self.aggregation,
            "bind": self.bind,
            "output": self.output,
            "direction": self.direction,
            "kwargs": self.kwargs,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        fn = deserialize_function(config.pop("fn"), owner=f"metric {config['name']!r}")
        return cls(fn, **config.pop("kwargs"), **config)


def metric(fn, name: str, aggregation: str = "mean", bind=None, output=None,
           direction: str = "down", **kwargs) -> InjectedMetric:
    """A Keras metric from any function whose parameters are injected by name, as for `lw.Term`.

    Args:
        fn: a function of injectable names (`y_true`, `y_pred`, `x`, `sample_weight`, `mask`,
            `step`, `epoch`, `training`) and tap names of the `lw.Model`. In a plain `keras.Model` only
            `y_true`, `y_pred` and `sample_weight` exist.
        name: the name the metric is logged under.
        aggregation: how batches combine; with `w` the sample weight (1 if none):

            - `"mean"`: per-sample values `v` (other axes averaged per sample):
              `sum(v * w) / sum(w)`. A scalar `v` counts as one value for the whole batch, weighted
              by the batch size. A sample weight with more axes is averaged per sample.
            - `"masked_mean"`: per-element values `v`, element weights `m = mask * w` (the step's
              mask and sample weight broadcast to `v`): `sum(v * m) / sum(m)`, the mean over all
              unmasked elements (not a mean of batch means). For other weights, return them as a
              `"ratio"`: `(sum(v * m, axis=1), sum(m, axis=1))`.
            - `"ratio"`: a pair `(numerator, denominator)`, each per-sample (other axes summed) or
              scalar: `sum(num * w) / sum(den * w)`; a scalar is added as it is.
            - `"sum"`: `sum(v * w)` over the data (all axes); a scalar is added as it is.
            - `"max"` / `"min"`: the largest / smallest element whose sample weight is not 0.
            - `"last"`: the `"mean"` of the latest batch only.

            A ratio whose denominator is 0 is 0, as in Keras's own metrics. The sample weights
            always apply, whether or not `fn` reads `sample_weight` too.
        bind: `{parameter: name}` renames, e.g. `bind={"activation": "layer1"}`.
        output: for a multi-output model, the output (dict key or list index) read as `y_true`,
            `y_pred`, `sample_weight` and `mask`.
        direction: `"down"` (lower is better, the default) or `"up"`: which way Keras callbacks
            in `mode="auto"` (`EarlyStopping`, `ModelCheckpoint`, `ReduceLROnPlateau`) count as
            an improvement.
        **kwargs: fixed keyword arguments passed to `fn`.

    Returns:
        An `InjectedMetric`, for `compile(metrics=[...])` of an `lw.Model` or a `keras.Model`.
        Metrics combine with `+ - * /` (see `ComposedMetric`).

    >>> import numpy as np
    >>> from keras import ops
    >>> acc = metric(lambda y_true, y_pred: ops.cast(ops.equal(y_true, y_pred > 0.5), "float32"),
    ...              name="acc", aggregation="masked_mean")
    >>> acc.update_state(np.array([[1, 0, 1]]), np.array([[0.9, 0.2, 0.1]]))
    >>> acc.update_state(np.array([[1]]), np.array([[0.7]]))
    >>> round(float(acc.result()), 4)  # 3 right out of 4 elements
    0.75
    """
    return InjectedMetric(
        fn, name, aggregation=aggregation, bind=bind, output=output, direction=direction, **kwargs
    )


__all__ = ["metric", "InjectedMetric", "ComposedMetric"]
