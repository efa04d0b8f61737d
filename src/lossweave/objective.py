"""Objectives: weighted sums of named terms whose arguments are injected by name.

>>> import keras
>>> from keras import ops
>>> objective = Objective({
...     "mse": "mean_squared_error",
...     "l1": Term(lambda y_pred: ops.mean(ops.abs(y_pred)), weight=0.1),
... })
>>> objective.build(["y_true", "y_pred"])
>>> total, values, weights = objective.compute(
...     {"y_true": ops.zeros((2, 1)), "y_pred": ops.ones((2, 1)), "step": 0})
>>> round(float(total), 3), sorted(values)
(1.1, ['l1', 'mse'])
"""

import keras
from keras import ops

from lossweave import schedules
from lossweave.injection import Injector
from lossweave.serialization import deserialize_function, serialize_function

REDUCTIONS = ("mean", "sum")


def _select(structure, output):
    """Picks one output (a dict key or list index) of a structure; `None` keeps it whole."""
    if output is None or structure is None:
        return structure
    if isinstance(structure, dict):
        return structure[output]
    if isinstance(structure, (list, tuple)):
        return structure[output]
    return structure


def for_output(tensors, output, owner):
    """The step's tensors with `y_true`, `y_pred`, `sample_weight`, `mask` narrowed to one output."""
    if output is None:
        return tensors
    picked = dict(tensors)
    for key in ("y_true", "y_pred", "sample_weight", "mask"):
        try:
            picked[key] = _select(tensors.get(key), output)
        except (KeyError, IndexError, TypeError):
            raise ValueError(
                f"{owner} has output={output!r}, but {key} has no such output; "
                f"the model's outputs are {_output_keys(tensors.get('y_pred'))}."
            ) from None
    return picked


def _is_structure(value):
    return isinstance(value, (dict, list, tuple))


def _weighted_reduce(values, sample_weight, reduction):
    """Keras-style reduction: multiply by the (broadcast) sample weight, then mean or sum."""
    if sample_weight is not None:
        sample_weight = ops.cast(sample_weight, values.dtype)
        while len(sample_weight.shape) > len(values.shape) and sample_weight.shape[-1] == 1:
            sample_weight = ops.squeeze(sample_weight, axis=-1)
        while len(sample_weight.shape) < len(values.shape):
            sample_weight = ops.expand_dims(sample_weight, axis=-1)
        values = values * sample_weight
    return ops.mean(values) if reduction == "mean" else ops.sum(values)


@keras.saving.register_keras_serializable(package="lossweave")
class Term:
    """One named term of an objective: `fn` with its parameters injected by name.

    Args:
        fn: a Keras loss name (`"mean_squared_error"`), a `keras.losses.Loss`, or any function
            whose parameters are injectable names (`y_true`, `y_pred`, `x`, `sample_weight`, `mask`,
            `step`, `epoch`, `training`) or tap names of the `lw.Model`.
        weight: a float or a schedule of the step (`lw.schedules.*`).
        bind: `{parameter: name}` renames, e.g. `bind={"activation": "layer1"}`.
        output: for a multi-output model, the output (dict key or list index) this term reads as
            `y_pred`, `y_true`, `sample_weight` and `mask`.
        reduction: `"mean"` or `"sum"` over per-sample values (a scalar is used as it is).
        **kwargs: fixed keyword arguments passed to `fn`, e.g. `free_bits=0.2`.

    A function that returns per-sample values (leading batch axis) has the sample weights applied
    as Keras applies them to its own losses; a function that takes `sample_weight` itself, or a
    `keras.losses.Loss`, weighs and reduces on its own.

    >>> term = Term(lambda y_true, y_pred: (y_pred - y_true) ** 2, weight=0.5)
    >>> term.resolve("sq", ["y_true", "y_pred"])
    >>> float(term.value({"y_true": ops.zeros((2,)), "y_pred": ops.ones((2,)),
    ...                   "sample_weight": ops.array([1.0, 0.0])}))
    0.5
    """

    def __init__(self, fn, weight=1.0, bind=None, output=None, reduction="mean", **kwargs):
        if reduction not in REDUCTIONS:
            raise ValueError(f"Term reduction must be one of {REDUCTIONS}, got {reduction!r}.")
        self.spec = fn
        self.fn = keras.losses.get(fn) if isinstance(fn, str) else fn
        self.weight = schedules.get(weight)
        self.bind = dict(bind or {})
        self.output = output
        self.reduction = reduction
        self.kwargs = kwargs
        self.name = None
        self._injector = None

    def resolve(self, name, available):
        """Names the term and checks, once, that every argument it needs is available."""
        self.name = name
        owner = f"term {name!r}"
        self._injector = Injector(self.fn, bind=self.bind, fixed=self.kwargs, owner=owner)
        self._injector.resolve(available)
        self._weighs_itself = "sample_weight" in self._injector.sources

    def value(self, tensors):
        """The unweighted term value (a float32 scalar) for one step's tensors."""
        tensors = for_output(tensors, self.output, f"term {self.name!r}")
        result = self._injector(tensors)
        if _is_structure(result):
            raise ValueError(
                f"term {self.name!r} returned a {type(result).__name__}; a term must return a "
                "tensor (a scalar or per-sample values)."
            )
        result = ops.cast(result, "float32")
        if len(result.shape) == 0:
            return result
        self._check_batch_axis(result, tensors)
        weights = None if self._weighs_itself else tensors.get("sample_weight")
        return _weighted_reduce(result, weights, self.reduction)

    def _check_batch_axis(self, result, tensors):
        batch = _batch_size(tensors.get("y_pred"))
        if batch is not None and result.shape[0] is not None and result.shape[0] != batch:
            raise ValueError(
                f"term {self.name!r} returned shape {tuple(result.shape)}, but a term must return "
                f"a scalar or per-sample values whose first axis is the batch ({batch}). Reduce "
                "over the other axes, or return ops.mean(...) for a batch-level term."
            )

    def get_config(self):
        owner = f"term {self.name!r}"
        spec = self.spec if isinstance(self.spec, str) else serialize_function(self.fn, owner)
        return {
            "fn": spec,
            "weight": keras.saving.serialize_keras_object(self.weight),
            "bind": self.bind,
            "output": self.output,
            "reduction": self.reduction,
            "kwargs": self.kwargs,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        fn = config.pop("fn")
        fn = fn if isinstance(fn, str) else deserialize_function(fn, owner="a saved term")
        weight = keras.saving.deserialize_keras_object(config.pop("weight"))
        return cls(fn, weight=weight, **config.pop("kwargs"), **config)


def _output_keys(y_pred):
    if isinstance(y_pred, dict):
        return list(y_pred)
    if isinstance(y_pred, (list, tuple)):
        return list(range(len(y_pred)))
    return "a single tensor"


def _batch_size(y_pred):
    for tensor in keras.tree.flatten(y_pred):
        if tensor is not None and len(tensor.shape) > 0:
            return tensor.shape[0]
    return None


@keras.saving.register_keras_serializable(package="lossweave")
class Objective:
    """The loss passed to `lw.Model.compile`: a weighted sum of named terms.

    Each term is logged unweighted under its name, each non-constant weight as `<name>_weight`.

    Args:
        terms: `{name: term}`; a term is a Keras loss name or object, a function, or a `Term`.

    >>> objective = Objective({"mse": "mean_squared_error"})
    >>> objective.build(["y_true", "y_pred"], reserved=["mse"])
    Traceback (most recent call last):
    ...
    ValueError: Objective term name 'mse' collides with a name Keras already logs (mse). Rename the term.
    """

    def __init__(self, terms):
        if not isinstance(terms, dict) or not terms:
            raise ValueError(
                "Objective takes a non-empty dict {name: term}, e.g. "
                "lw.Objective({'mse': 'mean_squared_error'}); got " + repr(terms)
            )
        self.terms = {name: t if isinstance(t, Term) else Term(t) for name, t in terms.items()}
        self.trackers = []

    def build(self, available, reserved=()):
        """Resolves every term's arguments and creates the per-term and per-weight trackers."""
        reserved = set(reserved)
        logged = {}
        for name, term in self.terms.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"Objective term names must be identifiers; got {name!r}.")
            term.resolve(name, available)
            logged[name] = name
            if not getattr(term.weight, "is_constant", False):
                logged[f"{name}_weight"] = name
        clashes = sorted(set(logged) & reserved)
        if clashes:
            raise ValueError(
                f"Objective term name {logged[clashes[0]]!r} collides with a name Keras already "
                f"logs ({', '.join(clashes)}). Rename the term."
            )
        self.trackers = [keras.metrics.Mean(name=name) for name in logged]

    def compute(self, tensors):
        """Returns `(total, values, weights)` for one step: total = sum of weight * value."""
        step = tensors["step"]
        values, weights = {}, {}
        total = None
        for name, term in self.terms.items():
            values[name] = term.value(tensors)
            weights[name] = ops.cast(term.weight(step), "float32")
            weighted = weights[name] * values[name]
            total = weighted if total is None else total + weighted
        return total, values, weights

    def track(self, values, weights, batch_size):
        """Adds one step's term values and weights to the epoch aggregates."""
        current = dict(values)
        current.update({f"{name}_weight": w for name, w in weights.items()})
        for tracker in self.trackers:
            tracker.update_state(ops.stop_gradient(current[tracker.name]), sample_weight=batch_size)

    def get_config(self):
        return {"terms": {n: keras.saving.serialize_keras_object(t) for n, t in self.terms.items()}}

    @classmethod
    def from_config(cls, config):
        return cls({n: keras.saving.deserialize_keras_object(t) for n, t in config["terms"].items()})
