"""Mixture density network losses: sketch-rnn's bivariate mixture and a diagonal Gaussian mixture.

Densities are computed in log space (log-softmax mixture weights, log-sum-exp over components,
log sigmas used directly), so the losses and their gradients stay finite where exp-then-log
underflows: tiny sigmas, offsets far from every mean, correlations near +-1.
"""

import math

import keras
from keras import ops

_LOG_2PI = math.log(2.0 * math.pi)
#: Raw correlations are clipped at atanh(1 - 1e-6), so |rho| <= 1 - 1e-6.
_MAX_RAW_RHO = math.atanh(1.0 - 1e-6)
_PARTS = ("offset", "pen", "total")


def _check_last_dim(tensor, expected, what):
    if tensor.shape[-1] is not None and tensor.shape[-1] != expected:
        raise ValueError(
            f"{what}: y_pred's last axis has size {tensor.shape[-1]}, expected {expected}. "
            "Check num_mixture against the size of the model's output head."
        )


def _split_raw(y_pred, num_mixture):
    """Splits the head output; the correlations stay raw (clipped, before tanh)."""
    y_pred = ops.convert_to_tensor(y_pred)
    _check_last_dim(y_pred, 6 * num_mixture + 3, f"bivariate MDN with num_mixture={num_mixture}")
    pi, mu_x, mu_y, log_sigma_x, log_sigma_y, raw_rho = ops.split(y_pred[..., 3:], 6, axis=-1)
    raw_rho = ops.clip(raw_rho, -_MAX_RAW_RHO, _MAX_RAW_RHO)
    return y_pred[..., :3], pi, mu_x, mu_y, log_sigma_x, log_sigma_y, raw_rho


@keras.saving.register_keras_serializable(package="lossweave")
def split_mdn_params(y_pred, num_mixture):
    """Splits sketch-rnn's decoder head output into named mixture parameters.

    The last axis of `y_pred` has size `6 * num_mixture + 3`, laid out as in the reference
    implementation (Ha & Eck 2017): 3 pen logits, then `M` each of mixture logits, mu_x, mu_y,
    log sigma_x, log sigma_y and raw correlations. The correlation is `rho = tanh(raw)`, with
    `|raw|` clipped so that `|rho| <= 1 - 1e-6`.

    Args:
        y_pred: the head output, `(..., 6 * num_mixture + 3)`.
        num_mixture: the number of mixture components `M`.

    Returns:
        A dict of tensors: `pen_logits` `(..., 3)` and `pi_logits`, `mu_x`, `mu_y`,
        `log_sigma_x`, `log_sigma_y`, `rho`, each `(..., M)`.

    >>> import numpy as np
    >>> import lossweave as lw
    >>> params = lw.losses.split_mdn_params(np.zeros((4, 7, 6 * 20 + 3), "float32"), 20)
    >>> {name: tuple(t.shape) for name, t in params.items()}["mu_x"]
    (4, 7, 20)
    >>> sorted(params)
    ['log_sigma_x', 'log_sigma_y', 'mu_x', 'mu_y', 'pen_logits', 'pi_logits', 'rho']
    """
    pen_logits, pi, mu_x, mu_y, log_sigma_x, log_sigma_y, raw_rho = _split_raw(y_pred, num_mixture)
    return {
        "pen_logits": pen_logits,
        "pi_logits": pi,
        "mu_x": mu_x,
        "mu_y": mu_y,
        "log_sigma_x": log_sigma_x,
        "log_sigma_y": log_sigma_y,
        "rho": ops.tanh(raw_rho),
    }


def _bivariate_log_density(dx, dy, pi, mu_x, mu_y, log_sigma_x, log_sigma_y, raw_rho):
    """log sum_k softmax(pi)_k N((dx, dy) | mu_k, sigma_k, rho_k), over the last axis.

    With rho = tanh(r), |r| clipped: 1 - rho^2 = 1 / cosh(r)^2, so -0.5 log(1 - rho^2) is
    log cosh(r), and the exponent z / (1 - rho^2) = (nx - rho ny)^2 cosh(r)^2 + ny^2
    = (nx cosh(r) - ny sinh(r))^2 + ny^2 avoids the cancellation in nx^2 + ny^2 - 2 rho nx ny
    when rho is near +-1. cosh and sinh share one exp, and the log-softmax of the mixture
    weights is folded into the final log-sum-exp: fewer ops than the exp-then-log reference.
    """
    e = ops.exp(raw_rho)
    e_inv = 1.0 / e
    cosh = 0.5 * (e + e_inv)
    sinh = 0.5 * (e - e_inv)
    nx = (dx - mu_x) * ops.exp(-log_sigma_x)
    ny = (dy - mu_y) * ops.exp(-log_sigma_y)
    exponent = ops.square(nx * cosh - ny * sinh) + ops.square(ny)
    log_components = pi - (log_sigma_x + log_sigma_y) + ops.log(cosh) - 0.5 * exponent
    return ops.logsumexp(log_components, axis=-1) - ops.logsumexp(pi, axis=-1) - _LOG_2PI


@keras.saving.register_keras_serializable(package="lossweave")
def bivariate_mdn_nll(y_true, y_pred, num_mixture, part="total", training=True):
    """sketch-rnn's reconstruction loss (Ha & Eck 2017): bivariate mixture NLL plus pen loss.

    `y_true` is stroke-5, `(batch, steps, 5)` = `(dx, dy, p1, p2, p3)`; `y_pred` is the decoder
    head output `(batch, steps, 6 * M + 3)` (layout: `split_mdn_params`). Per step:

        offset = -(1 - p3) * log sum_k pi_k N((dx, dy) | mu_k, sigma_k, rho_k)
        pen = -sum_i p_i log softmax(pen_logits)_i

    Both are averaged over all (padded) steps, dividing by `steps` as the reference does, so the
    offset loss of a short sketch counts less. While training, the pen loss counts every step
    (the model learns to stay at end-of-sketch); in evaluation (`training=False`, injected by an
    `lw.Objective`) it counts the sketch's own steps only, `(1 - p3) * pen`, as the reference
    evaluates it. Returns per-sample values, shape `(batch,)`.
    Unlike the reference (which adds 1e-6 inside the log), the mixture density is computed in
    log space, so the loss stays exact and finite for tiny sigmas and far-away offsets.

    Args:
        y_true: stroke-5 targets `(batch, steps, 5)`.
        y_pred: head output `(batch, steps, 6 * num_mixture + 3)`.
        num_mixture: the number of mixture components `M`.
        part: `"offset"`, `"pen"` or `"total"` (offset + pen).
        training: whether the pen loss counts the padding's steps too (see above).

    >>> import numpy as np
    >>> import lossweave as lw
    >>> y_true = np.array([[[0.0, 0.0, 1, 0, 0], [0.0, 0.0, 0, 0, 1]]], "float32")
    >>> y_pred = np.zeros((1, 2, 6 * 2 + 3), "float32")   # unit sigmas, rho 0, equal weights
    >>> round(float(lw.losses.bivariate_mdn_nll(y_true, y_pred, 2, part="offset")[0]), 4)
    0.9189
    >>> round(float(lw.losses.bivariate_mdn_nll(y_true, y_pred, 2, part="pen")[0]), 4)
    1.0986
    >>> round(float(lw.losses.bivariate_mdn_nll(y_true, y_pred, 2, part="pen", training=False)[0]), 4)
    0.5493
    """
    if part not in _PARTS:
        raise ValueError(f"bivariate_mdn_nll: part must be one of {_PARTS}, got {part!r}.")
    pen_logits, *mixture = _split_raw(y_pred, num_mixture)
    y_true = ops.cast(y_true, pen_logits.dtype)
    in_sketch = 1.0 - y_true[..., 4]
    loss = 0.0
    if part != "pen":
        log_density = _bivariate_log_density(y_true[..., 0:1], y_true[..., 1:2], *mixture)
        loss = -log_density * in_sketch
    if part != "offset":
        pen = -ops.sum(y_true[..., 2:] * ops.log_softmax(pen_logits, axis=-1), axis=-1)
        loss = loss + (pen if training else pen * in_sketch)
    step_axes = tuple(range(1, len(loss.shape)))
    return ops.mean(loss, axis=step_axes) if step_axes else loss


@keras.saving.register_keras_serializable(package="lossweave")
def gmm_nll(y_true, y_pred, num_mixture):
    """Negative log-likelihood of a mixture of diagonal Gaussians in `D` dimensions.

    `y_true` is `(batch, ..., D)`; `y_pred` is `(batch, ..., M * (1 + 2 * D))`, laid out as `M`
    mixture logits, then `M * D` means, then `M * D` log sigmas (component-major: the `D` values
    of component 0 first). Per position:

        nll = -log sum_k softmax(logits)_k prod_d N(y_d | mu_kd, exp(log_sigma_kd)^2)

    computed with log-softmax and log-sum-exp. Returns per-sample values, shape `(batch,)`:
    the mean over the axes between batch and `D`.

    Args:
        y_true: targets `(batch, ..., D)`.
        y_pred: mixture parameters `(batch, ..., M * (1 + 2 * D))`.
        num_mixture: the number of mixture components `M`.

    >>> import numpy as np
    >>> import lossweave as lw
    >>> y_true = np.zeros((3, 1), "float32")
    >>> y_pred = np.zeros((3, 2 * (1 + 2 * 1)), "float32")   # two standard normals
    >>> [round(float(v), 4) for v in lw.losses.gmm_nll(y_true, y_pred, 2)]
    [0.9189, 0.9189, 0.9189]
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    dim = y_true.shape[-1]
    what = f"gmm_nll with num_mixture={num_mixture}, D={dim}"
    _check_last_dim(y_pred, num_mixture * (1 + 2 * dim), what)
    logits = y_pred[..., :num_mixture]
    shape = tuple(ops.shape(logits)) + (dim,)
    mu = ops.reshape(y_pred[..., num_mixture : num_mixture * (1 + dim)], shape)
    log_sigma = ops.reshape(y_pred[..., num_mixture * (1 + dim) :], shape)
    z = (ops.expand_dims(y_true, -2) - mu) * ops.exp(-log_sigma)
    log_components = ops.log_softmax(logits, axis=-1) - ops.sum(
        0.5 * ops.square(z) + log_sigma, axis=-1
    )
    nll = 0.5 * dim * _LOG_2PI - ops.logsumexp(log_components, axis=-1)
    axes = tuple(range(1, len(nll.shape)))
    return ops.mean(nll, axis=axes) if axes else nll
