"""Token-level cross-entropy for padded sequences, averaged over the real tokens."""

import keras
from keras import ops


def _broadcast_to_rank(weights, like):
    weights = ops.cast(weights, like.dtype)
    while len(weights.shape) < len(like.shape):
        weights = ops.expand_dims(weights, -1)
    return weights


@keras.saving.register_keras_serializable(package="lossweave")
def masked_sequence_crossentropy(y_true, y_pred, mask=None, sample_weight=None, from_logits=True):
    """Sparse categorical cross-entropy per token, averaged over the real (unmasked) tokens.

        ce_bt = -log softmax(y_pred_bt)[y_true_bt]
        w_bt = mask_bt * sample_weight_b(t)
        loss = sum(ce * w) / sum(w)

    A mean over real tokens is not a mean of per-sample values, so this term returns a scalar and
    applies `sample_weight` itself (shape `(batch,)` or `(batch, T)`). Without a mask every token
    counts; with no real token at all the loss is 0.

    Args:
        y_true: integer token ids `(batch, T)`.
        y_pred: logits (or probabilities if `from_logits=False`) `(batch, T, V)`.
        mask: `(batch, T)`, 1 for real tokens and 0 for padding; `None` counts every token.
        sample_weight: `(batch,)` or `(batch, T)` weights, or `None`.
        from_logits: whether `y_pred` holds logits.

    >>> import numpy as np
    >>> import lossweave as lw
    >>> y_true = np.array([[1, 0, 1]])
    >>> y_pred = np.log(np.array([[[0.5, 0.5], [0.9, 0.1], [0.1, 0.9]]], "float32"))
    >>> round(float(lw.losses.masked_sequence_crossentropy(y_true, y_pred, mask=[[0, 1, 1]])), 4)
    0.1054
    """
    y_pred = ops.convert_to_tensor(y_pred)
    ce = ops.sparse_categorical_crossentropy(y_true, y_pred, from_logits=from_logits)
    weights = ops.ones_like(ce)
    for w in (mask, sample_weight):
        if w is not None:
            weights = weights * _broadcast_to_rank(w, ce)
    total = ops.sum(weights)
    return ops.sum(ce * weights) / ops.where(total > 0, total, ops.ones_like(total))
