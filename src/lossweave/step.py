"""The tensors of one training step, as terms and metrics see them, and how they are weighted.

One module for what objectives and metrics share: the injectable names, the step's tensors
(`step_tensors`), narrowing them to one output of a multi-output model (`for_output`), the batch
size, and the sample-weight and mask rules of Keras's losses (`element_weights`, `reduce`).

>>> from keras import ops
>>> values = ops.convert_to_tensor([[1.0, 2.0], [3.0, 4.0]])
>>> mask = ops.convert_to_tensor([[True, False], [True, True]])
>>> float(reduce(values, mask=mask))  # Keras's masked mean: (1 + 3 + 4) / 3
2.6666667461395264
"""

from __future__ import annotations

import keras
from keras import ops

from lossweave._keras import get_keras_mask

#: Names every objective and metric can ask for, besides the taps of an `lw` model.
#: `training` is a Python bool: True in the train step, False in evaluation (and validation).
INJECTABLE = ("y_true", "y_pred", "x", "sample_weight", "mask", "step", "epoch", "training")

#: What `output=` narrows to one output of a multi-output model.
PER_OUTPUT = ("y_true", "y_pred", "sample_weight", "mask")


def _masks(outputs):
    return keras.tree.map_structure(get_keras_mask, outputs)


def step_tensors(x, y, outputs, taps, sample_weight, training: bool) -> dict:
    """The dict terms and metrics are injected from: the step's tensors and the taps."""
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


def output_keys(y_pred) -> list | str:
    """The keys (dict) or indices (list) of a multi-output model's outputs, for error messages."""
    if isinstance(y_pred, dict):
        return list(y_pred)
    if isinstance(y_pred, (list, tuple)):
        return list(range(len(y_pred)))
    return "a single tensor"


def is_multi_output(y_pred) -> bool:
    return isinstance(y_pred, (dict, list, tuple))


def for_output(tensors: dict, output, owner: str) -> dict:
    """The step's tensors with `y_true`, `y_pred`, `sample_weight`, `mask` narrowed to one output.

    `output=None` keeps them whole.

    >>> for_output({"y_pred": {"a": 1, "b": 2}, "y_true": {"a": 3, "b": 4}}, "b", "term 't'")
    {'y_pred': 2, 'y_true': 4, 'sample_weight': None, 'mask': None}
    """
    if output is None:
        return tensors
    picked = dict(tensors)
    for key in PER_OUTPUT:
        value = tensors.get(key)
        if value is None or not is_multi_output(value):
            picked[key] = value
            continue
        try:
            picked[key] = value[output]
        except (KeyError, IndexError, TypeError):
            raise ValueError(
                f"{owner} has output={output!r}, but {key} has no such output; "
                f"the model's outputs are {output_keys(tensors.get('y_pred'))}."
            ) from None
    return picked


def batch_size(tensors: dict):
    """The step's batch size (a float32 scalar): the first axis of `x`, else `y_pred`, else 1.

    Keras weighs its loss tracker by the first axis of the first input, and so do the terms.
    """
    for key in ("x", "y_pred", "y_true"):
        for tensor in keras.tree.flatten(tensors.get(key)):
            if tensor is not None and len(tensor.shape) > 0:
                return ops.cast(ops.shape(tensor)[0], "float32")
    return ops.ones((), "float32")


def single(tensors: dict, key: str, owner: str):
    """The step's sample weight or mask as one tensor (or None), for a term of one output."""
    value = tensors.get(key)
    if is_multi_output(value):
        if any(v is not None for v in keras.tree.flatten(value)):
            raise ValueError(
                f"{owner}: the model has several outputs, each with its own {key}; pick the "
                "output it reads with output=<dict key or list index>."
            )
        return None
    return value


def _same_rank(a, b):
    """Squeezes or expands a trailing axis of size 1 so that `a` and `b` have one rank (Keras)."""
    rank_a, rank_b = len(a.shape), len(b.shape)
    if rank_a == rank_b + 1 and a.shape[-1] == 1:
        a = ops.squeeze(a, axis=-1) if rank_b != 1 else a
        b = ops.expand_dims(b, axis=-1) if rank_b == 1 else b
    elif rank_b == rank_a + 1 and b.shape[-1] == 1:
        b = ops.squeeze(b, axis=-1) if rank_a != 1 else b
        a = ops.expand_dims(a, axis=-1) if rank_a == 1 else a
    return a, b


def element_weights(values, sample_weight=None, mask=None, owner: str = "term"):
    """The weight of each element of `values`: sample weight times mask, broadcast as Keras does.

    `None` when there is neither. Trailing axes of size 1 are squeezed or added, then missing
    trailing axes broadcast; a weight with more axes than `values` fails, naming `owner`.

    >>> from keras import ops
    >>> w = element_weights(ops.ones((2, 3)), sample_weight=ops.convert_to_tensor([1.0, 0.0]))
    >>> ops.convert_to_numpy(w).tolist()
    [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    """
    weight = None
    for source, what in ((sample_weight, "sample weight"), (mask, "mask")):
        if source is None:
            continue
        source = ops.cast(source, values.dtype)
        _, source = _same_rank(values, source)
        if len(source.shape) > len(values.shape):
            raise ValueError(
                f"{owner}: the {what} has shape {tuple(source.shape)}, which does not fit values "
                f"of shape {tuple(values.shape)}. Return one value per element the {what} covers."
            )
        while len(source.shape) < len(values.shape):
            source = ops.expand_dims(source, axis=-1)
        weight = source if weight is None else weight * source
    return None if weight is None else ops.broadcast_to(weight, ops.shape(values))


def reduce(values, sample_weight=None, mask=None, reduction: str = "mean", owner: str = "term"):
    """One scalar from per-element values, with Keras's loss rules for weights and masks.

    `"mean"` (Keras's `sum_over_batch_size`): `sum(v * w) / n`, with `n` the number of elements,
    or, under a mask, the number of unmasked elements. `"sum"`: `sum(v * w)`. `w` is the sample
    weight (1 if none); a masked element counts 0.
    """
    values = ops.cast(values, "float32")
    if mask is not None:
        mask = ops.cast(mask, "float32")
        _, mask = _same_rank(values, mask)
    weight = element_weights(values, sample_weight, mask, owner)
    total = ops.sum(values if weight is None else values * weight)
    if reduction == "sum":
        return total
    if mask is None:
        count = ops.cast(ops.prod(ops.shape(values)), "float32")
    else:
        count = ops.sum(ops.broadcast_to(mask, ops.shape(values)))
    return ops.divide_no_nan(total, count)


def per_sample_weights(values, sample_weight=None):
    """One weight per sample for per-sample `values`: trailing axes of size 1 squeezed, further
    axes of the sample weight averaged per sample; 1 where there is no sample weight.

    >>> from keras import ops
    >>> w = per_sample_weights(ops.ones((2,)), ops.convert_to_tensor([[1.0, 3.0], [0.0, 0.0]]))
    >>> ops.convert_to_numpy(w).tolist()
    [2.0, 0.0]
    """
    if sample_weight is None:
        return ops.ones_like(values)
    weight = ops.cast(sample_weight, "float32")
    while len(weight.shape) > 1 and weight.shape[-1] == 1:
        weight = ops.squeeze(weight, axis=-1)
    axes = tuple(range(1, len(weight.shape)))
    if axes:
        weight = ops.mean(weight, axis=axes)
    return ops.broadcast_to(weight, ops.shape(values))
