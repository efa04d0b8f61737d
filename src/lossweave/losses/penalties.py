"""Activity penalties on intermediate tensors (taps)."""

import keras
from keras import ops

_KINDS = ("l1", "l2")


@keras.saving.register_keras_serializable(package="lossweave")
def activation_penalty(activation, kind="l2"):
    """Mean squared (`"l2"`) or mean absolute (`"l1"`) activation, per sample.

        l2: mean_i(a_i^2)        l1: mean_i(|a_i|)

    over the non-batch axes. Returns per-sample values, shape `(batch,)`. Bind it to a tap:
    `lw.Term(lw.losses.activation_penalty, bind={"activation": "layer1"})`.

    Args:
        activation: the tensor to penalise, `(batch, ...)`.
        kind: `"l2"` or `"l1"`.

    >>> import numpy as np
    >>> import lossweave as lw
    >>> a = np.array([[1.0, -3.0], [0.0, 2.0]], "float32")
    >>> [round(float(v), 4) for v in lw.losses.activation_penalty(a)]
    [5.0, 2.0]
    >>> [round(float(v), 4) for v in lw.losses.activation_penalty(a, kind="l1")]
    [2.0, 1.0]
    """
    if kind not in _KINDS:
        raise ValueError(f"activation_penalty: kind must be one of {_KINDS}, got {kind!r}.")
    activation = ops.convert_to_tensor(activation)
    penalty = ops.square(activation) if kind == "l2" else ops.abs(activation)
    axes = tuple(range(1, len(penalty.shape)))
    return ops.mean(penalty, axis=axes) if axes else penalty
