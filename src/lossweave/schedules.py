"""Schedules: small, serializable functions of the training step.

A schedule maps the training step (an integer tensor) to a float tensor, with `keras.ops` only, so
it is evaluated inside the compiled train step: the weight changes every step with no callback and
no retracing. A plain float used as a weight is a `constant` schedule. Schedules are Keras
learning-rate schedules too: `keras.optimizers.Adam(learning_rate=lw.schedules.cosine(...))`.

>>> from lossweave import schedules
>>> round(float(schedules.linear(0.0, 1.0, steps=10)(5)), 3)
0.5
"""

import math

import keras
from keras import ops


def _float(step):
    return ops.cast(step, "float32")


def _progress(step, begin, steps):
    """Fraction of `[begin, begin + steps]` covered at `step`, clipped to [0, 1]."""
    return ops.clip((_float(step) - begin) / max(steps, 1), 0.0, 1.0)


class Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """Base class: a callable of the step with a config. Subclasses define `__call__`.

    A `keras.optimizers.schedules.LearningRateSchedule`, so any schedule is also a learning rate.

    >>> constant(0.5).get_config()
    {'value': 0.5}
    >>> optimizer = keras.optimizers.SGD(learning_rate=exponential_approach(1e-2, 1e-4, decay=0.5))
    >>> round(float(optimizer.learning_rate), 6)
    0.01
    """

    is_constant = False

    def get_config(self):
        return dict(vars(self))

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__.lower()}({args})"


def get(weight):
    """Returns `weight` as a schedule: a float becomes `constant(weight)`.

    >>> get(2.0)
    constant(value=2.0)
    """
    if isinstance(weight, type):
        raise TypeError(
            f"weight={weight.__name__} is a schedule class, not a schedule: call it with its "
            "arguments, e.g. lw.schedules.linear(0.0, 1.0, steps=1000)."
        )
    if isinstance(weight, Schedule):
        return weight
    if isinstance(weight, (int, float)) and not isinstance(weight, bool):
        return Constant(float(weight))
    if callable(weight):
        return weight
    raise TypeError(
        f"A weight must be a float or a schedule (a callable of the step); got {weight!r}. "
        "Use lossweave.schedules, e.g. lw.schedules.linear(0.0, 1.0, steps=1000)."
    )


@keras.saving.register_keras_serializable(package="lossweave")
class Constant(Schedule):
    """`w(step) = value`.

    >>> float(constant(3.0)(100))
    3.0
    """

    is_constant = True

    def __init__(self, value):
        self.value = float(value)

    def __call__(self, step):
        return ops.full((), self.value, dtype="float32")


@keras.saving.register_keras_serializable(package="lossweave")
class Linear(Schedule):
    """`w = start + (end - start) * clip((step - begin) / steps, 0, 1)`.

    >>> [round(float(linear(0.0, 1.0, steps=4, begin=2)(s)), 2) for s in (0, 2, 4, 6, 9)]
    [0.0, 0.0, 0.5, 1.0, 1.0]
    """

    def __init__(self, start, end, steps, begin=0):
        self.start, self.end = float(start), float(end)
        self.steps, self.begin = int(steps), int(begin)

    def __call__(self, step):
        return self.start + (self.end - self.start) * _progress(step, self.begin, self.steps)


@keras.saving.register_keras_serializable(package="lossweave")
class Cosine(Schedule):
    """`w = end + (start - end) * (1 + cos(pi * t)) / 2`, `t = clip((step - begin) / steps, 0, 1)`.

    >>> [round(float(cosine(1.0, 0.0, steps=10)(s)), 3) for s in (0, 5, 10, 20)]
    [1.0, 0.5, 0.0, 0.0]
    """

    def __init__(self, start, end, steps, begin=0):
        self.start, self.end = float(start), float(end)
        self.steps, self.begin = int(steps), int(begin)

    def __call__(self, step):
        t = _progress(step, self.begin, self.steps)
        return self.end + (self.start - self.end) * 0.5 * (1.0 + ops.cos(math.pi * t))


@keras.saving.register_keras_serializable(package="lossweave")
class Sigmoid(Schedule):
    """Logistic annealing (Bowman et al. 2016): `w = start + (end - start) * sigmoid((step - midpoint) / width)`.

    >>> round(float(sigmoid(0.0, 1.0, midpoint=100, width=10)(100)), 3)
    0.5
    """

    def __init__(self, start, end, midpoint, width):
        if width <= 0:
            raise ValueError(f"sigmoid: width must be > 0, got {width}.")
        self.start, self.end = float(start), float(end)
        self.midpoint, self.width = float(midpoint), float(width)

    def __call__(self, step):
        t = ops.sigmoid((_float(step) - self.midpoint) / self.width)
        return self.start + (self.end - self.start) * t


@keras.saving.register_keras_serializable(package="lossweave")
class Cyclical(Schedule):
    """Cyclical annealing (Fu et al. 2019): in every cycle of `period` steps the weight rises
    linearly from `start` to `end` over the first `ratio` of the cycle, then stays at `end`:
    `w = start + (end - start) * min((step mod period) / (ratio * period), 1)`.

    >>> [round(float(cyclical(0.0, 1.0, period=10, ratio=0.5)(s)), 2) for s in (0, 2, 5, 9, 10, 12)]
    [0.0, 0.4, 1.0, 1.0, 0.0, 0.4]
    """

    def __init__(self, start, end, period, ratio=0.5):
        if period < 1 or not 0.0 < ratio <= 1.0:
            raise ValueError(
                f"cyclical: need period >= 1 and 0 < ratio <= 1, got period={period}, ratio={ratio}."
            )
        self.start, self.end = float(start), float(end)
        self.period, self.ratio = int(period), float(ratio)

    def __call__(self, step):
        phase = _float(ops.mod(step, self.period))
        t = ops.minimum(phase / (self.ratio * self.period), 1.0)
        return self.start + (self.end - self.start) * t


@keras.saving.register_keras_serializable(package="lossweave")
class ExponentialApproach(Schedule):
    """sketch-rnn's KL weight: `w = end - (end - start) * decay ** step`.

    >>> round(float(exponential_approach(0.01, 0.5, decay=0.99995)(0)), 4)
    0.01
    >>> round(float(exponential_approach(0.01, 0.5, decay=0.5)(1)), 4)
    0.255
    """

    def __init__(self, start, end, decay):
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"exponential_approach: decay must be in (0, 1], got {decay}.")
        self.start, self.end, self.decay = float(start), float(end), float(decay)

    def __call__(self, step):
        factor = ops.exp(_float(step) * math.log(self.decay))
        return self.end - (self.end - self.start) * factor


@keras.saving.register_keras_serializable(package="lossweave")
class Piecewise(Schedule):
    """Joins schedules at step boundaries (optax's `join_schedules`): before `boundaries[0]`
    `schedules[0](step)`, then `schedules[i](step - boundaries[i - 1])`. Floats are constants.

    >>> s = piecewise([10, 20], [0.0, linear(0.0, 1.0, steps=10), 1.0])
    >>> [round(float(s(t)), 2) for t in (5, 10, 15, 25)]
    [0.0, 0.0, 0.5, 1.0]
    """

    def __init__(self, boundaries, schedules):
        boundaries = [int(b) for b in boundaries]
        if len(schedules) != len(boundaries) + 1 or boundaries != sorted(boundaries):
            raise ValueError(
                "piecewise: need increasing boundaries and one more schedule than boundaries; "
                f"got boundaries={boundaries} and {len(schedules)} schedules."
            )
        self.boundaries = boundaries
        self.schedules = [get(s) for s in schedules]

    def __call__(self, step):
        value = self.schedules[0](step)
        for boundary, schedule in zip(self.boundaries, self.schedules[1:]):
            value = ops.where(ops.greater_equal(step, boundary), schedule(step - boundary), value)
        return value

    def get_config(self):
        return {
            "boundaries": self.boundaries,
            "schedules": [keras.saving.serialize_keras_object(s) for s in self.schedules],
        }

    @classmethod
    def from_config(cls, config):
        schedules = [keras.saving.deserialize_keras_object(s) for s in config["schedules"]]
        return cls(config["boundaries"], schedules)


@keras.saving.register_keras_serializable(package="lossweave")
class Epochwise(Schedule):
    """A schedule of the epoch: `w = schedule(floor(step / steps_per_epoch))`.

    >>> s = epochwise(linear(0.0, 1.0, steps=2), steps_per_epoch=100)
    >>> [round(float(s(t)), 2) for t in (0, 99, 100, 250)]
    [0.0, 0.0, 0.5, 1.0]
    """

    def __init__(self, schedule, steps_per_epoch):
        if steps_per_epoch < 1:
            raise ValueError(f"epochwise: steps_per_epoch must be >= 1, got {steps_per_epoch}.")
        self.schedule = get(schedule)
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        return self.schedule(ops.floor_divide(step, self.steps_per_epoch))

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "steps_per_epoch": self.steps_per_epoch,
        }

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["schedule"]), config["steps_per_epoch"])


constant = Constant
linear = Linear
cosine = Cosine
sigmoid = Sigmoid
cyclical = Cyclical
exponential_approach = ExponentialApproach
piecewise = Piecewise
epochwise = Epochwise
