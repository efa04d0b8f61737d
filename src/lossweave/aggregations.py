"""How a metric aggregates over an epoch, declared once per kind (torchmetrics' `add_state` style).

Each kind names its state variables and how each absorbs a batch (`"sum"`, `"max"`, `"min"`,
`"last"`, declared in `COMBINE` with the matching cross-replica reduction), what one batch
contributes, and how the result follows from the state. So the value after N batches equals the
value computed once on the concatenated data, on one device or on several.

>>> sorted(AGGREGATIONS)
['last', 'masked_mean', 'max', 'mean', 'min', 'ratio', 'sum']
>>> {state: COMBINE[how].across_replicas for state, how in AGGREGATIONS["max"].states.items()}
{'value': 'max'}
"""

import math
from typing import Callable, NamedTuple

from keras import ops

from lossweave.step import batch_size, element_weights, per_sample_weights, single

# -- how one batch's statistics are computed ---------------------------------------------------


def _float(x):
    return ops.cast(x, "float32")


def _per_sample(values, reduce):
    """Reduces every axis but the batch axis with `reduce` (`ops.mean` or `ops.sum`)."""
    axes = tuple(range(1, len(values.shape)))
    return reduce(values, axis=axes) if axes else values


def _weights(value, tensors, owner, use_mask=False):
    """Element weights of `value` (sample weight, and the mask if asked), 1 where absent."""
    mask = single(tensors, "mask", owner) if use_mask else None
    weight = element_weights(value, single(tensors, "sample_weight", owner), mask, owner)
    return ops.ones_like(value) if weight is None else weight


def _weighted_sum(values, weight):
    """sum(values * weight), where a zero weight hides a value even when it is inf or NaN."""
    return ops.sum(ops.where(ops.not_equal(weight, 0), values * weight, 0.0))


def _scalar(value):
    return len(value.shape) == 0


def _mean_batch(value, tensors, owner):
    if _scalar(value):  # one value for the whole batch, weighted by the batch size
        size = batch_size(tensors)
        return {"total": value * size, "count": size}
    value = _per_sample(value, ops.mean)
    weight = per_sample_weights(value, single(tensors, "sample_weight", owner))
    return {"total": _weighted_sum(value, weight), "count": ops.sum(weight)}


def _masked_mean_batch(value, tensors, owner):
    if _scalar(value):
        raise ValueError(
            f"{owner} has aggregation='masked_mean' but returned a scalar; return per-element "
            "values (the mask and sample weights weight each element), or use 'mean'."
        )
    weight = _weights(value, tensors, owner, use_mask=True)
    return {"total": _weighted_sum(value, weight), "count": ops.sum(weight)}


def _ratio_batch(value, tensors, owner):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(
            f"{owner} has aggregation='ratio' and must return a pair (numerator, denominator); "
            f"got {type(value).__name__}."
        )
    sums, sample_weight = [], single(tensors, "sample_weight", owner)
    for part in value:
        part = _float(part)
        if _scalar(part):
            sums.append(part)
        else:
            part = _per_sample(part, ops.sum)
            sums.append(_weighted_sum(part, per_sample_weights(part, sample_weight)))
    return {"numerator": sums[0], "denominator": sums[1]}


def _sum_batch(value, tensors, owner):
    if _scalar(value):
        return {"total": value}
    return {"total": _weighted_sum(value, _weights(value, tensors, owner))}


def _extreme_batch(reduce, fill):
    def batch(value, tensors, owner):
        if _scalar(value):
            return {"value": value}
        kept = ops.not_equal(_weights(value, tensors, owner), 0)
        return {"value": reduce(ops.where(kept, value, fill))}

    return batch


def _ratio_of(numerator, denominator):
    return lambda state: ops.divide_no_nan(state[numerator], state[denominator])


# -- the declarations ----------------------------------------------------------------------------

class Combine(NamedTuple):
    """How a state variable absorbs each batch's statistic, on one device and across replicas.

    `initial` is the state before the first batch and `local(state, batch)` the state after one.
    `across_replicas` is how the replicas' statistics of one data-parallel step combine into the
    statistic of the global batch (`"sum"`, `"max"` or `"min"`), so that the state after an epoch
    equals the one-device state on the same data.
    """

    initial: float
    local: Callable
    across_replicas: str


#: How each kind of state variable combines the batches (`Combine`). `"last"` keeps the latest
#: step's statistic; across replicas the latest step is the sum of the replicas' latest
#: sub-batches (a `"last"` mean keeps its total and count), so it sums.
COMBINE = {
    "sum": Combine(0.0, lambda state, batch: state + batch, "sum"),
    "max": Combine(-math.inf, ops.maximum, "max"),
    "min": Combine(math.inf, ops.minimum, "min"),
    "last": Combine(0.0, lambda state, batch: batch, "sum"),
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
