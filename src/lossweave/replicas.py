"""Cross-replica reduction of a step's statistic: the one place that knows `tf.distribute`.

Under `keras.distribution` (JAX) a step computes on the global batch, sharded, so its statistics
are already global. Under a `tf.distribute` strategy each replica runs the step on its part of
the batch, and Keras sums a metric's state variables when it reads them; a state that must be
reduced otherwise (a maximum, a minimum) is reduced here, inside the step, across the replicas.

>>> from keras import ops
>>> float(reduce_across_replicas(ops.array(2.0), "max"))  # one replica: unchanged
2.0
"""

import keras
from keras import ops

_REDUCE = {"max": ops.max, "min": ops.min}


def _tf_replica_context():
    """The `tf.distribute` replica context of a step with several replicas, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def reduce_across_replicas(statistic, reduction: str):
    """`statistic` (a scalar) reduced across the replicas of this step by `reduction`.

    `"sum"` returns `statistic` unchanged: summed states are summed when Keras reads them. `"max"`
    and `"min"` gather every replica's value and reduce them, so each replica holds the global one.
    """
    context = _tf_replica_context() if reduction != "sum" else None
    if context is None:
        return statistic
    return _REDUCE[reduction](context.all_gather(ops.expand_dims(statistic, 0), axis=0))
