"""Benchmark: `lw.losses.bivariate_mdn_nll` against sketch-rnn's exp-then-log formula.

M = 20 components, batch 100, 250 steps; forward + gradient w.r.t. y_pred, compiled where the
backend allows (jax.jit; tf.function, and on TensorFlow also with XLA as Keras' jit_compile does;
torch runs eagerly). The implementations are timed alternately in the same run, so a change of
machine load hits all of them. Prints the median ms per call and the ratio lossweave/naive.

    KERAS_BACKEND=jax python benchmarks/mdn.py
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import lossweave as lw  # noqa: E402

M, BATCH, STEPS = 20, 100, 250
WARMUP, REPEATS = 3, 30


def naive_mdn_nll(y_true, y_pred, num_mixture):
    """The reference (sketch-rnn's get_mixture_coef, tf_2d_normal, get_lossfunc) in keras.ops:
    softmax, exp(log sigma), the density, then -log(density + 1e-6); per-sample means over steps."""
    pen_logits = y_pred[..., :3]
    pi, mu1, mu2, sigma1, sigma2, rho = ops.split(y_pred[..., 3:], 6, axis=-1)
    pi = ops.softmax(pi, axis=-1)
    sigma1, sigma2, rho = ops.exp(sigma1), ops.exp(sigma2), ops.tanh(rho)
    norm1 = y_true[..., 0:1] - mu1
    norm2 = y_true[..., 1:2] - mu2
    s1s2 = sigma1 * sigma2
    z = ops.square(norm1 / sigma1) + ops.square(norm2 / sigma2) - 2 * rho * norm1 * norm2 / s1s2
    neg_rho = 1 - ops.square(rho)
    density = ops.exp(-z / (2 * neg_rho)) / (2 * np.pi * s1s2 * ops.sqrt(neg_rho))
    offset = -ops.log(ops.sum(pi * density, axis=-1) + 1e-6) * (1 - y_true[..., 4])
    pen = ops.categorical_crossentropy(y_true[..., 2:], pen_logits, from_logits=True)
    return ops.mean(offset + pen, axis=1)


def data(seed=0):
    rng = np.random.default_rng(seed)
    y_true = np.zeros((BATCH, STEPS, 5), "float32")
    y_true[..., :2] = rng.normal(size=(BATCH, STEPS, 2))
    y_true[np.arange(BATCH)[:, None], np.arange(STEPS), 2 + rng.integers(0, 2, (BATCH, STEPS))] = 1
    for i, end in enumerate(rng.integers(STEPS // 4, STEPS, size=BATCH)):
        y_true[i, end:] = [0, 0, 0, 0, 1]
    y_pred = (rng.normal(size=(BATCH, STEPS, 6 * M + 3)) * 0.5).astype("float32")
    return y_true, y_pred


def compiled_value_and_grad(loss_fn, y_true, xla=False):
    """A function y_pred -> (mean loss, gradient), compiled the backend's usual way."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        y_true = jnp.asarray(y_true)
        step = jax.jit(jax.value_and_grad(lambda p: jnp.mean(loss_fn(y_true, p, M))))
        return lambda y_pred: jax.block_until_ready(step(y_pred))
    if backend == "tensorflow":
        import tensorflow as tf

        y_true = tf.constant(y_true)

        @tf.function(jit_compile=xla)
        def step(y_pred):
            with tf.GradientTape() as tape:
                tape.watch(y_pred)
                loss = tf.reduce_mean(loss_fn(y_true, y_pred, M))
            return loss, tape.gradient(loss, y_pred)

        return lambda y_pred: [t.numpy() for t in step(y_pred)]
    if backend == "torch":
        import torch

        y_true = torch.as_tensor(y_true)

        def step(y_pred):
            y_pred = y_pred.detach().requires_grad_(True)
            loss = torch.mean(loss_fn(y_true, y_pred, M))
            loss.backward()
            return loss.detach(), y_pred.grad

        return step
    raise NotImplementedError(backend)


def main():
    backend = keras.backend.backend()
    y_true, y_pred = data()
    y_pred = ops.convert_to_tensor(y_pred)
    compilations = [False, True] if backend == "tensorflow" else [False]
    steps = {}
    for xla in compilations:
        suffix = " (XLA)" if xla else ""
        steps["naive" + suffix] = compiled_value_and_grad(naive_mdn_nll, y_true, xla)
        steps["lossweave" + suffix] = compiled_value_and_grad(
            lw.losses.bivariate_mdn_nll, y_true, xla
        )
    (v_naive, g_naive), (v_lw, g_lw) = (
        [ops.convert_to_numpy(t) for t in steps[name](y_pred)] for name in ("naive", "lossweave")
    )
    grad_diff = np.max(np.abs(g_naive - g_lw)) / np.max(np.abs(g_naive))
    for _ in range(WARMUP):
        for step in steps.values():
            step(y_pred)
    times = {name: [] for name in steps}
    for _ in range(REPEATS):
        for name, step in steps.items():
            start = time.perf_counter()
            step(y_pred)
            times[name].append(time.perf_counter() - start)
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    print(f"backend {backend}: M={M}, batch {BATCH}, {STEPS} steps, forward + grad w.r.t. y_pred")
    print(f"  loss: naive {v_naive:.6f}, lossweave {v_lw:.6f} (naive adds 1e-6 inside the log)")
    print(f"  max |grad difference| / max |grad|: {grad_diff:.1e}")
    for name in steps:
        fastest = 1e3 * min(times[name])
        print(f"  {name:>15}: {ms[name]:8.2f} ms (median of {REPEATS}, min {fastest:.2f})")
    for xla in compilations:
        suffix = " (XLA)" if xla else ""
        ratio = ms["lossweave" + suffix] / ms["naive" + suffix]
        print(f"  ratio lossweave/naive{suffix}: {ratio:.2f}")


if __name__ == "__main__":
    main()
