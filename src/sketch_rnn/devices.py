"""``sketch-rnn train --distribute``: data parallelism over every local device, Keras's own.

On JAX, ``keras.distribution.DataParallel`` over all local devices; on TensorFlow, a
``tf.distribute.MirroredStrategy`` over the local GPUs (or, without any, the logical CPUs). The
global batch is the preset's ``batch_size``, split across the devices, so a step, and the KL
schedule that follows the step, is the same as on one device. Keras 3.15 has no data parallelism
for ``fit`` on torch: asking for it there is an error that says so.

>>> with data_parallel(False) as placement:  # one device: nothing changes
...     placement.count
1
"""

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import keras


def _mirrored_strategy():
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where ``train`` runs: ``count`` devices; build and restore the model in ``building()``.

    ``one_epoch_a_fit``: ``tf.distribute`` starts a new distributed iterator of a Python
    generator every epoch, dropping the batches the old one had prefetched, so each ``fit`` there
    trains one epoch on exactly its batches.
    """

    count: int = 1
    building: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    one_epoch_a_fit: bool = False


@contextlib.contextmanager
def data_parallel(distribute: bool) -> Iterator[Placement]:
    """The context ``train`` runs in, giving its ``Placement``.

    With ``distribute``, all local devices (see the module); without, one. On torch
    ``distribute`` is a ``ValueError`` saying which backends have it.
    """
    backend = keras.backend.backend()
    if not distribute:
        yield Placement()
    elif backend == "jax":  # a global setting: variables are laid out and batches split by it
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        try:
            yield Placement(len(keras.distribution.list_devices()))
        finally:
            keras.distribution.set_distribution(previous)
    elif backend == "tensorflow":  # a model built in the scope keeps its strategy for fit
        strategy = _mirrored_strategy()
        yield Placement(strategy.num_replicas_in_sync, strategy.scope, one_epoch_a_fit=True)
    else:
        raise ValueError(
            f"--distribute: Keras {keras.version()} has no data parallelism for the {backend} "
            "backend in fit; use KERAS_BACKEND=jax (keras.distribution.DataParallel) or "
            "KERAS_BACKEND=tensorflow (tf.distribute.MirroredStrategy), or train on one device "
            "without --distribute"
        )


def check_split(batch_size: int, devices: int) -> None:
    """A ``ValueError`` where JAX cannot split ``batch_size`` evenly across ``devices``.

    TensorFlow's replicas take uneven parts of a batch.

    >>> check_split(8, 2)
    """
    if devices > 1 and keras.backend.backend() == "jax" and batch_size % devices:
        raise ValueError(
            f"--distribute: batch_size {batch_size} does not split across {devices} devices; "
            f"--set batch_size= a multiple of {devices}"
        )
