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
import math

import keras
from keras import ops

from lossweave.injection import Injector
from lossweave.objective import for_output
from lossweave.serialization import deserialize_function, serialize_function

# The names a metric can ask for inside a plain `keras.Model`, which calls `update_state`.
_PLAIN_KERAS_NAMES = ("y_true", "y_pred", "sample_weight")

# -- how one batch's statistics are computed ---------------------------------------------------


def _float(x):
    return ops.cast(x, "float32")


def _as_tensor(x):
    """A tensor; floating point data (numpy's float64 included) as float32."""
    if x is None:
        return None
    x = ops.convert_to_tensor(x)
    is_float = keras.backend.is_float_dtype(keras.backend.standardize_dtype(x.dtype))
    return _float(x) if is_float else x


def _rank(x):
    return len(x.shape)


def _batch_size(tensors):
    """The batch size of the step (a scalar tensor): first axis of y_pred, else of x, else 1."""
    for key in ("y_pred", "x", "y_true"):
        for tensor in keras.tree.flatten(tensors.get(key)):
            if tensor is not None and _rank(tensor) > 0:
                return _float(ops.shape(tensor)[0])
    return ops.ones((), "float32")


def _per_sample(values, reduce):
    """Reduces every axis but the batch axis with `reduce` (`ops.mean` or `ops.sum`)."""
    axes = tuple(range(1, _rank(values)))
    return reduce(values, axis=axes) if axes else values


def _fit(weight, values, what, owner):
    """Broadcasts a weight (sample weight or mask) to the shape of `values`, Keras-style."""
    weight = _float(weight)
    while _rank(weight) > _rank(values) and weight.shape[-1] == 1:
        weight = ops.squeeze(weight, axis=-1)
    if _rank(weight) > _rank(values):
        raise ValueError(
            f"{owner}: the {what} has shape {tuple(weight.shape)}, which does not fit values of "
            f"shape {tuple(values.shape)}. Return one value per element the {what} covers."
        )
    while _rank(weight) < _rank(values):
        weight = ops.expand_dims(weight, axis=-1)
    return ops.broadcast_to(weight, ops.shape(values))


def _sample_weights(values, sample_weight):
    """One weight per sample, like the per-sample `values`; more axes are averaged per sample."""
    if sample_weight is None:
        return ops.ones_like(values)
    weight = _float(sample_weight)
    while _rank(weight) > 1 and weight.shape[-1] == 1:
        weight = ops.squeeze(weight, axis=-1)
    return ops.broadcast_to(_per_sample(weight, ops.mean), ops.shape(values))


def _single(tensors, key, owner):
    """The step's sample weight or mask as one tensor (or None) for a single output."""
    value = tensors.get(key)
    if isinstance(value, (dict, list, tuple)):
        if any(v is not None for v in keras.tree.flatten(value)):
            raise ValueError(
                f"{owner}: the model has several outputs, each with its own {key}; pick the "
                "output the metric reads with output=<dict key or list index>."
            )
        return None
    return value


def _element_weights(values, tensors, owner, use_mask=False):
    """Weights of the same shape as `values`: sample weight (and mask) broadcast, 1 if absent."""
    weight = ops.ones_like(values)
    keys = ("sample_weight", "mask") if use_mask else ("sample_weight",)
    for key in keys:
        source = _single(tensors, key, owner)
        if source is not None:
            weight = weight * _fit(source, values, key.replace("_", " "), owner)
    return weight


def _weighted_sum(values, weight):
    """sum(values * weight), where a zero weight hides a value even when it is inf or NaN."""
    return ops.sum(ops.where(ops.not_equal(weight, 0), values * weight, 0.0))


def _scalar(value):
    return _rank(value) == 0


def _mean_batch(value, tensors, owner):
    if _scalar(value):  # one value for the whole batch, weighted by the batch size
        size = _batch_size(tensors)
        return {"total": value * size, "count": size}
    value = _per_sample(value, ops.mean)
    weight = _sample_weights(value, _single(tensors, "sample_weight", owner))
    return {"total": _weighted_sum(value, weight), "count": ops.sum(weight)}


def _masked_mean_batch(value, tensors, owner):
    if _scalar(value):
        raise ValueError(
            f"{owner} has aggregation='masked_mean' but returned a scalar; return per-element "
            "values (the mask and sample weights weight each element), or use 'mean'."
        )
    weight = _element_weights(value, tensors, owner, use_mask=True)
    return {"total": _weighted_sum(value, weight), "count": ops.sum(weight)}


def _ratio_batch(value, tensors, owner):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(
            f"{owner} has aggregation='ratio' and must return a pair (numerator, denominator); "
            f"got {type(value).__name__}."
        )
    sums, sample_weight = [], _single(tensors, "sample_weight", owner)
    for part in value:
        part = _float(part)
        if _scalar(part):
            sums.append(part)
        else:
            part = _per_sample(part, ops.sum)
            sums.append(_weighted_sum(part, _sample_weights(part, sample_weight)))
    return {"numerator": sums[0], "denominator": sums[1]}


def _sum_batch(value, tensors, owner):
    if _scalar(value):
        return {"total": value}
    return {"total": _weighted_sum(value, _element_weights(value, tensors, owner))}


def _extreme_batch(reduce, fill):
    def batch(value, tensors, owner):
        if _scalar(value):
            return {"value": value}
        kept = ops.not_equal(_element_weights(value, tensors, owner), 0)
        return {"value": reduce(ops.where(kept, value, fill))}

    return batch


def _ratio_of(numerator, denominator):
    return lambda state: ops.divide_no_nan(state[numerator], state[denominator])


# -- the declarations ----------------------------------------------------------------------------

# How a state variable combines the batches: `(initial value, combine(state, batch_statistic))`.
_COMBINE = {
    "sum": (0.0, lambda state, batch: state + batch),
    "max": (-math.inf, ops.maximum),
    "min": (math.inf, ops.minimum),
    "last": (0.0, lambda state, batch: batch),
}


class Aggregation:
    """How a metric aggregates over an epoch, declared once (torchmetrics' `add_state` style).

    Args:
        states: `{state_name: combine}`, `combine` one of `"sum"` (`state + batch`), `"max"`
            (`max(state, batch)`, from -inf), `"min"` (from +inf) or `"last"` (`batch`): how the
            state variable absorbs each batch's statistic.
        batch: `batch(value, tensors, owner) -> {state_name: statistic}` for one batch, where
            `value` is the function's return value (cast to float32) and `tensors` the step's.
        result: `result({state_name: tensor}) -> scalar`.

    >>> AGGREGATIONS["ratio"].states
    {'numerator': 'sum', 'denominator': 'sum'}
    """

    def __init__(self, states, batch, result):
        self.states = dict(states)
        self.batch = batch
        self.result = result


#: The aggregation kinds of `metric(..., aggregation=...)`.
AGGREGATIONS = {
    "mean": Aggregation({"total": "sum", "count": "sum"}, _mean_batch, _ratio_of("total", "count")),
    "masked_mean": Aggregation(
        {"total": "sum", "count": "sum"}, _masked_mean_batch, _ratio_of("total", "count")
    ),
    "ratio": Aggregation(
        {"numerator": "sum", "denominator": "sum"},
        _ratio_batch,
        _ratio_of("numerator", "denominator"),
    ),
    "sum": Aggregation({"total": "sum"}, _sum_batch, lambda state: state["total"]),
    "max": Aggregation({"value": "max"}, _extreme_batch(ops.max, -math.inf), lambda s: s["value"]),
    "min": Aggregation({"value": "min"}, _extreme_batch(ops.min, math.inf), lambda s: s["value"]),
    "last": Aggregation(
        {"total": "last", "count": "last"}, _mean_batch, _ratio_of("total", "count")
    ),
}

# -- arithmetic on metrics -------------------------------------------------------------------------

_OPERATORS = {
    "add": (lambda a, b: a + b, "plus"),
    "sub": (lambda a, b: a - b, "minus"),
    "mul": (lambda a, b: a * b, "times"),
    "div": (ops.divide_no_nan, "over"),
}


class _Arithmetic:
    """`+ - * /` and unary `-` between lossweave metrics and Python numbers, and `.named()`."""

    def named(self, name):
        """Renames the metric (the name it is logged under) and returns it.

        >>> a = metric(lambda y_pred: y_pred, name="a", aggregation="sum")
        >>> (a / 2).name, (a / 2).named("half_a").name
        ('a_over_2', 'half_a')
        """
        self.name = name
        return self

    def __add__(self, other):
        return _compose("add", self, other)

    def __radd__(self, other):
        return _compose("add", other, self)

    def __sub__(self, other):
        return _compose("sub", self, other)

    def __rsub__(self, other):
        return _compose("sub", other, self)

    def __mul__(self, other):
        return _compose("mul", self, other)

    def __rmul__(self, other):
        return _compose("mul", other, self)

    def __truediv__(self, other):
        return _compose("div", self, other)

    def __rtruediv__(self, other):
        return _compose("div", other, self)

    def __neg__(self):
        return _compose("mul", -1.0, self)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _compose(op, left, right):
    metrics = (InjectedMetric, ComposedMetric)
    if not all(_is_number(v) or isinstance(v, metrics) for v in (left, right)):
        return NotImplemented
    parts, keys = [], {}

    def absorb(operand):
        """The expression of `operand`, with its metrics copied into `parts` once each."""
        if _is_number(operand):
            return ("const", float(operand))
        if isinstance(operand, InjectedMetric):
            if operand._key not in keys:
                keys[operand._key] = len(parts)
                parts.append(operand._copy())
            return ("part", keys[operand._key])
        return _map_parts(operand.expression, lambda i: absorb(operand.parts[i]))

    return ComposedMetric(parts, (op, absorb(left), absorb(right)))


def _map_parts(expression, fn):
    if expression[0] == "part":
        return fn(expression[1])
    if expression[0] == "const":
        return expression
    return (expression[0],) + tuple(_map_parts(e, fn) for e in expression[1:])


def _derived_name(expression, parts):
    kind = expression[0]
    if kind == "part":
        return parts[expression[1]].name
    if kind == "const":
        return f"{expression[1]:g}"
    left, right = (_derived_name(e, parts) for e in expression[1:])
    if kind == "mul" and left == "-1":
        return f"neg_{right}"
    return f"{left}_{_OPERATORS[kind][1]}_{right}"


def _as_tuples(expression):
    if isinstance(expression, (list, tuple)):
        return tuple(_as_tuples(e) for e in expression)
    return expression


def _as_lists(expression):
    if isinstance(expression, (list, tuple)):
        return [_as_lists(e) for e in expression]
    return expression


# -- the metric classes ----------------------------------------------------------------------------

_KEYS = itertools.count()


@keras.saving.register_keras_serializable(package="lossweave")
class InjectedMetric(_Arithmetic, keras.metrics.Metric):
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

    def __init__(self, fn, name, aggregation="mean", bind=None, output=None, **kwargs):
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
        self.kwargs = kwargs
        self._injector = Injector(fn, bind=self.bind, fixed=kwargs, owner=self._owner)
        self._resolved_for = None
        self._key = next(_KEYS)  # copies share it, so an expression updates each metric once
        self._aggregation = AGGREGATIONS[aggregation]
        self._state = {
            state: self.add_variable(
                shape=(),
                initializer=keras.initializers.Constant(_COMBINE[combine][0]),
                dtype="float32",
                name=state,
            )
            for state, combine in self._aggregation.states.items()
        }

    @property
    def _owner(self):
        return f"metric {self.name!r}"

    def resolve(self, available):
        """Checks, once, that every argument of `fn` is among the `available` names."""
        available = tuple(available)
        self._injector.owner = self._owner
        self._injector.resolve(available)
        self._resolved_for = available

    def update_from_tensors(self, tensors):
        """Adds one step to the state; `tensors` holds `y_true, y_pred, x, ...` and the taps."""
        tensors = for_output(tensors, self.output, self._owner)
        value = self._injector(tensors)
        if not isinstance(value, (tuple, list)):
            value = _float(value)
        batch = self._aggregation.batch(value, tensors, self._owner)
        for state, variable in self._state.items():
            combine = _COMBINE[self._aggregation.states[state]][1]
            variable.assign(combine(variable, ops.stop_gradient(_float(batch[state]))))

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
            initial = _COMBINE[self._aggregation.states[state]][0]
            variable.assign(ops.full((), initial, dtype="float32"))

    def result(self):
        return self._aggregation.result({k: _float(v) for k, v in self._state.items()})

    def _copy(self):
        """A fresh metric with the same definition (and identity key), its own zero state."""
        copy = InjectedMetric(
            self.fn, self.name, self.aggregation, self.bind, self.output, **self.kwargs
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
            "kwargs": self.kwargs,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        fn = deserialize_function(config.pop("fn"), owner=f"metric {config['name']!r}")
        return cls(fn, **config.pop("kwargs"), **config)


def metric(fn, name, aggregation="mean", bind=None, output=None, **kwargs):
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
    return InjectedMetric(fn, name, aggregation=aggregation, bind=bind, output=output, **kwargs)


@keras.saving.register_keras_serializable(package="lossweave")
class ComposedMetric(_Arithmetic, keras.metrics.Metric):
    """Arithmetic of metrics: `m1 / m2`, `m1 + 2 * m2`, `-m`, `m1 - m2`, `m1 * m2`, with numbers.

    Its result applies the arithmetic to the parts' final results, so
    `precision = true_positives / predicted_positives` with two `"sum"` metrics is exact over the
    epoch. Division by 0 gives 0, as in Keras's `Precision`. The default name spells the
    expression (`"tp_over_pp"`, without parentheses); rename with `.named("precision")`.

    The composite owns copies of its parts (fresh state): each distinct metric in the expression
    is updated once per step however often it appears, and the metrics it was built from are
    not updated by it.

    >>> import numpy as np
    >>> from keras import ops
    >>> tp = metric(lambda y_true, y_pred: y_true * ops.round(y_pred), name="tp", aggregation="sum")
    >>> pp = metric(lambda y_pred: ops.round(y_pred), name="pp", aggregation="sum")
    >>> precision = (tp / pp).named("precision")
    >>> precision.update_state(np.array([1.0, 0.0]), np.array([0.9, 0.8]))
    >>> precision.update_state(np.array([1.0]), np.array([0.7]))
    >>> round(float(precision.result()), 4)  # 2 true positives out of 3 predicted positives
    0.6667
    >>> round(float((1 - precision).result()), 4)  # a fresh copy: nothing seen yet
    1.0
    """

    def __init__(self, parts, expression, name=None):
        expression = _as_tuples(expression)
        super().__init__(name=name or _derived_name(expression, parts), dtype="float32")
        self.parts = list(parts)
        self.expression = expression

    def resolve(self, available):
        for part in self.parts:
            part.resolve(available)

    def update_from_tensors(self, tensors):
        for part in self.parts:
            part.update_from_tensors(tensors)

    def update_state(self, y_true, y_pred, sample_weight=None):
        for part in self.parts:
            part.update_state(y_true, y_pred, sample_weight=sample_weight)

    def reset_state(self):
        for part in self.parts:
            part.reset_state()

    def result(self):
        results = [part.result() for part in self.parts]

        def evaluate(expression):
            if expression[0] == "part":
                return results[expression[1]]
            if expression[0] == "const":
                return ops.full((), expression[1], dtype="float32")
            left, right = (evaluate(e) for e in expression[1:])
            return _OPERATORS[expression[0]][0](left, right)

        return evaluate(self.expression)

    def get_config(self):
        return {
            "parts": [keras.saving.serialize_keras_object(part) for part in self.parts],
            "expression": _as_lists(self.expression),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        parts = [keras.saving.deserialize_keras_object(part) for part in config["parts"]]
        return cls(parts, config["expression"], name=config["name"])


__all__ = ["metric", "InjectedMetric", "ComposedMetric", "Aggregation", "AGGREGATIONS"]
