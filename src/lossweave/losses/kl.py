"""KL divergence of a diagonal Gaussian posterior from the standard normal prior, with free bits."""

import keras
from keras import ops


def _kl_per_dim(z_mean, z_log_var):
    """Elementwise `-0.5 * (1 + log_var - mean^2 - exp(log_var))`, shape of `z_mean`."""
    z_mean = ops.convert_to_tensor(z_mean)
    z_log_var = ops.cast(z_log_var, z_mean.dtype)
    return -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))


def _non_batch_axes(x):
    return tuple(range(1, len(x.shape)))


@keras.saving.register_keras_serializable(package="lossweave")
def gaussian_kl(z_mean, z_log_var, free_bits=0.0):
    """KL(N(z_mean, exp(z_log_var)) || N(0, I)), averaged over the latent dimensions.

    Per sample, as in sketch-rnn (Ha & Eck 2017):

        kl = -0.5 * mean_d(1 + z_log_var - z_mean^2 - exp(z_log_var))

    Returns per-sample values, shape `(batch,)`, when `free_bits == 0`. With `free_bits > 0`
    the floor applies to the batch mean, as sketch-rnn's `kl_tolerance` does, and the result is
    the scalar `max(mean_batch(kl), free_bits)`: below the floor the term has no gradient.

    Args:
        z_mean: posterior means, `(batch, latent)` (any further axes are averaged too).
        z_log_var: posterior log variances, same shape.
        free_bits: floor in nats per latent dimension; `0.0` disables it.

    >>> import numpy as np
    >>> import lossweave as lw
    >>> z_mean = np.array([[0.0, 0.0], [1.0, -1.0]], "float32")
    >>> z_log_var = np.zeros((2, 2), "float32")
    >>> [round(float(v), 4) for v in lw.losses.gaussian_kl(z_mean, z_log_var)]
    [0.0, 0.5]
    >>> round(float(lw.losses.gaussian_kl(z_mean, z_log_var, free_bits=0.3)), 4)
    0.3
    """
    kl = _kl_per_dim(z_mean, z_log_var)
    axes = _non_batch_axes(kl)
    kl = ops.mean(kl, axis=axes) if axes else kl
    if free_bits > 0:
        return ops.maximum(ops.mean(kl), ops.cast(free_bits, kl.dtype))
    return kl


@keras.saving.register_keras_serializable(package="lossweave")
def gaussian_kl_per_dim(z_mean, z_log_var, free_bits=0.0):
    """KL(N(z_mean, exp(z_log_var)) || N(0, I)) with free bits per latent dimension.

    Kingma et al. 2016 ("Improving Variational Inference with Inverse Autoregressive Flow"):
    each dimension's batch-mean KL is floored separately, then the floors are averaged:

        kl_d = mean_batch(-0.5 * (1 + z_log_var_d - z_mean_d^2 - exp(z_log_var_d)))
        loss = mean_d(max(kl_d, free_bits))

    Returns a scalar (the floor is batch-level).

    Args:
        z_mean: posterior means, `(batch, latent)`.
        z_log_var: posterior log variances, same shape.
        free_bits: floor in nats for each latent dimension.

    >>> import numpy as np
    >>> import lossweave as lw
    >>> z_mean = np.array([[2.0, 0.0], [2.0, 0.0]], "float32")
    >>> z_log_var = np.zeros((2, 2), "float32")
    >>> round(float(lw.losses.gaussian_kl_per_dim(z_mean, z_log_var, free_bits=0.5)), 4)
    1.25
    """
    kl = ops.mean(_kl_per_dim(z_mean, z_log_var), axis=0)
    return ops.mean(ops.maximum(kl, ops.cast(free_bits, kl.dtype)))
