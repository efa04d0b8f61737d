"""sketch-rnn's model (Ha & Eck 2017): bi-LSTM encoder, latent z, LSTM decoder, mixture density head.

One ``lw.Model`` takes a batch ``x`` of shape ``(B, max_seq_len + 1, 5)`` (see ``sketch_rnn.data``)
and returns the decoder head's raw output ``(B, max_seq_len, 6 * M + 3)``, laid out as
``lw.losses.split_mdn_params`` reads it. The conditional (VAE) variant:

- the encoder, a bidirectional LSTM (``SketchEncoder``), reads the sketch ``x[:, 1:]`` up to its
  end, as the reference's ``sequence_length`` does; the final forward and backward ``h`` are
  concatenated;
- Dense layers ``z_mean`` and ``z_log_var`` (the model's taps) parametrise ``q(z | x)``, and
  ``z = z_mean + exp(z_log_var / 2) * eps`` while training (the mean otherwise: see ``Sampling``);
- the decoder LSTM starts from ``(h, c) = split(tanh(Dense(z)))`` and reads, at each step, the
  previous stroke-5 point ``x[:, :-1]`` concatenated with ``z``;
- a Dense head gives ``6 * M + 3`` values a step.

The unconditional variant is the decoder alone, from a zero state, with no z and no KL term.
The objective (``objective``) logs ``offset`` and ``pen`` (their sum is the paper's reconstruction
loss ``L_R``), and ``kl`` with its annealed weight ``kl_weight``.

>>> from sketch_rnn import presets
>>> model = build_model(presets.get("tiny"))   # max_seq_len 12, M = 3
>>> model.outputs[0].shape, model.tap_names
((None, 12, 21), ('z_mean', 'z_log_var'))
"""

import dataclasses

import keras
from keras import ops

import lossweave as lw
from sketch_rnn.recurrent import LSTM, HyperLSTMCell, LayerNormLSTMCell  # LSTM: keras.layers.LSTM, faster

DEC_MODELS = ("lstm", "layer_norm", "hyper")
ENC_MODELS = ("lstm", "layer_norm")


@dataclasses.dataclass(frozen=True)
class HParams:
    """Hyperparameters, with the defaults of the paper and the reference implementation.

    The learning rate decays from ``learning_rate`` towards ``min_learning_rate`` by ``decay_rate``
    a step; the KL weight rises from ``kl_weight_start`` towards ``kl_weight`` by
    ``kl_decay_rate`` a step; the KL term is floored at ``kl_tolerance`` (nats per latent
    dimension). Gradients are clipped elementwise to ``[-grad_clip, grad_clip]``.
    ``recurrent_dropout`` is the drop probability (the reference's keep probability 0.9).
    ``augment`` stretches and thins training sketches as the reference does. Training runs
    ``num_steps`` steps in epochs of ``steps_per_epoch`` (a validation pass after each).
    ``precision`` is the Keras dtype policy of the recurrent layers: ``"float32"``, or
    ``"mixed_bfloat16"`` (bfloat16 products, float32 weights; the layers that feed the loss,
    ``z_mean``, ``z_log_var`` and ``mdn_head``, stay float32). On torch with a CPU that has
    AVX512-BF16, and no recurrent dropout, the paper-size step is ~1.5x faster; on JAX's CPU it is
    several times slower (``benchmarks/RESULTS.md``).

    ``dec_model`` is the decoder's cell, as the reference names them: ``"lstm"``, ``"layer_norm"``
    (``sketch_rnn.recurrent.LayerNormLSTMCell``) or ``"hyper"`` (``HyperLSTMCell``, whose hyper
    LSTM has ``hyper_num_units`` units and embeddings of ``hyper_embedding_size``); ``enc_model``
    the encoder's: ``"lstm"`` or ``"layer_norm"``. The reference's README suggests ``layer_norm``
    for data sets of under 10K sketches and ``hyper`` for large multi-class ones.

    >>> HParams().dec_rnn_size, HParams(z_size=8).z_size
    (512, 8)
    >>> HParams(dec_model="gru")
    Traceback (most recent call last):
    ...
    ValueError: dec_model must be one of lstm, layer_norm, hyper; got 'gru'
    """

    enc_rnn_size: int = 256
    dec_rnn_size: int = 512
    z_size: int = 128
    num_mixture: int = 20
    conditional: bool = True
    batch_size: int = 100
    max_seq_len: int = 250
    grad_clip: float = 1.0
    learning_rate: float = 1e-3
    decay_rate: float = 0.9999
    min_learning_rate: float = 1e-5
    recurrent_dropout: float = 0.1
    kl_weight: float = 0.5
    kl_weight_start: float = 0.01
    kl_decay_rate: float = 0.99995
    kl_tolerance: float = 0.2
    augment: bool = True
    num_steps: int = 10_000_000
    steps_per_epoch: int = 500
    precision: str = "float32"
    dec_model: str = "lstm"
    enc_model: str = "lstm"
    hyper_num_units: int = 256
    hyper_embedding_size: int = 32

    def __post_init__(self):
        for name, choices in (("dec_model", DEC_MODELS), ("enc_model", ENC_MODELS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")


def recurrent_layer(cell, units, recurrent_dropout=0.0, hyper_units=256, embedding_size=32, **kwargs):
    """A recurrent layer returning sequences, of the reference's cell called ``cell``: ``"lstm"``
    (``sketch_rnn.recurrent.LSTM``), ``"layer_norm"`` or ``"hyper"`` (``keras.layers.RNN`` of
    ``LayerNormLSTMCell`` or ``HyperLSTMCell``). ``kwargs`` go to the layer (``name``, ``dtype``).

    >>> [type(recurrent_layer(cell, 4)).__name__ for cell in DEC_MODELS]
    ['LSTM', 'RNN', 'RNN']
    >>> recurrent_layer("hyper", 4, hyper_units=6).cell.state_size
    [4, 4, 6, 6]
    """
    if cell == "lstm":
        return LSTM(units, return_sequences=True, recurrent_dropout=recurrent_dropout, **kwargs)
    if cell == "layer_norm":
        step = LayerNormLSTMCell(units, recurrent_dropout=recurrent_dropout, dtype=kwargs.get("dtype"))
    elif cell == "hyper":
        step = HyperLSTMCell(units, hyper_units, embedding_size, recurrent_dropout, dtype=kwargs.get("dtype"))
    else:
        raise ValueError(f"cell must be one of {', '.join(DEC_MODELS)}; got {cell!r}")
    return keras.layers.RNN(step, return_sequences=True, **kwargs)


def _gather_steps(sequences, index):
    """``sequences[b, index[b, k]]`` for ``sequences`` ``(B, T, F)`` and ``index`` ``(B, K)``: ``(B, K, F)``."""
    return ops.take_along_axis(sequences, ops.expand_dims(index, -1), axis=1)


@keras.saving.register_keras_serializable(package="sketch_rnn")
class SketchEncoder(keras.layers.Layer):
    """A bidirectional LSTM that reads each stroke-5 sketch to its end: ``concat(h_forward, h_backward)``.

    Padding rows (``p3 = 1``) are not read, as with the reference's ``sequence_length``: the
    forward LSTM's output is taken at each sketch's last point, and the backward LSTM reads each
    sketch reversed from its last point. The same function as ``keras.layers.Bidirectional(LSTM(units))``
    with the padding masked, but computed without a mask, so that ``LSTM`` can run fused kernels.

    >>> SketchEncoder(4)(keras.Input((6, 5))).shape
    (None, 8)
    """

    def __init__(self, units, recurrent_dropout=0.0, cell="lstm", **kwargs):
        super().__init__(**kwargs)
        if cell not in ENC_MODELS:
            raise ValueError(f"the encoder's cell must be one of {', '.join(ENC_MODELS)}; got {cell!r}")
        self.units, self.recurrent_dropout, self.cell = units, recurrent_dropout, cell
        self.forward_lstm, self.backward_lstm = (
            recurrent_layer(cell, units, recurrent_dropout, name=name, dtype=self.dtype_policy)
            for name in ("forward_lstm", "backward_lstm")
        )

    def build(self, input_shape):
        self.forward_lstm.build(input_shape)
        self.backward_lstm.build(input_shape)

    def call(self, sketches, training=False):
        lengths = ops.sum(ops.cast(ops.not_equal(sketches[..., 4], 1.0), "int32"), axis=1, keepdims=True)
        steps = ops.expand_dims(ops.arange(ops.shape(sketches)[1], dtype="int32"), 0)
        reversed_in_place = ops.where(steps < lengths, lengths - 1 - steps, steps)
        last = ops.maximum(lengths - 1, 0)
        forward = self.forward_lstm(sketches, training=training)
        backward = self.backward_lstm(_gather_steps(sketches, reversed_in_place), training=training)
        return ops.concatenate([_gather_steps(forward, last), _gather_steps(backward, last)], axis=-1)[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "recurrent_dropout": self.recurrent_dropout,
            "cell": self.cell,
        }


@keras.saving.register_keras_serializable(package="sketch_rnn")
class Sampling(keras.layers.Layer):
    """The reparameterised latent code: ``z = z_mean + exp(z_log_var / 2) * eps``, ``eps ~ N(0, I)``.

    While training it samples; otherwise it returns ``z_mean`` (as Keras's noise layers switch off
    at inference), so ``predict`` is deterministic and validation losses decode the posterior mean.

    >>> import numpy as np
    >>> mean, log_var = np.ones((2, 3), "float32"), np.zeros((2, 3), "float32")
    >>> layer = Sampling(seed=0)
    >>> keras.ops.convert_to_numpy(layer([mean, log_var])).tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    >>> bool(keras.ops.convert_to_numpy(layer([mean, log_var], training=True)).std() > 0)
    True
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        z_mean, z_log_var = inputs
        if not training:
            return z_mean
        eps = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def kl_weight(hps):
    """The KL weight's schedule: ``w = kl_weight - (kl_weight - kl_weight_start) * kl_decay_rate ** step``.

    >>> round(float(kl_weight(HParams())(0)), 4), round(float(kl_weight(HParams())(100_000)), 4)
    (0.01, 0.4967)
    """
    return lw.schedules.exponential_approach(hps.kl_weight_start, hps.kl_weight, decay=hps.kl_decay_rate)


def objective(hps):
    """The training objective: ``offset + pen + kl_weight(step) * max(kl, kl_tolerance)``.

    >>> sorted(objective(HParams()).terms), sorted(objective(HParams(conditional=False)).terms)
    (['kl', 'offset', 'pen'], ['offset', 'pen'])
    """
    mdn = lw.losses.bivariate_mdn_nll
    terms = {
        "offset": lw.Term(mdn, num_mixture=hps.num_mixture, part="offset"),
        "pen": lw.Term(mdn, num_mixture=hps.num_mixture, part="pen"),
    }
    if hps.conditional:
        terms["kl"] = lw.Term(lw.losses.gaussian_kl, free_bits=hps.kl_tolerance, weight=kl_weight(hps))
    return lw.Objective(terms)


def optimizer(hps):
    """Adam with gradients clipped by value, and the reference's learning rate:
    ``lr = (initial - minimum) * decay ** step + minimum`` (an ``lw.schedules.exponential_approach``).

    >>> adam = optimizer(HParams())
    >>> float(adam.clipvalue), round(float(adam.learning_rate), 6)
    (1.0, 0.001)
    """
    rate = lw.schedules.exponential_approach(hps.learning_rate, hps.min_learning_rate, decay=hps.decay_rate)
    return keras.optimizers.Adam(learning_rate=rate, clipvalue=hps.grad_clip)


def split_states(state, sizes):
    """``state`` ``(batch, sum(sizes))`` cut into a list of states of ``sizes`` on the last axis.

    >>> [tuple(part.shape) for part in split_states(ops.zeros((2, 5)), [2, 2, 1])]
    [(2, 2), (2, 2), (2, 1)]
    """
    edges = [sum(sizes[:k]) for k in range(1, len(sizes))]
    return list(ops.split(state, edges, axis=-1))


def build_model(hps, compile=True, diagnostics=None):
    """The sketch-rnn ``lw.Model`` for ``hps``, compiled with ``objective`` and ``optimizer`` unless told not to.

    With ``diagnostics=N``, every N training steps logs each term's gradient norm and cosine with
    the update (``lw.diagnostics.gradients``): ``offset_grad_norm``, ``offset_grad_cos``, ...

    Layers are named for ``sketch_rnn.sampling``: ``encoder``, ``z_mean``, ``z_log_var``, ``z``,
    ``init_state``, ``decoder`` and ``mdn_head``.

    >>> from sketch_rnn import presets
    >>> model = build_model(dataclasses.replace(presets.get("tiny"), conditional=False))
    >>> model.tap_names, model.compiled
    ((), True)
    """
    strokes = keras.Input((hps.max_seq_len + 1, 5), name="strokes")
    recurrent = keras.DTypePolicy(hps.precision)
    decoder = recurrent_layer(
        hps.dec_model,
        hps.dec_rnn_size,
        hps.recurrent_dropout,
        hps.hyper_num_units,
        hps.hyper_embedding_size,
        name="decoder",
        dtype=recurrent,
    )
    state_sizes = decoder.cell.state_size
    initial_state, z, taps = None, None, {}
    if hps.conditional:
        encoder = SketchEncoder(
            hps.enc_rnn_size, hps.recurrent_dropout, hps.enc_model, name="encoder", dtype=recurrent
        )
        encoded = encoder(strokes[:, 1:])
        z_mean = keras.layers.Dense(hps.z_size, name="z_mean", dtype="float32")(encoded)
        z_log_var = keras.layers.Dense(hps.z_size, name="z_log_var", dtype="float32")(encoded)
        z = Sampling(name="z")([z_mean, z_log_var])
        # All of the decoder's states from z, the hyper cell's too (as the reference does).
        state = keras.layers.Dense(
            sum(state_sizes),
            activation="tanh",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            name="init_state",
            dtype=recurrent,
        )(z)
        initial_state = split_states(state, state_sizes)
        taps = {"z_mean": z_mean, "z_log_var": z_log_var}
    previous = strokes[:, :-1]
    if hps.dec_model == "lstm":
        # z joins the previous point at every step; as a condition, its share of the input
        # projection is computed once a sequence, not once a step (see sketch_rnn.recurrent.LSTM).
        decoded = decoder(previous, initial_state=initial_state, condition=z)
    else:
        if z is not None:
            repeated = ops.repeat(ops.expand_dims(z, 1), hps.max_seq_len, axis=1)
            previous = ops.concatenate([previous, repeated], axis=-1)
        decoded = decoder(previous, initial_state=initial_state)
    head = keras.layers.Dense(6 * hps.num_mixture + 3, name="mdn_head", dtype="float32")(decoded)
    model = lw.Model(strokes, head, taps=taps, name="sketch_rnn")
    if compile:
        gradients = None if diagnostics is None else lw.diagnostics.gradients(every=diagnostics)
        model.compile(optimizer=optimizer(hps), loss=objective(hps), diagnostics=gradients)
    return model
