"""Metric-learning losses on embedding taps."""

import keras
from keras import ops


def _distance(a, b, squared):
    d2 = ops.sum(ops.square(a - b), axis=-1)
    # The floor keeps the gradient of sqrt finite when two embeddings coincide.
    return d2 if squared else ops.sqrt(ops.maximum(d2, 1e-12))


@keras.saving.register_keras_serializable(package="lossweave")
def triplet_margin(anchor, positive, negative, margin=1.0, squared=False):
    """Triplet margin loss (Schroff et al. 2015, FaceNet) on three embedding taps.

        loss = max(d(anchor, positive) - d(anchor, negative) + margin, 0)

    with the Euclidean distance `d` (as `torch.nn.TripletMarginLoss`), or its square if
    `squared=True` (as FaceNet). The parameter names are tap names; rename with
    `bind={"anchor": ..., "positive": ..., "negative": ...}`. Returns per-sample values,
    shape `(batch,)`.

    Args:
        anchor: embeddings `(batch, dim)`.
        positive: embeddings of the same identity, `(batch, dim)`.
        negative: embeddings of another identity, `(batch, dim)`.
        margin: the required gap between the two distances.
        squared: use squared Euclidean distances.

    >>> import numpy as np
    >>> import lossweave as lw
    >>> a = np.array([[0.0, 0.0], [0.0, 0.0]], "float32")
    >>> p = np.array([[1.0, 0.0], [0.0, 0.5]], "float32")
    >>> n = np.array([[0.0, 1.5], [3.0, 0.0]], "float32")
    >>> [round(float(v), 4) for v in lw.losses.triplet_margin(a, p, n)]
    [0.5, 0.0]
    """
    anchor = ops.convert_to_tensor(anchor)
    positive = ops.cast(positive, anchor.dtype)
    negative = ops.cast(negative, anchor.dtype)
    gap = _distance(anchor, positive, squared) - _distance(anchor, negative, squared)
    return ops.relu(gap + margin)
