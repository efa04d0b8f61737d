"""lossweave.losses: each term against a float64 numpy reference, stability at extreme inputs
(with a naive exp-then-log version shown to fail there), and property tests over shapes."""

import functools
import inspect
import math

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import ops

import lossweave as lw

PUBLIC = [
    lw.losses.gaussian_kl,
    lw.losses.gaussian_kl_per_dim,
    lw.losses.bivariate_mdn_nll,
    lw.losses.split_mdn_params,
    lw.losses.gmm_nll,
    lw.losses.masked_sequence_crossentropy,
    lw.losses.activation_penalty,
    lw.losses.sparse_categorical_focal_loss,
    lw.losses.soft_dice,
    lw.losses.triplet_margin,
]
RTOL = 1e-5
ATOL = 1e-6
property_settings = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# ----------------------------------------------------------------------------- helpers

BACKEND = keras.backend.backend()


def _split_inputs(inputs):
    """numpy arrays are tensors; everything else is configuration (static under jax.jit)."""
    arrays = {k: v for k, v in inputs.items() if isinstance(v, np.ndarray)}
    config = tuple(sorted((k, v) for k, v in inputs.items() if k not in arrays))
    return arrays, config


@functools.cache
def _jax_compiled(fn, wrt, config):
    """On JAX, one compiled program per (function, configuration, shapes): op-by-op eager JAX
    compiles every primitive for every new shape, which made this suite take minutes."""
    import jax
    import jax.numpy as jnp

    config = dict(config)
    if wrt is None:
        return jax.jit(lambda arrays: fn(**arrays, **config))

    def total(x, arrays):
        value = fn(**{wrt: x}, **arrays, **config)
        return jnp.sum(value), value

    return jax.jit(jax.value_and_grad(total, has_aux=True))


def evaluate(fn, **inputs):
    """`fn(**inputs)` as a numpy array."""
    arrays, config = _split_inputs(inputs)
    if BACKEND == "jax":
        return np.asarray(_jax_compiled(fn, None, config)(arrays))
    return np_(fn(**arrays, **dict(config)))


def value_and_grad(fn, wrt, **inputs):
    """`fn(**inputs)` and the gradient of its sum w.r.t. `inputs[wrt]`, as numpy arrays,
    with the current backend's autodiff."""
    arrays, config = _split_inputs(inputs)
    x = np.asarray(arrays.pop(wrt), "float32")
    if BACKEND == "jax":
        (_, value), grad = _jax_compiled(fn, wrt, config)(x, arrays)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            value = fn(**{wrt: t}, **arrays, **dict(config))
            total = tf.reduce_sum(value)
        grad = tape.gradient(total, t)
    elif BACKEND == "torch":
        import torch

        t = torch.tensor(x, requires_grad=True)
        value = fn(**{wrt: t}, **arrays, **dict(config))
        torch.sum(value).backward()
        value, grad = value.detach(), t.grad
    else:
        raise NotImplementedError(BACKEND)
    return np_(value), np_(grad)


def np_(x):
    return ops.convert_to_numpy(x)


def assert_finite(*arrays):
    for a in arrays:
        assert np.all(np.isfinite(a)), a


def np_log_softmax(x, axis=-1):
    x = x - np.max(x, axis=axis, keepdims=True)
    return x - np.log(np.sum(np.exp(x), axis=axis, keepdims=True))


def np_logsumexp(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def random_stroke5(rng, batch, steps, end_at=None):
    """Stroke-5 targets; sample i ends (p3 = 1 from then on) at end_at[i]."""
    y = np.zeros((batch, steps, 5), "float32")
    y[..., :2] = rng.normal(size=(batch, steps, 2))
    pen = rng.integers(0, 2, size=(batch, steps))
    y[..., 2] = pen == 0
    y[..., 3] = pen == 1
    end_at = rng.integers(1, steps + 1, size=batch) if end_at is None else end_at
    for i, end in enumerate(end_at):
        y[i, end:, :2] = 0.0
        y[i, end:, 2:] = [0, 0, 1]
    return y


def random_mdn_head(rng, batch, steps, m):
    y = rng.normal(size=(batch, steps, 6 * m + 3)).astype("float32")
    y[..., 3 + 3 * m : 3 + 5 * m] *= 0.5  # log sigmas in about [-1.5, 1.5]
    return y


# ----------------------------------------------------------------------------- float64 references


def ref_kl_per_dim(mean, log_var):
    mean, log_var = np.float64(mean), np.float64(log_var)
    return -0.5 * (1 + log_var - mean**2 - np.exp(log_var))


def ref_bivariate(y_true, y_pred, m, part="total", training=True):
    """sketch-rnn's formula written directly: density, then -log; mean over all steps. In
    evaluation the reference counts the pen loss of the sketch's own steps only."""
    y_true, y_pred = np.float64(y_true), np.float64(y_pred)
    pen_logits = y_pred[..., :3]
    pi, mu1, mu2, s1, s2, rho = np.split(y_pred[..., 3:], 6, axis=-1)
    pi = np.exp(pi) / np.sum(np.exp(pi), axis=-1, keepdims=True)
    s1, s2, rho = np.exp(s1), np.exp(s2), np.tanh(rho)
    n1 = y_true[..., :1] - mu1
    n2 = y_true[..., 1:2] - mu2
    z = (n1 / s1) ** 2 + (n2 / s2) ** 2 - 2 * rho * n1 * n2 / (s1 * s2)
    density = np.exp(-z / (2 * (1 - rho**2))) / (2 * np.pi * s1 * s2 * np.sqrt(1 - rho**2))
    offset = -np.log(np.sum(pi * density, axis=-1)) * (1 - y_true[..., 4])
    pen_probs = np.exp(pen_logits) / np.sum(np.exp(pen_logits), axis=-1, keepdims=True)
    pen = -np.sum(y_true[..., 2:] * np.log(pen_probs), axis=-1)
    if not training:
        pen = pen * (1 - y_true[..., 4])
    per_step = {"offset": offset, "pen": pen, "total": offset + pen}[part]
    return per_step.mean(axis=1)


def ref_bivariate_log_space(y_true, y_pred, num_mixture):
    """The same formula in float64 log space, with |rho| clipped at 1 - 1e-6 (extreme inputs)."""
    y_true, y_pred = np.float64(y_true), np.float64(y_pred)
    pi, mu1, mu2, ls1, ls2, raw = np.split(y_pred[..., 3:], 6, axis=-1)
    rho = np.clip(np.tanh(raw), -(1 - 1e-6), 1 - 1e-6)
    n1 = (y_true[..., :1] - mu1) / np.exp(ls1)
    n2 = (y_true[..., 1:2] - mu2) / np.exp(ls2)
    one_minus = (1 - rho) * (1 + rho)
    z = (n1 - rho * n2) ** 2 / one_minus + n2**2
    log_norm = np.log(2 * np.pi) + ls1 + ls2 + 0.5 * np.log(one_minus)
    log_density = np_log_softmax(pi) - log_norm - z / 2
    offset = -np_logsumexp(log_density) * (1 - y_true[..., 4])
    pen = -np.sum(y_true[..., 2:] * np_log_softmax(y_pred[..., :3]), axis=-1)
    return (offset + pen).mean(axis=1)


def ref_gmm(y_true, y_pred, m):
    y_true, y_pred = np.float64(y_true), np.float64(y_pred)
    d = y_true.shape[-1]
    weights = np.exp(y_pred[..., :m])
    weights /= weights.sum(-1, keepdims=True)
    mu = y_pred[..., m : m + m * d].reshape(y_pred.shape[:-1] + (m, d))
    sigma = np.exp(y_pred[..., m + m * d :]).reshape(mu.shape)
    x = y_true[..., None, :]
    densities = np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
    density = np.prod(densities, axis=-1)
    nll = -np.log(np.sum(weights * density, axis=-1))
    return nll.reshape(nll.shape[0], -1).mean(axis=1)


def ref_sequence_ce(y_true, logits, mask, sample_weight):
    logits = np.float64(logits)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ce = -np.log(np.take_along_axis(probs, y_true[..., None], -1)[..., 0])
    w = np.ones_like(ce) if mask is None else np.float64(mask)
    if sample_weight is not None:
        sw = np.float64(sample_weight)
        w = w * (sw[:, None] if sw.ndim == 1 else sw)
    return (ce * w).sum() / w.sum()


def ref_focal(y_true, logits, gamma, alpha):
    logits = np.float64(logits)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    p_t = np.take_along_axis(probs, y_true[..., None], -1)[..., 0]
    a = 1.0 if alpha is None else np.asarray(alpha, np.float64)[y_true]
    loss = -a * (1 - p_t) ** gamma * np.log(p_t)
    return loss.reshape(loss.shape[0], -1).mean(axis=1)


def ref_dice(y_true, y_pred, smooth):
    y_true, y_pred = np.float64(y_true), np.float64(y_pred)
    axes = tuple(range(1, y_true.ndim - 1))
    intersection = (y_true * y_pred).sum(axes)
    dice = (2 * intersection + smooth) / (y_true.sum(axes) + y_pred.sum(axes) + smooth)
    return 1 - dice.mean(-1)


def ref_triplet(a, p, n, margin, squared):
    a, p, n = np.float64(a), np.float64(p), np.float64(n)
    d_ap = ((a - p) ** 2).sum(-1)
    d_an = ((a - n) ** 2).sum(-1)
    if not squared:
        d_ap, d_an = np.sqrt(d_ap), np.sqrt(d_an)
    return np.maximum(d_ap - d_an + margin, 0)


# ----------------------------------------------------------------------------- naive keras.ops


def naive_bivariate(y_true, y_pred, num_mixture):
    """sketch-rnn's reference computation (exp, then log), without its 1e-6 inside the log."""
    y_true = ops.cast(y_true, "float32")
    pen_logits = y_pred[..., :3]
    pi, mu1, mu2, s1, s2, rho = ops.split(y_pred[..., 3:], 6, axis=-1)
    pi, s1, s2, rho = ops.softmax(pi, axis=-1), ops.exp(s1), ops.exp(s2), ops.tanh(rho)
    n1 = y_true[..., :1] - mu1
    n2 = y_true[..., 1:2] - mu2
    z = ops.square(n1 / s1) + ops.square(n2 / s2) - 2 * rho * n1 * n2 / (s1 * s2)
    one_minus = 1 - ops.square(rho)
    density = ops.exp(-z / (2 * one_minus)) / (2 * np.pi * s1 * s2 * ops.sqrt(one_minus))
    offset = -ops.log(ops.sum(pi * density, axis=-1)) * (1 - y_true[..., 4])
    pen = -ops.sum(y_true[..., 2:] * ops.log(ops.softmax(pen_logits, axis=-1)), axis=-1)
    return ops.mean(offset + pen, axis=1)


def naive_gmm(y_true, y_pred, num_mixture):
    m, d = num_mixture, y_true.shape[-1]
    weights = ops.softmax(y_pred[..., :m], axis=-1)
    shape = tuple(y_pred.shape[:-1]) + (m, d)
    mu = ops.reshape(y_pred[..., m : m + m * d], shape)
    sigma = ops.exp(ops.reshape(y_pred[..., m + m * d :], shape))
    z = (ops.expand_dims(ops.cast(y_true, "float32"), -2) - mu) / sigma
    density = ops.prod(ops.exp(-0.5 * ops.square(z)) / (math.sqrt(2 * math.pi) * sigma), axis=-1)
    return -ops.log(ops.sum(weights * density, axis=-1))


def naive_focal(y_true, y_pred, gamma):
    p_t = ops.take_along_axis(ops.softmax(y_pred, axis=-1), ops.expand_dims(y_true, -1), axis=-1)
    return -ops.power(1 - p_t[..., 0], gamma) * ops.log(p_t[..., 0])


# ----------------------------------------------------------------------------- API


def test_public_names_are_registered_and_round_trip():
    for fn in PUBLIC:
        assert keras.saving.get_registered_name(fn) == f"lossweave>{fn.__name__}"
        config = keras.saving.serialize_keras_object(fn)
        assert keras.saving.deserialize_keras_object(config) is fn
        assert ">>> " in fn.__doc__


def test_injected_parameters_are_the_ones_without_defaults():
    def required(fn):
        params = inspect.signature(fn).parameters.values()
        return [p.name for p in params if p.default is inspect.Parameter.empty]

    assert required(lw.losses.gaussian_kl) == ["z_mean", "z_log_var"]
    assert required(lw.losses.activation_penalty) == ["activation"]
    assert required(lw.losses.triplet_margin) == ["anchor", "positive", "negative"]
    assert required(lw.losses.masked_sequence_crossentropy) == ["y_true", "y_pred"]
    assert required(lw.losses.bivariate_mdn_nll) == ["y_true", "y_pred", "num_mixture"]


def test_bad_configuration_names_the_allowed_values():
    with pytest.raises(ValueError, match="'l1', 'l2'"):
        lw.losses.activation_penalty(np.ones((2, 3), "float32"), kind="l3")
    y_true = np.zeros((1, 2, 5), "float32")
    with pytest.raises(ValueError, match="'offset', 'pen', 'total'"):
        lw.losses.bivariate_mdn_nll(y_true, np.zeros((1, 2, 15), "float32"), 2, part="all")
    with pytest.raises(ValueError, match="size 15, expected 21"):
        lw.losses.bivariate_mdn_nll(y_true, np.zeros((1, 2, 15), "float32"), 3)
    with pytest.raises(ValueError, match="expected 10"):
        lw.losses.gmm_nll(np.zeros((1, 2), "float32"), np.zeros((1, 9), "float32"), 2)


# ----------------------------------------------------------------------------- against references


def test_gaussian_kl_matches_reference():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(6, 4)).astype("float32")
    log_var = rng.normal(size=(6, 4)).astype("float32")
    kl = ref_kl_per_dim(mean, log_var).mean(-1)
    got = evaluate(lw.losses.gaussian_kl, z_mean=mean, z_log_var=log_var)
    np.testing.assert_allclose(got, kl, rtol=RTOL, atol=ATOL)
    for floor in (0.01, 1e3):
        got = evaluate(lw.losses.gaussian_kl, z_mean=mean, z_log_var=log_var, free_bits=floor)
        assert got.shape == ()
        np.testing.assert_allclose(got, max(kl.mean(), floor), rtol=RTOL)
    per_dim = ref_kl_per_dim(mean, log_var).mean(0)
    got = evaluate(lw.losses.gaussian_kl_per_dim, z_mean=mean, z_log_var=log_var, free_bits=0.4)
    np.testing.assert_allclose(got, np.maximum(per_dim, 0.4).mean(), rtol=RTOL)


def test_gaussian_kl_free_bits_stops_the_gradient_below_the_floor():
    mean = np.full((3, 2), 0.1, "float32")
    log_var = np.zeros((3, 2), "float32")
    kl = functools.partial(
        value_and_grad, lw.losses.gaussian_kl, "z_mean", z_mean=mean, z_log_var=log_var
    )
    np.testing.assert_array_equal(kl(free_bits=1.0)[1], 0.0)
    np.testing.assert_allclose(kl()[1], mean / 2, rtol=RTOL)  # d/dm of 0.5 * mean_d(m^2)


def all_parts(y_true, y_pred, num_mixture, training):
    parts = ("offset", "pen", "total")
    return ops.stack(
        [lw.losses.bivariate_mdn_nll(y_true, y_pred, num_mixture, part, training) for part in parts]
    )


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_bivariate_mdn_nll_matches_reference(training):
    rng = np.random.default_rng(2)
    y_true = random_stroke5(rng, 4, 9, end_at=[9, 5, 1, 3])
    y_pred = random_mdn_head(rng, 4, 9, 5)
    got = evaluate(all_parts, y_true=y_true, y_pred=y_pred, num_mixture=5, training=training)
    assert got.shape == (3, 4)
    for part, values in zip(("offset", "pen", "total"), got):
        want = ref_bivariate(y_true, y_pred, 5, part, training)
        np.testing.assert_allclose(values, want, rtol=RTOL, atol=ATOL)


def test_bivariate_mdn_nll_masks_after_the_end_and_divides_by_all_steps():
    rng = np.random.default_rng(3)
    y_true = random_stroke5(rng, 2, 6, end_at=[6, 2])
    y_pred = random_mdn_head(rng, 2, 6, 3)
    offset = functools.partial(evaluate, lw.losses.bivariate_mdn_nll, num_mixture=3, part="offset")
    full = offset(y_true=y_true, y_pred=y_pred)
    shorter = offset(y_true=y_true[:, :2], y_pred=y_pred[:, :2])
    # Sample 1 ends after 2 steps: the same sum of per-step losses, divided by 6 instead of 2.
    np.testing.assert_allclose(full[1], shorter[1] * 2 / 6, rtol=RTOL)


def test_bivariate_mdn_gradient_matches_naive_at_moderate_inputs():
    rng = np.random.default_rng(4)
    y_true, y_pred = random_stroke5(rng, 3, 5), random_mdn_head(rng, 3, 5, 4)
    inputs = dict(y_true=y_true, y_pred=y_pred, num_mixture=4)
    v1, g1 = value_and_grad(lw.losses.bivariate_mdn_nll, "y_pred", **inputs)
    v2, g2 = value_and_grad(naive_bivariate, "y_pred", **inputs)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-6)


def test_split_mdn_params_follows_the_reference_layout():
    m = 3
    y_pred = np.arange(2 * (6 * m + 3), dtype="float32").reshape(2, 6 * m + 3) / 100
    params = {k: np_(v) for k, v in lw.losses.split_mdn_params(y_pred, m).items()}
    np.testing.assert_array_equal(params["pen_logits"], y_pred[:, :3])
    names = ["pi_logits", "mu_x", "mu_y", "log_sigma_x", "log_sigma_y"]
    for i, name in enumerate(names):
        np.testing.assert_array_equal(params[name], y_pred[:, 3 + i * m : 3 + (i + 1) * m])
    np.testing.assert_allclose(params["rho"], np.tanh(y_pred[:, 3 + 5 * m :]), rtol=RTOL)
    extreme = np.full((2, 6 * m + 3), 80.0, "float32")
    rho = np_(lw.losses.split_mdn_params(extreme, m)["rho"])
    assert np.all(rho < 1.0) and np.all(rho >= 1 - 2e-6)


@pytest.mark.parametrize("shape,d,m", [((5,), 1, 3), ((3, 4), 2, 2), ((2, 3, 2), 3, 1)])
def test_gmm_nll_matches_reference(shape, d, m):
    rng = np.random.default_rng(5)
    y_true = rng.normal(size=shape + (d,)).astype("float32")
    y_pred = rng.normal(size=shape + (m * (1 + 2 * d),)).astype("float32") * 0.7
    got = evaluate(lw.losses.gmm_nll, y_true=y_true, y_pred=y_pred, num_mixture=m)
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got, ref_gmm(y_true, y_pred, m), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "mask,sample_weight",
    [(None, None), ("padding", None), (None, "per_token"), ("padding", "per_sample")],
)
def test_masked_sequence_crossentropy_matches_reference(mask, sample_weight):
    rng = np.random.default_rng(6)
    y_true = rng.integers(0, 7, size=(4, 5))
    logits = rng.normal(size=(4, 5, 7)).astype("float32") * 2
    if mask == "padding":
        mask = (np.arange(5)[None] < np.array([5, 3, 1, 4])[:, None]).astype("float32")
    sample_weight = {
        None: None,
        "per_sample": np.array([1.0, 0.5, 2.0, 0.0], "float32"),
        "per_token": rng.uniform(size=(4, 5)).astype("float32"),
    }[sample_weight]
    inputs = dict(y_true=y_true, mask=mask, sample_weight=sample_weight)
    got = evaluate(lw.losses.masked_sequence_crossentropy, y_pred=logits, **inputs)
    want = ref_sequence_ce(y_true, logits, mask, sample_weight)
    np.testing.assert_allclose(got, want, rtol=RTOL)
    if mask is not None and sample_weight is not None:
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        got = evaluate(
            lw.losses.masked_sequence_crossentropy, y_pred=probs, from_logits=False, **inputs
        )
        np.testing.assert_allclose(got, want, rtol=1e-4)


def test_masked_sequence_crossentropy_with_no_real_token_is_zero_with_finite_gradient():
    value, grad = value_and_grad(
        lw.losses.masked_sequence_crossentropy,
        "y_pred",
        y_true=np.zeros((2, 3), "int32"),
        y_pred=np.zeros((2, 3, 4), "float32"),
        mask=np.zeros((2, 3), "float32"),
    )
    assert value == 0.0
    np.testing.assert_array_equal(grad, 0.0)


def test_activation_penalty_matches_reference():
    a = np.random.default_rng(7).normal(size=(3, 4, 5)).astype("float32")
    for kind, want in [("l1", np.abs(np.float64(a))), ("l2", np.float64(a) ** 2)]:
        got = evaluate(lw.losses.activation_penalty, activation=a, kind=kind)
        np.testing.assert_allclose(got, want.mean(axis=(1, 2)), rtol=RTOL)


@pytest.mark.parametrize("gamma,alpha", [(0.0, None), (0.5, (0.25, 1.0, 2.0, 0.5)), (2.0, None)])
def test_sparse_categorical_focal_loss_matches_reference(gamma, alpha):
    rng = np.random.default_rng(8)
    y_true = rng.integers(0, 4, size=(5, 3))
    logits = rng.normal(size=(5, 3, 4)).astype("float32") * 2
    focal = functools.partial(evaluate, lw.losses.sparse_categorical_focal_loss, y_true=y_true)
    want = ref_focal(y_true, logits, gamma, alpha)
    got = focal(y_pred=logits, gamma=gamma, alpha=alpha)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    if alpha is not None:
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        got = focal(y_pred=probs, gamma=gamma, alpha=alpha, from_logits=False)
        np.testing.assert_allclose(got, want, rtol=1e-4)


def test_sparse_categorical_focal_loss_with_gamma_zero_is_the_crossentropy():
    rng = np.random.default_rng(9)
    y_true = rng.integers(0, 3, size=(6,))
    logits = rng.normal(size=(6, 3)).astype("float32")
    want = keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
    got = lw.losses.sparse_categorical_focal_loss(y_true, logits, gamma=0.0)
    np.testing.assert_allclose(np_(got), np_(want), rtol=RTOL)


def test_soft_dice_matches_reference():
    rng = np.random.default_rng(10)
    y_true = np.eye(3, dtype="float32")[rng.integers(0, 3, size=(2, 4, 5))]
    logits = rng.normal(size=(2, 4, 5, 3))
    y_pred = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    for smooth in (0.0, 1.0):
        got = evaluate(lw.losses.soft_dice, y_true=y_true, y_pred=y_pred, smooth=smooth)
        assert got.shape == (2,)
        np.testing.assert_allclose(got, ref_dice(y_true, y_pred, smooth), rtol=RTOL, atol=ATOL)


def test_soft_dice_scores_an_absent_class_predicted_absent_as_perfect():
    y_true = np.array([[[1.0, 0.0], [1.0, 0.0]]], "float32")
    assert float(np_(lw.losses.soft_dice(y_true, y_true))[0]) == pytest.approx(0.0, abs=1e-7)


def test_triplet_margin_matches_reference():
    rng = np.random.default_rng(11)
    a, p, n = (rng.normal(size=(8, 3)).astype("float32") for _ in range(3))
    for squared in (False, True):
        got = evaluate(
            lw.losses.triplet_margin, anchor=a, positive=p, negative=n, margin=0.7, squared=squared
        )
        np.testing.assert_allclose(got, ref_triplet(a, p, n, 0.7, squared), rtol=RTOL, atol=ATOL)


def test_triplet_margin_gradient_is_finite_when_embeddings_coincide():
    a = np.ones((2, 3), "float32")
    inputs = dict(anchor=a, positive=a, negative=a + 1)
    _, grad = value_and_grad(lw.losses.triplet_margin, "anchor", **inputs)
    assert_finite(grad)


# ----------------------------------------------------------------------------- stability


def extreme_mdn_case(m=3, steps=4):
    """Sigmas of 1e-6, offsets 1e3 sigmas from every mean, |rho| at 1 - 1e-6 and beyond
    (raw 80), mixture and pen logits of +-80 with the target on the unlikely pen state."""
    y_true = np.zeros((2, steps, 5), "float32")
    y_true[..., 0] = 1e-3
    y_true[..., 1] = -1e-3
    y_true[..., 3] = 1.0  # pen state p2, whose logit is -80
    y_true[1, -1, 2:] = [0, 0, 1]
    y_pred = np.zeros((2, steps, 6 * m + 3), "float32")
    y_pred[..., :3] = [80.0, -80.0, 0.0]
    y_pred[..., 3 : 3 + m] = np.linspace(-80, 80, m)
    y_pred[..., 3 + 3 * m : 3 + 5 * m] = math.log(1e-6)
    y_pred[0, ..., 3 + 5 * m :] = math.atanh(1 - 1e-6) * np.sign(np.arange(m) - 0.5)
    y_pred[1, ..., 3 + 5 * m :] = 80.0 * np.sign(np.arange(m) - 0.5)
    return dict(y_true=y_true, y_pred=y_pred, num_mixture=m)


def test_bivariate_mdn_nll_is_finite_and_exact_at_extreme_inputs():
    inputs = extreme_mdn_case()
    value, grad = value_and_grad(lw.losses.bivariate_mdn_nll, "y_pred", **inputs)
    assert_finite(value, grad)
    np.testing.assert_allclose(value, ref_bivariate_log_space(**inputs), rtol=1e-4)
    naive, naive_grad = value_and_grad(naive_bivariate, "y_pred", **inputs)
    assert not np.all(np.isfinite(naive))
    assert not np.all(np.isfinite(naive_grad))


@pytest.mark.parametrize(
    "dx,log_sigma,raw_rho",
    [(1e-3, math.log(1e-6), 0.0), (1e3, 0.0, 0.0), (0.0, 0.0, 80.0), (1e-3, math.log(1e-6), -80.0)],
)
def test_bivariate_mdn_nll_each_extreme_alone(dx, log_sigma, raw_rho):
    m = 2
    y_true = np.array([[[dx, dx, 1, 0, 0]]], "float32")
    y_pred = np.zeros((1, 1, 6 * m + 3), "float32")
    y_pred[..., 3 + 3 * m : 3 + 5 * m] = log_sigma
    y_pred[..., 3 + 5 * m :] = raw_rho
    inputs = dict(y_true=y_true, y_pred=y_pred, num_mixture=m)
    assert_finite(*value_and_grad(lw.losses.bivariate_mdn_nll, "y_pred", **inputs))
    assert not np.all(np.isfinite(evaluate(naive_bivariate, **inputs)))


def test_gmm_nll_is_finite_at_extreme_inputs_where_naive_is_not():
    m, d = 3, 2
    y_true = np.full((2, d), 1e-3, "float32")
    y_pred = np.zeros((2, m * (1 + 2 * d)), "float32")
    y_pred[:, :m] = [-80.0, 0.0, 80.0]
    y_pred[:, m + m * d :] = math.log(1e-6)
    inputs = dict(y_true=y_true, y_pred=y_pred, num_mixture=m)
    value, grad = value_and_grad(lw.losses.gmm_nll, "y_pred", **inputs)
    assert_finite(value, grad)
    # Every component sits 1e3 sigmas away in each of the 2 dimensions: 1e6 nats plus constants.
    want = 1e6 + d * (0.5 * math.log(2 * math.pi) + math.log(1e-6))
    np.testing.assert_allclose(value, want, rtol=1e-5)
    assert not np.all(np.isfinite(evaluate(naive_gmm, **inputs)))


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_loss_is_finite_at_extreme_logits_where_naive_is_not(gamma):
    inputs = dict(y_true=np.array([0, 1, 2]), y_pred=np.array([[80.0, -80.0, 0.0]] * 3, "float32"))
    focal = lw.losses.sparse_categorical_focal_loss
    value, grad = value_and_grad(focal, "y_pred", gamma=gamma, **inputs)
    assert_finite(value, grad)
    np.testing.assert_allclose(value, [0.0, 160.0, 80.0], rtol=1e-5)  # -log p_t; (1 - p_t) is 1
    naive, naive_grad = value_and_grad(naive_focal, "y_pred", gamma=gamma, **inputs)
    assert not (np.all(np.isfinite(naive)) and np.all(np.isfinite(naive_grad)))


def test_sequence_crossentropy_is_finite_at_extreme_logits():
    value, grad = value_and_grad(
        lw.losses.masked_sequence_crossentropy,
        "y_pred",
        y_true=np.array([[0, 1]]),
        y_pred=np.array([[[80.0, -80.0], [80.0, -80.0]]], "float32"),
    )
    assert_finite(value, grad)
    np.testing.assert_allclose(value, 80.0, rtol=1e-5)


# ----------------------------------------------------------------------------- properties
# Shapes come from small sets: on JAX every new shape is a new compilation.

# Below sigma = 1e-6 a far offset's loss can exceed float32's range: that is the loss, not a bug.
LOG_MIN_SIGMA = math.log(1e-6)
seeds = st.integers(0, 2**31 - 1)


@property_settings
@given(
    shape=st.sampled_from([(1, 1, 1), (3, 4, 2), (2, 6, 5)]), seed=seeds, scale=st.floats(0.1, 30.0)
)
def test_property_bivariate_mdn_nll(shape, seed, scale):
    batch, steps, m = shape
    rng = np.random.default_rng(seed)
    y_true = random_stroke5(rng, batch, steps)
    y_true[..., :2] *= scale
    y_pred = (rng.normal(size=(batch, steps, 6 * m + 3)) * scale).astype("float32")
    log_sigmas = y_pred[..., 3 + 3 * m : 3 + 5 * m]
    log_sigmas[...] = np.clip(log_sigmas, LOG_MIN_SIGMA, 10.0)  # sigmas down to 1e-6
    value, grad = value_and_grad(
        lw.losses.bivariate_mdn_nll, "y_pred", y_true=y_true, y_pred=y_pred, num_mixture=m
    )
    assert_finite(value, grad)
    assert value.shape == (batch,)


@property_settings
@given(
    shape_d_m=st.sampled_from([((1,), 1, 1), ((3, 2), 2, 3), ((2, 3, 2), 3, 2)]),
    seed=seeds,
    scale=st.floats(0.1, 20.0),
)
def test_property_gmm_nll(shape_d_m, seed, scale):
    shape, d, m = shape_d_m
    rng = np.random.default_rng(seed)
    y_true = (rng.normal(size=shape + (d,)) * scale).astype("float32")
    y_pred = (rng.normal(size=shape + (m * (1 + 2 * d),)) * scale).astype("float32")
    y_pred[..., m + m * d :] = np.clip(y_pred[..., m + m * d :], LOG_MIN_SIGMA, 10.0)
    inputs = dict(y_true=y_true, y_pred=y_pred, num_mixture=m)
    value, grad = value_and_grad(lw.losses.gmm_nll, "y_pred", **inputs)
    assert_finite(value, grad)
    assert value.shape == (shape[0],)


@property_settings
@given(
    shape=st.sampled_from([(1, 1), (4, 3)]),
    seed=seeds,
    scale=st.floats(0.1, 10.0),
    free_bits=st.sampled_from([0.0, 0.5]),
)
def test_property_gaussian_kl(shape, seed, scale, free_bits):
    rng = np.random.default_rng(seed)
    mean, log_var = (rng.normal(size=shape).astype("float32") * scale for _ in range(2))
    for fn in (lw.losses.gaussian_kl, lw.losses.gaussian_kl_per_dim):
        inputs = dict(z_mean=mean, z_log_var=log_var, free_bits=free_bits)
        value, grad = value_and_grad(fn, "z_mean", **inputs)
        assert_finite(value, grad)
        assert np.all(value >= -1e-6)  # a KL divergence
        if fn is lw.losses.gaussian_kl:
            assert value.shape == ((shape[0],) if free_bits == 0 else ())


@property_settings
@given(
    shape=st.sampled_from([(1, 1, 2), (3, 4, 5)]),
    seed=seeds,
    scale=st.floats(0.1, 100.0),
)
def test_property_sequence_and_focal(shape, seed, scale):
    batch, steps, vocab = shape
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, vocab, size=(batch, steps))
    logits = (rng.normal(size=shape) * scale).astype("float32")
    mask = (rng.uniform(size=(batch, steps)) < 0.7).astype("float32")
    value, grad = value_and_grad(
        lw.losses.masked_sequence_crossentropy, "y_pred", y_true=y_true, y_pred=logits, mask=mask
    )
    assert_finite(value, grad)
    assert value.shape == ()
    focal = lw.losses.sparse_categorical_focal_loss
    value, grad = value_and_grad(focal, "y_pred", y_true=y_true, y_pred=logits)
    assert_finite(value, grad)
    assert value.shape == (batch,)


@property_settings
@given(shape=st.sampled_from([(2,), (2, 3, 4)]), seed=seeds)
def test_property_per_sample_terms(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape + (3,)).astype("float32")
    for kind in ("l1", "l2"):
        assert evaluate(lw.losses.activation_penalty, activation=x, kind=kind).shape == (shape[0],)
    probs = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    y_true = np.eye(3, dtype="float32")[rng.integers(0, 3, size=shape)]
    value, grad = value_and_grad(lw.losses.soft_dice, "y_pred", y_true=y_true, y_pred=probs)
    assert_finite(value, grad)
    assert value.shape == (shape[0],)
    a, p, n = (rng.normal(size=(shape[0], 3)).astype("float32") for _ in range(3))
    inputs = dict(anchor=a, positive=p, negative=n)
    value, grad = value_and_grad(lw.losses.triplet_margin, "anchor", **inputs)
    assert_finite(value, grad)
    assert value.shape == (shape[0],)
