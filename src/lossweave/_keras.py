"""The private Keras APIs lossweave needs, in one place, each where no public way exists.

`tests/test_keras_private.py` fails when Keras changes any of them.

>>> callable(get_keras_mask) and callable(scale_loss_for_distribution)
True
"""

import contextlib
import math

import keras

# The output mask Keras attaches to a tensor (Embedding(mask_zero=True), Masking): `Loss.__call__`
# reads it with this function; there is no public accessor.
from keras.src.backend.common.masking import get_keras_mask  # noqa: F401

# How Keras scales its own losses under tf.distribute (divided by the number of replicas).
from keras.src.losses.loss import scale_loss_for_distribution  # noqa: F401

# A loss identifier resolved exactly as `compile(loss=...)` resolves it ("crossentropy" picks
# binary, categorical or sparse from the shapes; a function is wrapped in a `Loss`, which applies
# the output mask and sample weights).
from keras.src.losses.losses import LossFunctionWrapper
from keras.src.trainers.compile_utils import MetricsList
from keras.src.trainers.compile_utils import get_loss as resolve_loss  # noqa: F401

# Runs a function on symbolic tensors and returns the symbolic result (what `Layer.__call__` does
# on KerasTensors); used once per term to check that its first axis follows the batch size.
from keras.src.backend import compute_output_spec  # noqa: F401

# The class of functional models: a functional lw.Model subclasses it directly, because
# `keras.Model.__init__` would rewrite the bases of lw.Model itself to make it functional.
from keras.src.models.functional import Functional  # noqa: F401

# Keras's own losses divide by the number of replicas (see above); a term's logged value is the
# unscaled one.
from keras.src.losses.loss import unscale_loss_for_distribution  # noqa: F401



def keras_loss_value(loss, y_true, y_pred, sample_weight):
    """What `loss(y_true, y_pred, sample_weight)` gives inside `compile(loss=...)`, unscaled.

    Two Keras details: under a mask, `apply_mask` multiplies the sample weight in place
    (`sample_weight *= float_mask`), which on torch changes the caller's tensor, so the loss gets
    a copy; and a mean-reduced Keras loss is divided by the number of replicas, which is undone
    here because the objective scales its total once.
    """
    if sample_weight is None and get_keras_mask(y_pred) is None and _plain_mean(loss):
        # What `Loss.__call__` computes without weights or mask, minus its per-step overhead
        # (a name scope, the weighting helpers): the same sum divided by the same count.
        values = loss.call(
            keras.ops.convert_to_tensor(y_true, dtype=loss.dtype),
            keras.ops.convert_to_tensor(y_pred, dtype=loss.dtype),
        )
        count = math.prod(values.shape) if None not in values.shape else None
        if count and get_keras_mask(values) is None:
            return keras.ops.sum(values) / count
    if sample_weight is not None and get_keras_mask(y_pred) is not None:
        sample_weight = keras.ops.copy(sample_weight)
    value = loss(y_true, y_pred, sample_weight=sample_weight)
    if loss.reduction in ("sum_over_batch_size", "mean", "mean_with_sample_weight"):
        value = unscale_loss_for_distribution(value)
    return value


def _plain_mean(loss):
    """A loss function wrapped as `compile` wraps a loss name, reduced by the mean."""
    return isinstance(loss, LossFunctionWrapper) and loss.reduction == "sum_over_batch_size"


#: The trainer method that builds a model's state symbolically before `fit`/`evaluate`; lw models
#: wrap it so that the symbolic forward pass records taps as a real step does.
SYMBOLIC_BUILD = "_symbolic_build"

#: The `Function` method that runs a functional graph; a functional `lw.Model` runs its graph on
#: the outputs and the taps, and shows only the outputs as `model.outputs`.
RUN_THROUGH_GRAPH = "_run_through_graph"


def forget_compiled(model):
    """Drops what an earlier `compile` left: Keras keeps its old `CompileLoss` and
    `CompileMetrics` (and their logs) when `compile` is called again with `loss=None` or
    `metrics=None`, which is how an `lw.Objective` compiles."""
    model._compile_loss = None
    model._compile_metrics = None


def flatten_layers(model):
    """Every layer `model` tracks, at any depth (Keras's `Layer._flatten_layers`)."""
    return model._flatten_layers(include_self=False, recursive=True)


@contextlib.contextmanager
def unlocked_state(layer):
    """Lets `compile` add a balancer's variables to a built model: Keras locks the state of a
    built layer (`Layer._lock_state`; functional and Sequential models stay unlocked)."""
    locked = layer._tracker.locked
    layer._tracker.unlock()
    try:
        yield
    finally:
        if locked:
            layer._tracker.lock()


#: What `lossweave._gradients` calls on a model, as Keras's own backend train steps do
#: (`keras/src/backend/{jax,tensorflow,torch}/trainer.py`): there is no public way to compute
#: a step's loss and update the loss tracker as `fit` does.
TRAIN_STEP_INTERNALS = {
    "jax": ("compute_loss_and_updates", "_update_metrics_variables"),
    "tensorflow": ("_call_has_training_arg", "_compute_loss", "_loss_tracker"),
    "torch": ("_call_has_training_arg", "_compute_loss", "_loss_tracker"),
}


class MetricGroup(MetricsList):
    """Metrics grouped so that Keras callbacks in `mode="auto"` find them by name.

    `EarlyStopping`, `ModelCheckpoint` and `ReduceLROnPlateau` look a monitored name up only inside
    the `MetricsList`s of `model.metrics`, and read its `_direction`; the group's result is the
    dict of its metrics' results, as Keras logs them.
    """

    def __init__(self, metrics, name):
        super().__init__(list(metrics), name=name)

    def result(self):
        results = {}
        for metric in self.metrics:
            result = metric.result()
            results.update(result if isinstance(result, dict) else {metric.name: result})
        return results


__all__ = [
    "Functional",
    "compute_output_spec",
    "unscale_loss_for_distribution",
    "MetricGroup",
    "RUN_THROUGH_GRAPH",
    "SYMBOLIC_BUILD",
    "TRAIN_STEP_INTERNALS",
    "flatten_layers",
    "forget_compiled",
    "get_keras_mask",
    "keras_loss_value",
    "resolve_loss",
    "scale_loss_for_distribution",
    "unlocked_state",
]
