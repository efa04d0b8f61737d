"""Classification and segmentation losses Keras lacks: sparse focal loss, smoothed soft Dice."""

import keras
from keras import ops


def _mean_over_non_batch_axes(x):
    axes = tuple(range(1, len(x.shape)))
    return ops.mean(x, axis=axes) if axes else x


@keras.saving.register_keras_serializable(package="lossweave")
def sparse_categorical_focal_loss(y_true, y_pred, gamma=2.0, alpha=None, from_logits=True):
    """Multi-class focal loss (Lin et al. 2017) with integer labels, computed in log space.

        log_p_t = log_softmax(y_pred)[y_true]
        loss = -alpha[y_true] * (1 - exp(log_p_t))^gamma * log_p_t

    `keras.losses.categorical_focal_crossentropy` takes one-hot labels and clips probabilities;
    this takes class ids and uses log-softmax and `-expm1(log_p_t)`, so logits of any size are
    exact. Returns per-sample values, shape `(batch,)` (the mean over further axes, e.g. pixels).

    Args:
        y_true: integer class ids `(batch, ...)`.
        y_pred: logits (or probabilities if `from_logits=False`) `(batch, ..., C)`.
        gamma: focusing parameter; `0` gives the cross-entropy.
        alpha: optional per-class weights, a sequence of length `C`.
        from_logits: whether `y_pred` holds logits.

    >>> import numpy as np
    >>> import lossweave as lw
    >>> logits = np.log(np.array([[0.9, 0.1], [0.5, 0.5]], "float32"))
    >>> [round(float(v), 4) for v in lw.losses.sparse_categorical_focal_loss([0, 1], logits)]
    [0.0011, 0.1733]
    """
    y_pred = ops.convert_to_tensor(y_pred)
    if from_logits:
        log_p = ops.log_softmax(y_pred, axis=-1)
    else:
        log_p = ops.log(ops.clip(y_pred, keras.config.epsilon(), 1.0))
    y_true = ops.cast(y_true, "int32")
    log_p_t = ops.squeeze(ops.take_along_axis(log_p, ops.expand_dims(y_true, -1), axis=-1), -1)
    loss = -log_p_t
    if gamma:
        # The floor keeps the gradient of x**gamma finite at x = 0 for gamma < 1.
        loss = loss * ops.power(ops.maximum(-ops.expm1(log_p_t), 1e-30), gamma)
    if alpha is not None:
        loss = loss * ops.take(ops.convert_to_tensor(alpha, dtype=loss.dtype), y_true)
    return _mean_over_non_batch_axes(loss)


@keras.saving.register_keras_serializable(package="lossweave")
def soft_dice(y_true, y_pred, smooth=1.0):
    """Soft Dice loss per class, averaged over classes (segmentation, Milletari et al. 2016).

        dice_c = (2 * sum_x(y_c p_c) + smooth) / (sum_x(y_c) + sum_x(p_c) + smooth)
        loss = 1 - mean_c(dice_c)

    with sums over the spatial axes (all but the first and last). Unlike `keras.losses.dice`,
    the classes are scored separately (so small structures count as much as large ones) and the
    smoothing term makes a class absent from both target and prediction score 1, not 0.
    Returns per-sample values, shape `(batch,)`.

    Args:
        y_true: one-hot (or soft) targets `(batch, ..., C)`.
        y_pred: class probabilities, same shape (e.g. a softmax or sigmoid output).
        smooth: additive smoothing in numerator and denominator.

    >>> import numpy as np
    >>> import lossweave as lw
    >>> y_true = np.array([[[1.0, 0.0], [1.0, 0.0]]], "float32")   # (batch, pixels, classes)
    >>> y_pred = np.array([[[1.0, 0.0], [0.0, 1.0]]], "float32")
    >>> round(float(lw.losses.soft_dice(y_true, y_pred, smooth=0.0)[0]), 4)
    0.6667
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    axes = tuple(range(1, len(y_pred.shape) - 1))
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    dice = (2.0 * intersection + smooth) / (total + smooth)
    return 1.0 - ops.mean(dice, axis=-1)
