"""Taps: named intermediate tensors, recorded during the forward pass of a training step.

`Tap(name)` is a pass-through layer and `tap(name, tensor)` the same as a function, for use inside a
model's `call`. While an `lw` model runs its train or test step, every tap met on the way through
the forward pass (at any depth: sub-layers and sub-models included) is recorded, and the model's
`call` returns the declared outputs together with the recorded taps (`Tapped`), so that the same
forward pass feeds the objective and the metrics. Everywhere else a tap is the identity.

The recording state is per thread (`threading.local`): `tf.distribute.MirroredStrategy` runs the
replicas' steps in threads of their own, and each records its own taps.

>>> import numpy as np
>>> tap("h", np.ones(2))  # outside a training step: the identity
array([1., 1.])
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, NamedTuple

import keras

from lossweave.step import INJECTABLE

_local = threading.local()


class Tapped(NamedTuple):
    """What an `lw` model's `call` returns inside its own train/test step: outputs and taps."""

    outputs: Any
    taps: dict


def check_name(name: str, what: str = "Tap name") -> str:
    """`name` if it can be injected by name: an identifier, and not one of `INJECTABLE`."""
    if not isinstance(name, str) or not name.isidentifier() or name in INJECTABLE:
        raise ValueError(
            f"{what} {name!r} must be a Python identifier and not one of {', '.join(INJECTABLE)}."
        )
    return name


class _Step:
    """One train/test step of `model` in this thread, and the taps recorded so far."""

    def __init__(self, model, training):
        self.model = model
        self.training = training
        self.taps = None  # a dict once the model's outermost call has begun

    def record(self, name, tensor):
        if name in self.taps:
            raise ValueError(
                f"Two taps named {name!r} in one forward pass of model {self.model.name!r}. "
                "Give each lw.Tap layer or lw.tap(...) call its own name (a Tap layer called "
                "twice records twice)."
            )
        self.taps[name] = tensor


def _current():
    return getattr(_local, "step", None)


def _depth():
    return getattr(_local, "depth", 0)


@contextlib.contextmanager
def stepping(model, training: bool):
    """Marks this thread as running `model`'s train (or test) step, for the taps to be recorded."""
    previous = _current()
    _local.step = _Step(model, training)
    try:
        yield _local.step
    finally:
        _local.step = previous


def training(model) -> bool:
    """True inside `model`'s own train step, False in its test step and everywhere else."""
    step = _current()
    return step is not None and step.model is model and step.training


def tapping(call):
    """Wraps a model's `call`: inside the model's own step, it returns `Tapped(outputs, taps)`.

    The outermost call of the stepping model opens the recording; every tap met while it runs
    (nested models included) lands in it. Nested calls, and calls outside a step, return what
    `call` returns. `unpack(self, result)` on the model turns what `call` returned into
    `(outputs, taps)`: a functional model's graph computes taps given by `taps=` as outputs.
    """

    @functools.wraps(call)
    def wrapper(self, *args, **kwargs):
        step = _current()
        outermost = step is not None and step.model is self and step.taps is None
        if outermost:
            step.taps = {}
        _local.depth = _depth() + 1
        try:
            outputs, graph_taps = self._unpack(call(self, *args, **kwargs))
            recording = _current()
            if graph_taps and recording is not None and recording.taps is not None:
                for name, tensor in graph_taps.items():
                    recording.record(name, tensor)
        finally:
            _local.depth -= 1
            if outermost:
                taps, step.taps = step.taps, None
        return self._tapped(outputs, taps) if outermost else outputs

    wrapper._lw_tapping = True
    return wrapper


def tap(name: str, tensor):
    """Names `tensor` for the objective and metrics of the `lw` model whose `call` runs it.

    Returns `tensor` unchanged. Inside a train or test step of an `lw.Model` (subclassed,
    functional or `lw.Sequential`), the tensor is recorded under `name`, whatever the depth of the
    call (a sub-layer, a sub-model); elsewhere (`predict`, a plain call, a symbolic `build` or
    `summary`) it is the identity. To name a tensor of a functional graph while building it, use
    the `Tap` layer or `lw.Model(..., taps={...})`.

    >>> import keras
    >>> import lossweave as lw
    >>> class Net(lw.Model):
    ...     def __init__(self, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.hidden, self.head = keras.layers.Dense(4), keras.layers.Dense(1)
    ...     def call(self, x):
    ...         return self.head(lw.tap("hidden", self.hidden(x)))
    >>> net = Net()
    >>> net.compile(optimizer="sgd", loss=lw.Objective({
    ...     "mse": "mse", "activity": lambda hidden: keras.ops.mean(hidden ** 2)}))
    >>> import numpy as np
    >>> sorted(net.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0).history)
    ['activity', 'loss', 'mse']
    """
    check_name(name)
    step = _current()
    if step is not None and step.taps is not None:
        step.record(name, tensor)
    elif isinstance(tensor, keras.KerasTensor) and _depth() == 0:
        raise ValueError(
            f"lw.tap({name!r}, ...) was called on a symbolic KerasTensor while a functional graph "
            f"is being built, where there is no forward pass to record. Use the layer "
            f"lw.Tap({name!r}) in the graph, e.g. `h = lw.Tap({name!r})(h)`, or pass "
            f"taps={{{name!r}: h}} to lw.Model(inputs, outputs, taps=...)."
        )
    return tensor


@keras.saving.register_keras_serializable(package="lossweave")
class Tap(keras.layers.Layer):
    """A pass-through layer that names its input for the objective and metrics.

    Works in functional graphs (no `taps=` needed), `lw.Sequential` stacks and subclassed models,
    at any depth: a `Tap` inside an encoder sub-model counts.

    Args:
        tap_name: the name terms and metrics ask for (an identifier, not an injectable name).
        **kwargs: as for `keras.layers.Layer` (e.g. its layer `name`).

    >>> import keras
    >>> import lossweave as lw
    >>> model = lw.Sequential([keras.Input((3,)), keras.layers.Dense(4), lw.Tap("hidden"),
    ...                        keras.layers.Dense(1)])
    >>> model.tap_names
    ('hidden',)
    """

    def __init__(self, tap_name: str, **kwargs):
        super().__init__(**kwargs)
        self.tap_name = check_name(tap_name)
        self.supports_masking = True
        self.built = True  # no weights

    def __call__(self, inputs, *args, **kwargs):
        # A concrete tensor needs none of Layer.__call__'s work (building, casting, masks: the
        # tensor, its mask included, is returned as it is); symbolic calls go through Keras.
        if args or set(kwargs) - {"training"} or isinstance(inputs, keras.KerasTensor):
            return super().__call__(inputs, *args, **kwargs)
        return tap(self.tap_name, inputs)

    def call(self, inputs):
        return tap(self.tap_name, inputs)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, inputs.dtype, sparse=inputs.sparse)

    def get_config(self):
        return {**super().get_config(), "tap_name": self.tap_name}


def static_tap_names(layers, model_name: str) -> list:
    """Names of the `Tap` layers among `layers`, in order; fails on two of one name."""
    names = []
    for layer in layers:
        if isinstance(layer, Tap):
            if layer.tap_name in names:
                raise ValueError(
                    f"Two lw.Tap layers named {layer.tap_name!r} in model {model_name!r}. Give "
                    "each Tap its own name."
                )
            names.append(layer.tap_name)
    return names
