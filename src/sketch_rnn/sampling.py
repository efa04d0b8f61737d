"""Drawing with a trained sketch-rnn: sample, encode, reconstruct, complete, interpolate.

Decoding runs the trained decoder one step at a time: the ``decoder`` layer's cell with its
states, the ``mdn_head`` Dense, and (conditional models) the ``init_state`` Dense on ``z``, for a
batch of sketches at once. The step is a small ``keras.Model`` run with ``predict_on_batch``, so
it is compiled on every backend (run eagerly, a TensorFlow step costs ~10 ms, six times more).
Each step draws the next point with NumPy from an explicitly seeded generator, with a temperature
``tau`` as in the paper (section 3.3):

- mixture weights and pen states: ``softmax(logits / tau)``;
- the chosen Gaussian's variances: ``sigma^2 * tau`` (the correlation is unchanged).

(The reference code's ``sample_gaussian_2d(..., np.sqrt(temp))`` multiplies sigma by ``tau``, a
variance of ``sigma^2 * tau^2``; this module follows the paper's formula.) A sketch ends at its first
end-of-sketch (``p3``) point, or after ``max_seq_len`` points. Sketches come back as stroke-3
float32 arrays in data units (offsets multiplied by the data's ``scale``), ending with pen-up.

Sketches given to ``encode``, ``reconstruct`` and ``interpolate`` are stroke-3 in data units
too: they are divided by ``scale`` before encoding. A sketch is encoded to the mean of ``q(z|x)``
(``z_mean``), so reconstructions and interpolations are deterministic given the seed; the
reference samples ``z`` from ``q(z|x)`` instead.

>>> import numpy as np
>>> from sketch_rnn import presets
>>> from sketch_rnn.model import build_model
>>> model = build_model(presets.get("tiny"))
>>> sketches = sample(model, n=3, temperature=0.5, seed=0)
>>> len(sketches), all(s[-1, 2] == 1 and np.isfinite(s).all() for s in sketches)
(3, True)
"""

import weakref

import keras
import numpy as np
from keras import ops

import lossweave as lw
from sketch_rnn import data


def _is_conditional(model):
    return "z_mean" in model.tap_names


def _check_conditional(model, what):
    if not _is_conditional(model):
        raise ValueError(f"{what} needs a conditional model (with an encoder); this one is unconditional")


def _max_len(model):
    return model.inputs[0].shape[1] - 1


def _softmax(logits, axis=-1):
    logits = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=axis, keepdims=True)


def _categorical(probs, rng):
    """One index per row of ``probs`` ``(n, k)``, drawn by inverting the cumulative distribution."""
    below = np.cumsum(probs, axis=1) < rng.random((len(probs), 1))
    return np.minimum(below.sum(axis=1), probs.shape[1] - 1)


def _draw_points(params, temperature, rng):
    """Stroke-5 rows ``(n, 5)`` drawn from one step's mixture parameters (NumPy arrays)."""
    n = len(params["pen_logits"])
    k = _categorical(_softmax(params["pi_logits"] / temperature), rng)[:, None]
    mu_x, mu_y, log_sigma_x, log_sigma_y, rho = (
        np.take_along_axis(params[name], k, axis=1)[:, 0]
        for name in ("mu_x", "mu_y", "log_sigma_x", "log_sigma_y", "rho")
    )
    spread = np.sqrt(temperature)
    n1, n2 = rng.standard_normal((2, n))
    rows = np.zeros((n, 5), dtype=np.float32)
    rows[:, 0] = mu_x + np.exp(log_sigma_x) * spread * n1
    rows[:, 1] = mu_y + np.exp(log_sigma_y) * spread * (rho * n1 + np.sqrt(1 - rho**2) * n2)
    pen = _categorical(_softmax(params["pen_logits"] / temperature), rng)
    rows[np.arange(n), 2 + pen] = 1
    return rows


def _to_sketch(stroke5, scale):
    """Stroke-5 rows -> stroke-3 in data units; a sketch ended at once is one pen-up point."""
    strokes = data.to_stroke3(stroke5)
    if not len(strokes):
        strokes = np.array([[0, 0, 1]], dtype=np.float32)
    strokes[:, :2] *= scale
    return strokes


#: The step and encoder models built for each trained model, so that each compiles once (a
#: server answering many requests would otherwise compile them again on every one).
_BUILT = weakref.WeakKeyDictionary()


def _built(model, name, build):
    """``build(model)``, made once per ``model`` and kept while the model lives."""
    parts = _BUILT.setdefault(model, {})
    if name not in parts:
        parts[name] = build(model)
    return parts[name]


def _step_model(model):
    """One decoder step, ``(inputs, *states) -> (head output, *states)``, from ``model``'s own
    layers (the states of the decoder's cell: ``h, c`` for the LSTMs, and the hyper cell's)."""
    return _built(model, "step", _build_step_model)


def _build_step_model(model):
    cell, head = model.get_layer("decoder").cell, model.get_layer("mdn_head")
    inputs = keras.Input((cell.kernel.shape[0],))
    states = [keras.Input((size,)) for size in cell.state_size]
    output, next_states = cell(inputs, states)
    next_states = [ops.cast(state, "float32") for state in next_states]
    return keras.Model([inputs, *states], [head(output), *next_states])


def _decode_points(model, z, n, temperature, rng, given=None, lengths=None):
    """Stroke-5 points ``(n, max_len, 5)`` drawn step by step; the first ``lengths[i]`` points of row
    ``i`` are not drawn but taken from ``given`` (a prefix the decoder is primed with)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    cell = model.get_layer("decoder").cell
    num_mixture = (model.get_layer("mdn_head").units - 3) // 6
    sizes = cell.state_size
    if z is not None:
        state = ops.convert_to_numpy(ops.cast(model.get_layer("init_state")(z), "float32"))
        states = np.split(state, np.cumsum(sizes)[:-1], axis=-1)
    else:
        states = [np.zeros((n, size), dtype=np.float32) for size in sizes]
    step = _step_model(model)
    max_len = _max_len(model)
    points = np.zeros((n, max_len, 5), dtype=np.float32)
    previous = np.tile(data.START_TOKEN, (n, 1))
    for t in range(max_len):
        inputs = np.concatenate([previous, z], axis=1) if z is not None else previous
        head_output, *states = step.predict_on_batch([inputs, *states])
        params = lw.losses.split_mdn_params(head_output, num_mixture)
        previous = _draw_points({k: ops.convert_to_numpy(v) for k, v in params.items()}, temperature, rng)
        if given is not None:
            primed = t < lengths
            previous[primed] = given[primed, t]
        points[:, t] = previous
        if points[:, : t + 1, 4].any(axis=1).all():
            break
    return points


def _codes(model, z, n):
    """``z`` as float32 codes, checked against the model: conditional models decode codes, others ``n``."""
    conditional = _is_conditional(model)
    if conditional != (z is not None) or (not conditional and n is None):
        raise ValueError("a conditional model decodes codes z; an unconditional one decodes n sketches")
    return None if z is None else np.asarray(z, dtype=np.float32)


def decode(model, z=None, n=None, temperature=1.0, seed=0, scale=1.0):
    """Draw sketches from the decoder: one per row of ``z`` (conditional models) or ``n`` (unconditional).

    ``seed`` (an int or a ``numpy.random.Generator``) drives the mixture and pen sampling.
    Returns a list of stroke-3 float32 arrays ending with pen-up, offsets multiplied by ``scale``.

    >>> from sketch_rnn import presets
    >>> from sketch_rnn.model import build_model
    >>> model = build_model(presets.get("tiny"))
    >>> [s.dtype.name for s in decode(model, z=np.zeros((2, 4), "float32"), seed=1)]
    ['float32', 'float32']
    """
    z = _codes(model, z, n)
    n = n if z is None else len(z)
    points = _decode_points(model, z, n, temperature, np.random.default_rng(seed))
    return [_to_sketch(p, scale) for p in points]


def complete(model, prefixes, temperature=1.0, seed=0, scale=1.0, z=None):
    """Finish each sketch of ``prefixes`` (stroke-3, data units): the decoder is primed with the
    prefix's points, fed one by one as in training, then draws the rest.

    A conditional model decodes from ``z`` (one code a prefix), by default the encoding of the
    prefixes (:func:`encode`). Each sketch returned starts with its prefix exactly (the same
    values) and ends with pen-up; when the model ends the sketch at once after a prefix whose
    pen is down, a pen-up point ``(0, 0, 1)`` is appended. Prefixes and completions together hold
    at most ``max_seq_len`` points (a longer prefix is an error).

    >>> from sketch_rnn import presets
    >>> from sketch_rnn.model import build_model
    >>> prefix = np.array([[1.0, 2.0, 0.0], [3.0, 4.0, 0.0]], "float32")
    >>> [done] = complete(build_model(presets.get("tiny")), [prefix], seed=0)
    >>> bool((done[:2] == prefix).all()), float(done[-1, 2])
    (True, 1.0)
    """
    max_len = _max_len(model)
    prefixes = [np.asarray(p, dtype=np.float32) for p in prefixes]
    if any(p.ndim != 2 or p.shape[1] != 3 for p in prefixes):
        raise ValueError("prefixes is a list of stroke-3 arrays of shape (k, 3); wrap a single prefix in a list")
    long = [i for i, p in enumerate(prefixes) if len(p) > max_len]
    if long:
        raise ValueError(f"prefix {long[0]} has {len(prefixes[long[0]])} points, more than the model's "
                         f"max_seq_len={max_len}; cut it shorter")
    if z is None and _is_conditional(model):
        z = encode(model, prefixes, scale=scale)
    z = _codes(model, z, len(prefixes))
    lengths = np.array([len(p) for p in prefixes])
    given = np.stack([data.to_stroke5(p, max_len)[:max_len] for p in data.normalize(prefixes, scale)])
    points = _decode_points(model, z, len(prefixes), temperature, np.random.default_rng(seed), given, lengths)
    completed = []
    for prefix, n, p in zip(prefixes, lengths, points):
        rest = data.to_stroke3(p[n:])
        rest[:, :2] *= scale
        if not len(rest) and (not n or prefix[-1, 2] == 0):
            rest = np.array([[0, 0, 1]], dtype=np.float32)
        completed.append(np.concatenate([prefix, rest]))
    return completed


def sample(model, n, temperature=1.0, seed=0, scale=1.0):
    """``n`` new sketches: conditional models decode ``z ~ N(0, I)``, unconditional ones their zero state.

    >>> from sketch_rnn import presets
    >>> from sketch_rnn.model import build_model
    >>> len(sample(build_model(presets.get("tiny")), n=2, seed=0))
    2
    """
    rng = np.random.default_rng(seed)
    if not _is_conditional(model):
        return decode(model, n=n, temperature=temperature, seed=rng, scale=scale)
    z = rng.standard_normal((n, model.get_layer("z_mean").units)).astype(np.float32)
    return decode(model, z=z, temperature=temperature, seed=rng, scale=scale)


def encode(model, sketches, scale=1.0):
    """Latent codes ``(n, z_size)`` of stroke-3 ``sketches``: the means of ``q(z | x)``.

    >>> from sketch_rnn import presets
    >>> from sketch_rnn.model import build_model
    >>> encode(build_model(presets.get("tiny")), [np.array([[1, 2, 0], [3, 4, 1]])]).shape
    (1, 4)
    """
    _check_conditional(model, "encode")
    x, _ = data.arrays(data.normalize(sketches, scale), _max_len(model))
    encoder = _built(model, "encoder", lambda m: keras.Model(m.inputs[0], m.get_layer("z_mean").output))
    return np.asarray(encoder.predict_on_batch(x))


def reconstruct(model, sketches, temperature=1.0, seed=0, scale=1.0):
    """Encode stroke-3 ``sketches`` (to ``z_mean``) and decode them again.

    >>> from sketch_rnn import presets
    >>> from sketch_rnn.model import build_model
    >>> len(reconstruct(build_model(presets.get("tiny")), [np.array([[1, 2, 1]])] * 2))
    2
    """
    z = encode(model, sketches, scale=scale)
    return decode(model, z=z, temperature=temperature, seed=seed, scale=scale)


def slerp(z0, z1, t):
    """Spherical interpolation between codes ``z0`` and ``z1`` at ``t`` (a float or an array of them).

    ``slerp = sin((1 - t) w) / sin(w) * z0 + sin(t w) / sin(w) * z1``, ``w`` the angle between them
    (linear interpolation when they are parallel). Between codes of equal norm, the norm stays.

    >>> z = slerp(np.array([1.0, 0.0]), np.array([0.0, 1.0]), [0.0, 0.5, 1.0])
    >>> z.round(4).tolist(), np.linalg.norm(z, axis=1).round(4).tolist()
    ([[1.0, 0.0], [0.7071, 0.7071], [0.0, 1.0]], [1.0, 1.0, 1.0])
    """
    z0, z1 = np.asarray(z0, dtype=np.float64), np.asarray(z1, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)[..., None]
    cosine = np.dot(z0, z1) / (np.linalg.norm(z0) * np.linalg.norm(z1))
    omega = np.arccos(np.clip(cosine, -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return (1 - t) * z0 + t * z1
    return (np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1) / np.sin(omega)


def interpolate(model, first, second, steps=8, temperature=1.0, seed=0, scale=1.0):
    """Decode ``steps`` codes spherically interpolated between two sketches' codes.

    Returns ``(codes, sketches)``: codes ``(steps, z_size)``, from ``encode(first)`` at ``t = 0`` to
    ``encode(second)`` at ``t = 1``, and the decoded sketches.

    >>> from sketch_rnn import presets
    >>> from sketch_rnn.model import build_model
    >>> codes, sketches = interpolate(build_model(presets.get("tiny")),
    ...                               np.array([[1, 2, 1]]), np.array([[3, 4, 1]]), steps=3)
    >>> codes.shape, len(sketches)
    ((3, 4), 3)
    """
    z0, z1 = encode(model, [first, second], scale=scale)
    codes = slerp(z0, z1, np.linspace(0.0, 1.0, steps)).astype(np.float32)
    return codes, decode(model, z=codes, temperature=temperature, seed=seed, scale=scale)
