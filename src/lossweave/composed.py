"""Arithmetic of metrics: `m1 / m2`, `m1 + 2 * m2`, `-m`, with exact epoch results.

>>> import numpy as np
>>> import lossweave as lw
>>> s = lw.metric(lambda y_pred: y_pred, name="s", aggregation="sum")
>>> (s / 2).name
's_over_2'
"""

import keras
from keras import ops

_OPERATORS = {
    "add": (lambda a, b: a + b, "plus"),
    "sub": (lambda a, b: a - b, "minus"),
    "mul": (lambda a, b: a * b, "times"),
    "div": (ops.divide_no_nan, "over"),
}


class Arithmetic:
    """`+ - * /` and unary `-` between lossweave metrics and Python numbers, and `.named()`."""

    def named(self, name):
        """Renames the metric (the name it is logged under) and returns it.

        >>> from lossweave import metric
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


def _is_metric(value):
    return isinstance(value, ComposedMetric) or hasattr(value, "update_from_tensors")


def _compose(op, left, right):
    if not all(_is_number(v) or _is_metric(v) for v in (left, right)):
        return NotImplemented
    parts, keys = [], {}

    def absorb(operand):
        """The expression of `operand`, with its metrics copied into `parts` once each."""
        if _is_number(operand):
            return ("const", float(operand))
        if not isinstance(operand, ComposedMetric):  # an InjectedMetric
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


@keras.saving.register_keras_serializable(package="lossweave")
class ComposedMetric(Arithmetic, keras.metrics.Metric):
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
    >>> from lossweave import metric
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

    def resolve(self, available, late: bool = False):
        for part in self.parts:
            part.resolve(available, late=late)

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
