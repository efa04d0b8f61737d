"""Objectives: weighted sums of named terms whose arguments are injected by name.

>>> import keras
>>> from keras import ops
>>> objective = Objective({
...     "mse": "mean_squared_error",
...     "l1": Term(lambda y_pred: ops.mean(ops.abs(y_pred)), weight=0.1),
... })
>>> objective.build(["y_true", "y_pred"])
['mse', 'l1']
>>> total, logged = objective.compute(
...     {"y_true": ops.zeros((2, 1)), "y_pred": ops.ones((2, 1)), "step": 0})
>>> round(float(total), 3), sorted(logged)
(1.1, ['l1', 'mse'])
"""

from __future__ import annotations

import keras
from keras import ops

from lossweave import schedules
from lossweave.balancers import Balancer
from lossweave._keras import compute_output_spec, get_keras_mask, keras_loss_value, resolve_loss
from lossweave.injection import Injector
from lossweave.serialization import deserialize_function, serialize_function
from lossweave.step import for_output, is_multi_output, output_keys, reduce, single

REDUCTIONS = ("mean", "sum")

# What a Keras loss (a name or a `keras.losses.Loss`) reads of the step.
_KERAS_LOSS_NAMES = ("y_true", "y_pred", "sample_weight")


def _check_loss_name(name, owner):
    if str(name).lower() in ("crossentropy", "ce"):  # resolved from the shapes, as compile does
        return
    try:
        keras.losses.get(name)
    except (ValueError, TypeError):
        raise ValueError(
            f"{owner}: {name!r} is not a Keras loss name. Use a name Keras knows (e.g. "
            "'mean_squared_error', 'binary_crossentropy', 'sparse_categorical_crossentropy'), "
            "a keras.losses.Loss, or a function."
        ) from None


@keras.saving.register_keras_serializable(package="lossweave")
class Term:
    """One named term of an objective: `fn` with its parameters injected by name.

    Args:
        fn: a Keras loss name (`"mean_squared_error"`), a `keras.losses.Loss`, or any function
            whose parameters are injectable names (`y_true`, `y_pred`, `x`, `sample_weight`, `mask`,
            `step`, `epoch`, `training`) or tap names of the model.
        weight: a float or a schedule of the step (`lw.schedules.*`).
        bind: `{parameter: name}` renames, e.g. `bind={"activation": "layer1"}`.
        output: for a multi-output model, the output (dict key or list index) this term reads as
            `y_pred`, `y_true`, `sample_weight` and `mask`.
        reduction: `"mean"` or `"sum"` over the values of a function (a scalar is used as it is).
        **kwargs: fixed keyword arguments passed to `fn`, e.g. `free_bits=0.2`.

    A Keras loss (name or object) returns exactly what `compile(loss=...)` returns, the output
    mask (`mask_zero=True`, `Masking`) and sample weights included. A function's values get
    Keras's loss rules: sample weights per sample, and, when it reads `y_pred`, the output mask
    (a masked element counts neither in the sum nor in the mean); a function that reads
    `sample_weight` or `mask` itself applies that one on its own.

    >>> term = Term(lambda y_true, y_pred: (y_pred - y_true) ** 2, weight=0.5)
    >>> term.resolve("sq", ["y_true", "y_pred"])
    >>> float(term.value({"y_true": ops.zeros((2,)), "y_pred": ops.ones((2,)),
    ...                   "sample_weight": ops.array([1.0, 0.0])}))
    0.5
    """

    def __init__(self, fn, weight=1.0, bind=None, output=None, reduction: str = "mean", **kwargs):
        if reduction not in REDUCTIONS:
            raise ValueError(f"Term reduction must be one of {REDUCTIONS}, got {reduction!r}.")
        self.spec = fn
        self.fn = fn
        self.weight = schedules.get(weight)
        self.bind = dict(bind or {})
        self.output = output
        self.reduction = reduction
        self.kwargs = kwargs
        self.name = None
        self._injector = None
        self._loss = fn if isinstance(fn, keras.losses.Loss) else None
        self._axis_checked = False

    @property
    def is_keras_loss(self) -> bool:
        return isinstance(self.fn, (str, keras.losses.Loss))

    @property
    def _owner(self):
        return f"term {self.name!r}"

    @property
    def reads(self) -> tuple:
        """The step's names this term reads (known once resolved)."""
        if self.is_keras_loss:
            return _KERAS_LOSS_NAMES
        return tuple(self._injector.sources.values()) if self._injector.sources else ()

    def resolve(self, name: str, available, late: bool = False, outputs=None) -> None:
        """Names the term and checks, once, that every argument it needs is available.

        With `late`, a name not yet available (a tap of a subclassed model, known once it runs)
        is resolved at the first step instead. `outputs`: a multi-output model's output keys.
        """
        self.name = name
        if isinstance(self.fn, str):
            _check_loss_name(self.fn, self._owner)
        elif not self.is_keras_loss:
            self._injector = Injector(self.fn, bind=self.bind, fixed=self.kwargs, owner=self._owner)
            self._injector.resolve(available, late=late)
        if outputs is not None:
            self._check_output(outputs)

    def _check_output(self, outputs):
        reads_outputs = any(name in ("y_true", "y_pred", "sample_weight", "mask")
                            for name in self.reads)
        if self.output is None and reads_outputs:
            raise ValueError(
                f"{self._owner} reads y_pred/y_true, but the model has several outputs "
                f"({', '.join(map(str, outputs))}). Pick the one it reads with "
                f"lw.Term(..., output={outputs[0]!r})."
            )
        if self.output is not None and self.output not in outputs:
            raise ValueError(
                f"{self._owner} has output={self.output!r}, but the model's outputs are {outputs}."
            )

    def _check_outputs_once_known(self, tensors):
        if self.output is None and is_multi_output(tensors.get("y_pred")):
            self._check_output(output_keys(tensors["y_pred"]))

    def value(self, tensors: dict):
        """The unweighted term value (a float32 scalar) for one step's tensors."""
        self._check_outputs_once_known(tensors)
        tensors = for_output(tensors, self.output, self._owner)
        if self.is_keras_loss:
            return self._keras_loss_value(tensors)
        result = self._injector(tensors)
        is_number = isinstance(result, (int, float)) and not isinstance(result, bool)
        if not is_number and not hasattr(result, "shape"):
            got = "None" if result is None else f"a {type(result).__name__}"
            raise ValueError(
                f"{self._owner} returned {got}; a term must return a tensor (a scalar, or values "
                "whose first axis is the batch)."
            )
        values = ops.cast(result, "float32")
        if len(values.shape) == 0:
            return values
        self._check_batch_axis(values, tensors)
        if not self._axis_checked:
            self._check_batch_axis_symbolically(tensors)
        reads = self._injector.sources.values()
        sample_weight = None if "sample_weight" in reads else single(tensors, "sample_weight", self._owner)
        mask = get_keras_mask(result)
        if "y_pred" in reads and "mask" not in reads:
            output_mask = single(tensors, "mask", self._owner)
            if output_mask is not None:
                mask = output_mask if mask is None else ops.logical_and(output_mask, mask)
        return reduce(values, sample_weight, mask, self.reduction, self._owner)

    def _keras_loss_value(self, tensors):
        y_true, y_pred = tensors["y_true"], tensors["y_pred"]
        if self._loss is None:
            self._loss = resolve_loss(self.fn, y_true, y_pred)
        value = keras_loss_value(self._loss, y_true, y_pred, tensors.get("sample_weight"))
        return ops.cast(value, "float32")

    def _check_batch_axis(self, values, tensors):
        batch = _batch_dim(tensors.get("y_pred"))
        if batch is not None and values.shape[0] is not None and values.shape[0] != batch:
            raise ValueError(
                f"{self._owner} returned shape {tuple(values.shape)}, but a term must return a "
                f"scalar or values whose first axis is the batch ({batch}). Reduce over the other "
                "axes, or return ops.mean(...) for a batch-level term."
            )

    def _check_batch_axis_symbolically(self, tensors):
        """Once: the first axis of the result must follow the batch size, not merely equal it.

        The term runs on symbolic tensors whose batch axis is unknown; a first axis that stays a
        number there (e.g. `ops.mean(h, axis=0)` with as many units as samples) is not per-sample.
        """
        self._axis_checked = True
        batch = _batch_dim(tensors.get("y_pred"))
        if batch is None:
            return
        try:
            spec = compute_output_spec(self._injector, _batch_free(tensors, batch))
        except Exception:  # a term that needs a known batch size: only the check is skipped
            return
        if getattr(spec, "shape", None) and spec.shape[0] is not None:
            raise ValueError(
                f"{self._owner} returned shape {(batch,) + tuple(spec.shape[1:])}, whose first "
                "axis is not the batch axis: it does not change with the batch size (it only "
                f"equals it, {batch}, here). A term must return a scalar or values whose first "
                "axis is the batch; reduce over the other axes."
            )

    def get_config(self):
        spec = self.spec if isinstance(self.spec, str) else serialize_function(self.fn, self._owner)
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


def _batch_free(tensors, batch):
    """Symbolic stand-ins of the step's tensors, with an unknown first axis where it is `batch`."""

    def symbolic(tensor):
        if not hasattr(tensor, "shape") or not hasattr(tensor, "dtype"):
            return tensor
        shape = tuple(tensor.shape)
        if shape and shape[0] == batch:
            shape = (None,) + shape[1:]
        return keras.KerasTensor(shape, keras.backend.standardize_dtype(tensor.dtype))

    return {key: keras.tree.map_structure(symbolic, value) for key, value in tensors.items()}


def _batch_dim(y_pred):
    for tensor in keras.tree.flatten(y_pred):
        if tensor is not None and len(tensor.shape) > 0:
            return tensor.shape[0]
    return None


@keras.saving.register_keras_serializable(package="lossweave")
class Objective:
    """The loss passed to `compile` of an `lw` model: a weighted sum of named terms.

    Each term is logged unweighted under its name, each non-constant weight as `<name>_weight`.
    One objective may serve several models: each compiled model keeps its own logs.

    Args:
        terms: `{name: term}`; a term is a Keras loss name or object, a function, or a `Term`.
        balance: an `lw.balancers.*` object that sets the weights of the terms it covers (each
            logged as `<name>_weight`) or combines their gradients; see `lossweave.balancers`.

    >>> objective = Objective({"mse": "mean_squared_error"})
    >>> objective.build(["y_true", "y_pred"], reserved=["mse"])
    Traceback (most recent call last):
    ...
    ValueError: Objective term name 'mse' collides with a name Keras already logs (mse). Rename the term.
    """

    def __init__(self, terms: dict, balance: Balancer | None = None):
        if not isinstance(terms, dict) or not terms:
            raise ValueError(
                "Objective takes a non-empty dict {name: term}, e.g. "
                "lw.Objective({'mse': 'mean_squared_error'}); got " + repr(terms)
            )
        if balance is not None and not isinstance(balance, Balancer):
            raise TypeError(
                f"Objective(balance=...) takes an lw.balancers object, e.g. "
                f"lw.balancers.dwa(); got {balance!r}."
            )
        self.terms = {name: t if isinstance(t, Term) else Term(t) for name, t in terms.items()}
        self.balance = balance
        self.balanced = balance.covered(list(self.terms)) if balance is not None else []

    def build(self, available, reserved=(), late: bool = False, outputs=None) -> list:
        """Resolves every term's arguments; returns the logged names (terms, then weights).

        `late` and `outputs` as for `Term.resolve`.
        """
        reserved = set(reserved)
        logged = {}
        for name, term in self.terms.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"Objective term names must be identifiers; got {name!r}.")
            term.resolve(name, available, late=late, outputs=outputs)
            logged[name] = name
            constant = getattr(term.weight, "is_constant", False)
            if name in self.balanced and not constant:
                raise ValueError(
                    f"Objective term {name!r} has a scheduled weight and is balanced by "
                    f"{self.balance!r}, which sets its weight. Give it a constant weight, or "
                    "leave it out of the balancer with terms=[...]."
                )
            if not constant or (name in self.balanced and self.balance.weighs):
                weight_name = f"{name}_weight"
                if weight_name in self.terms:
                    raise ValueError(
                        f"Objective term name {weight_name!r} collides with the logged weight of "
                        f"the scheduled term {name!r}. Rename the term."
                    )
                logged[weight_name] = name
        clashes = sorted(set(logged) & reserved)
        if clashes:
            raise ValueError(
                f"Objective term name {logged[clashes[0]]!r} collides with a name Keras already "
                f"logs ({', '.join(clashes)}). Rename the term."
            )
        return list(logged)

    def compute(self, tensors: dict, balance_state=None):
        """`(total, logged)` for one step: total = sum of weight * value; `logged` maps every
        logged name (terms and non-constant weights) to its value. `balance_state`: the
        balancer's variables (of the compiled model), when there is a balancer."""
        total, logged, _, _ = self.compute_terms(tensors, balance_state)
        return total, logged

    def compute_terms(self, tensors: dict, balance_state=None):
        """`(total, logged, weighted, values)`: `compute`'s, and each term's weighted
        contribution to the total and its value, in the order of the terms."""
        step = tensors["step"]
        balanced = self._balanced_weights(balance_state)
        logged, weighted, values = {}, [], []
        for name, term in self.terms.items():
            value = term.value(tensors)
            logged[name] = value
            if name in balanced:
                weight, extra = balanced[name]
                weight = weight * term.weight.value if term.weight.value != 1.0 else weight
                logged[f"{name}_weight"] = weight
                contribution = weight * value if extra is None else weight * value + extra
            elif getattr(term.weight, "is_constant", False):  # no tensor to build for a constant
                weight = term.weight.value
                contribution = value if weight == 1.0 else value * weight
            else:
                weight = ops.cast(term.weight(step), "float32")
                logged[f"{name}_weight"] = weight
                contribution = weight * value
            weighted.append(contribution)
            values.append(value)
        total = weighted[0]
        for contribution in weighted[1:]:
            total = total + contribution
        return total, logged, weighted, values

    def _balanced_weights(self, state):
        """`{name: (weight, extra or None)}` for the terms whose weights the balancer sets."""
        if self.balance is None or not self.balance.weighs:
            return {}
        if state is None:
            raise ValueError(
                f"The objective's balancer {self.balance!r} keeps its state in a compiled model: "
                "compile an lw.Model with this objective and call fit."
            )
        weights, extra = self.balance.weights(state), self.balance.extra(state)
        return {
            name: (weights[i], None if extra is None else extra[i])
            for i, name in enumerate(self.balanced)
        }

    def get_config(self):
        config = {"terms": {n: keras.saving.serialize_keras_object(t) for n, t in self.terms.items()}}
        if self.balance is not None:
            config["balance"] = keras.saving.serialize_keras_object(self.balance)
        return config

    @classmethod
    def from_config(cls, config):
        terms = {n: keras.saving.deserialize_keras_object(t) for n, t in config["terms"].items()}
        return cls(terms, balance=keras.saving.deserialize_keras_object(config.get("balance")))
