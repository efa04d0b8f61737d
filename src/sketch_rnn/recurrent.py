"""sketch-rnn's recurrent cells: `LSTM` (the default), `LayerNormLSTMCell` and `HyperLSTMCell`.

`LayerNormLSTMCell` and `HyperLSTMCell` are the reference's `layer_norm` and `hyper` cells
(`dec_model`, `enc_model`), Keras RNN cells for `keras.layers.RNN`, in `keras.ops` only.

`LSTM` is keras.layers.LSTM, without three avoidable costs of Keras 3.15 on sketch-rnn.

- On the torch backend, Keras computes an LSTM on the CPU with a Python loop that reads one time
  step of the precomputed input projection per iteration (`x_proj[t]`). The backward of each read
  allocates and zero-fills a gradient as large as the whole projection, so a training step costs
  O(T^2) in the sequence length T: 36.6 s instead of ~2.3 s for a sketch-rnn step of 250 steps
  (`benchmarks/RESULTS.md`). `LSTM` runs such sequences in `torch.lstm` instead (oneDNN on
  CPU, cuDNN on CUDA) whenever that computes the same function.
- sketch-rnn's decoder reads `concat([stroke, z])` at every step, with `z` the same at every step,
  so its input projection multiplies the same `z` by the same weights 250 times. Called with
  `condition=z`, `LSTM` computes `z @ kernel_z + bias` once a sequence instead.
- With recurrent dropout, Keras's LSTM cell slices its recurrent kernel in four at every step
  (and the backward adds four kernel-sized gradients a step): a sketch-rnn step takes 1.5x as
  long on TensorFlow. `LSTM` splits the kernel once, before the loop (on every backend: no fused
  kernel has this dropout).

Each is the same function as `keras.layers.LSTM` (the same outputs, gradients and dropout masks),
with the same weights: a model saved with one loads into the other.
"""

import keras
from keras import activations
from keras import ops
from keras.src import backend as keras_backend  # for keras.src.backend.rnn, the loop of Keras's RNN layers
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell  # masks drawn by keras.layers.RNN before its loop


@keras.saving.register_keras_serializable(package="sketch_rnn")
class LSTM(keras.layers.LSTM):
    """`keras.layers.LSTM`, with torch's fused kernel, an optional `condition`, cheaper dropout.

    Same constructor, config and weights as `keras.layers.LSTM` (the same weights load into
    either), and the same function. Which loop computes it:

    - torch: `torch.lstm` when that is the same function (`activation="tanh"`,
      `recurrent_activation="sigmoid"`, no mask, no recurrent dropout while training,
      `unroll=False`, `use_cudnn` not `False`). `keras.layers.Bidirectional(LSTM(...))` makes
      both directions of this class.
    - With recurrent dropout while training (any backend), and with a `condition` on TensorFlow
      and JAX: Keras's own loop (`keras.src.backend.rnn`, with its masking and `go_backwards`)
      runs our step, which splits the recurrent kernel once, not at every step as Keras's cell
      does, and adds the condition's projection computed once. Not with input dropout,
      `stateful` or `unroll`.
    - Otherwise: `keras.layers.LSTM`'s code (on the concatenation, with a condition). So, on
      TensorFlow and JAX, called as `keras.layers.LSTM` is and not training with recurrent
      dropout, it is exactly `keras.layers.LSTM`.

    `layer(sequences, condition=c)`, with `c` of shape `(batch, features_c)`, is
    `layer(concat([sequences, c repeated at every step], axis=-1))`: the kernel has
    `features + features_c` rows, as for that call (on torch that concatenation is what runs:
    the fused kernel beats any loop).

    >>> import numpy as np
    >>> from sketch_rnn.recurrent import LSTM
    >>> layer = LSTM(8, return_sequences=True, return_state=True)
    >>> outputs, h, c = layer(np.zeros((2, 5, 3), "float32"))
    >>> tuple(outputs.shape), tuple(h.shape), tuple(c.shape)
    ((2, 5, 8), (2, 8), (2, 8))
    >>> decoder = LSTM(8, return_sequences=True)
    >>> tuple(decoder(np.zeros((2, 5, 3), "float32"), condition=np.ones((2, 4), "float32")).shape)
    (2, 5, 8)
    >>> tuple(decoder.cell.kernel.shape)   # 3 + 4 input features, 4 gates of 8 units
    (7, 32)
    """

    def call(self, sequences, initial_state=None, mask=None, training=False, condition=None):
        if condition is not None:
            condition = ops.cast(condition, sequences.dtype)
        if self._runs_own_loop(training, condition):
            return self._loop(sequences, condition, initial_state, mask, training)
        if condition is not None:
            steps = ops.shape(sequences)[1]
            repeated = ops.repeat(ops.expand_dims(condition, 1), steps, axis=1)
            sequences = ops.concatenate([sequences, repeated], axis=-1)
        return super().call(sequences, initial_state=initial_state, mask=mask, training=training)

    def build(self, sequences_shape, initial_state_shape=None, condition_shape=None):
        if condition_shape is not None:
            sequences_shape = (*sequences_shape[:-1], sequences_shape[-1] + condition_shape[-1])
        super().build(sequences_shape, initial_state_shape)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self._uses_fused_kernel(mask, training):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        cell = self.cell
        if training and cell.dropout:
            # Same input dropout as keras.layers.LSTM: one mask for all steps.
            dp_mask = cell.get_dropout_mask(sequences[:, 0, :])
            sequences = sequences * ops.expand_dims(dp_mask, axis=1)
        if self.go_backwards:
            sequences = ops.flip(sequences, axis=1)
        outputs, h, c = _torch_lstm(
            sequences,
            initial_state[0],
            initial_state[1],
            cell.kernel,
            cell.recurrent_kernel,
            cell.bias,
        )
        return h, outputs, [h, c]

    def _uses_fused_kernel(self, mask, training):
        cell = self.cell
        return (
            keras.backend.backend() == "torch"
            and self.use_cudnn in ("auto", True)
            and all(m is None for m in keras.tree.flatten(mask))
            and not (training and cell.recurrent_dropout)
            and not self.unroll
            and cell.activation in (activations.tanh, ops.tanh)
            and cell.recurrent_activation in (activations.sigmoid, ops.sigmoid)
        )

    def _runs_own_loop(self, training, condition):
        """Whether our step runs in Keras's loop (`_loop`) instead of keras.layers.LSTM's code:
        for recurrent dropout while training (Keras's cell then slices its recurrent kernel in
        four at every step, and no fused kernel has this dropout), and for a condition except
        on torch (whose fused kernel, fed the repeated condition, is faster than any loop)."""
        cell = self.cell
        if cell.dropout or self.stateful or self.unroll:
            return False
        if training and 0.0 < cell.recurrent_dropout < 1.0:
            return True
        return condition is not None and keras.backend.backend() != "torch"

    def _loop(self, sequences, condition, initial_state, mask, training):
        """The LSTM over `concat([sequences, condition at every step])` (or `sequences` with no
        condition), run by the loop Keras's RNN layers run (`keras.src.backend.rnn`: the same
        masking and `go_backwards`); the condition's share of the input projection,
        `condition @ kernel[features:] + bias`, is computed once, before the loop."""
        cell = self.cell
        if initial_state is None:
            initial_state = self.get_initial_state(ops.shape(sequences)[0])
        h0, c0 = (ops.cast(state, cell.compute_dtype) for state in initial_state)
        features = sequences.shape[-1]
        input_kernel = cell.kernel[:features]
        gate_bias = 0.0 if condition is None else ops.matmul(condition, cell.kernel[features:])
        if cell.use_bias:
            gate_bias = gate_bias + cell.bias
        # keras.layers.LSTM's recurrent dropout: a mask of h for each gate, fixed over time. Drawn
        # at every call, as Keras draws it, so that the random stream is the same.
        masks = cell.get_recurrent_dropout_mask(h0) if cell.recurrent_dropout else None
        cell.reset_recurrent_dropout_mask()
        if not (training and 0.0 < cell.recurrent_dropout < 1.0):
            masks = None
        # Split once, before the loop (Keras's cell slices the kernel at every step).
        kernels = ops.split(cell.recurrent_kernel, 4, axis=1) if masks else None

        def step(inputs, states):
            h, c = states[0], states[1]
            if masks is None:
                z = ops.matmul(h, cell.recurrent_kernel)
            else:
                z = ops.concatenate([ops.matmul(h * m, k) for m, k in zip(masks, kernels)], axis=-1)
            z = z + ops.matmul(inputs, input_kernel) + gate_bias
            z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
            c = cell.recurrent_activation(z_f) * c + cell.recurrent_activation(z_i) * cell.activation(z_c)
            h = cell.recurrent_activation(z_o) * cell.activation(c)
            return h, [h, c]

        if keras.tree.is_nested(mask):
            mask = mask[0]
        last, outputs, (h, c) = keras_backend.rnn(
            step,
            sequences,
            [h0, c0],
            go_backwards=self.go_backwards,
            mask=mask,
            input_length=sequences.shape[1],
            zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences,
        )
        output = outputs if self.return_sequences else last
        return (output, h, c) if self.return_state else output


def _torch_lstm(inputs, h0, c0, kernel, recurrent_kernel, bias):
    """Runs an LSTM over `inputs` (batch, time, features) with `torch.lstm`.

    Why a torch call in a backend-neutral package: Keras 3.15's torch LSTM on any device but CUDA
    (`keras/src/backend/torch/rnn.py`, `_fallback_lstm`) loops in Python over `x_proj[t]`; the
    backward of each such slice zero-fills a (time, batch, 4 * units) gradient, so a training
    step costs O(time^2). `torch.lstm` runs oneDNN's LSTM on CPU (cuDNN on CUDA), in O(time).

    Keras and torch order the gates alike (input, forget, cell, output) and compute the same
    cell; Keras stores the kernels transposed relative to torch, and has one bias where torch
    adds two (`b_ih + b_hh`): the second is zero. Returns `(outputs, h, c)`: the hidden states
    at every step (batch, time, units), and the final hidden and cell states (batch, units).
    """
    import torch

    kernel = ops.convert_to_tensor(kernel)
    recurrent_kernel = ops.convert_to_tensor(recurrent_kernel)
    dtype = kernel.dtype
    params = [kernel.T, recurrent_kernel.T]
    if bias is not None:
        bias = ops.convert_to_tensor(bias)
        params += [bias, torch.zeros_like(bias)]
    outputs, h, c = torch.lstm(
        ops.convert_to_tensor(inputs).to(dtype),
        (
            ops.convert_to_tensor(h0).to(dtype).unsqueeze(0),
            ops.convert_to_tensor(c0).to(dtype).unsqueeze(0),
        ),
        params,
        bias is not None,  # has_biases
        1,  # num_layers
        0.0,  # dropout
        torch.is_grad_enabled(),  # train
        False,  # bidirectional
        True,  # batch_first
    )
    return outputs, h[0], c[0]


def _normalize(x, epsilon):
    """``(x - mean) / sqrt(var + epsilon)`` over the last axis."""
    mean = ops.mean(x, axis=-1, keepdims=True)
    centred = x - mean
    return centred * ops.rsqrt(ops.mean(ops.square(centred), axis=-1, keepdims=True) + epsilon)


def _normalize_gates(z, units, epsilon):
    """Each of the four gate blocks of ``z`` ``(batch, 4 * units)`` normalised on its own."""
    return ops.reshape(_normalize(ops.reshape(z, (-1, 4, units)), epsilon), (-1, 4 * units))


class _GateDropoutCell(keras.layers.Layer, DropoutRNNCell):
    """What the layer-norm and hyper cells share: recurrent dropout on the candidate ``g = tanh(j)``
    (Semeniuta et al. 2016, as the reference's cells drop it), one mask a sequence, drawn by
    Keras's RNN layer before its loop (``DropoutRNNCell``), and the cell update from gates ordered
    ``i, j, f, o`` (input, candidate, forget, output) as the reference orders them."""

    def __init__(self, units, recurrent_dropout=0.0, forget_bias=1.0, epsilon=1e-3, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= recurrent_dropout < 1.0:
            raise ValueError(f"recurrent_dropout is a drop probability in [0, 1), got {recurrent_dropout}")
        self.units, self.recurrent_dropout = units, recurrent_dropout
        self.forget_bias, self.epsilon, self.seed = forget_bias, epsilon, seed
        self.dropout = 0.0
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.output_size = units

    def _new_state(self, gates, c, training):
        """``(h, c)`` after a step: ``c' = c sigmoid(f + forget_bias) + sigmoid(i) g``,
        ``h' = tanh(LN(c')) sigmoid(o)``, ``gates`` already layer-normalised."""
        i, j, f, o = ops.split(gates, 4, axis=-1)
        g = ops.tanh(j)
        if training and self.recurrent_dropout:
            g = g * self.get_recurrent_dropout_mask(c)
        c = c * ops.sigmoid(f + self.forget_bias) + ops.sigmoid(i) * g
        c_norm = _normalize(c, self.epsilon) * self.c_gamma + self.c_beta
        return ops.tanh(c_norm) * ops.sigmoid(o), c

    def _build_norms(self):
        units = self.units
        self.gamma = self.add_weight(name="gamma", shape=(4 * units,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(4 * units,), initializer="zeros")
        self.c_gamma = self.add_weight(name="c_gamma", shape=(units,), initializer="ones")
        self.c_beta = self.add_weight(name="c_beta", shape=(units,), initializer="zeros")

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "recurrent_dropout": self.recurrent_dropout,
            "forget_bias": self.forget_bias,
            "epsilon": self.epsilon,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="sketch_rnn")
class LayerNormLSTMCell(_GateDropoutCell):
    """The layer-normalised LSTM cell of sketch-rnn's reference (``dec_model=layer_norm``), for
    ``keras.layers.RNN``. States ``[h, c]``; with ``LN(v) = gamma (v - mean v) / sqrt(var v + epsilon) + beta``::

        i, j, f, o = LN_each_block(x @ kernel + h @ recurrent_kernel)     # no bias: LN's beta is one
        c' = c * sigmoid(f + forget_bias) + sigmoid(i) * dropout(tanh(j))
        h' = tanh(LN_c(c')) * sigmoid(o)

    Each of the four gate blocks is normalised on its own (its own mean and variance), with
    gains and offsets of ``4 * units``; the carried ``c'`` is the unnormalised one.
    ``recurrent_dropout`` drops the candidate ``tanh(j)`` (one mask a sequence, while training).

    >>> import numpy as np
    >>> layer = keras.layers.RNN(LayerNormLSTMCell(8), return_sequences=True)
    >>> tuple(layer(np.zeros((2, 5, 3), "float32")).shape)
    (2, 5, 8)
    """

    def __init__(self, units, recurrent_dropout=0.0, forget_bias=1.0, epsilon=1e-3, seed=None, **kwargs):
        super().__init__(units, recurrent_dropout, forget_bias, epsilon, seed, **kwargs)
        self.state_size = [units, units]

    def build(self, input_shape):
        units = self.units
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], 4 * units), initializer="glorot_uniform")
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel", shape=(units, 4 * units), initializer="orthogonal"
        )
        self._build_norms()

    def call(self, inputs, states, training=False):
        h, c = states[0], states[1]
        gates = ops.matmul(inputs, self.kernel) + ops.matmul(h, self.recurrent_kernel)
        gates = _normalize_gates(gates, self.units, self.epsilon) * self.gamma + self.beta
        h, c = self._new_state(gates, c, training)
        return h, [h, c]


@keras.saving.register_keras_serializable(package="sketch_rnn")
class HyperLSTMCell(_GateDropoutCell):
    """Ha's HyperLSTM (Ha, Dai & Le 2016) as sketch-rnn's reference has it (``dec_model=hyper``),
    for ``keras.layers.RNN``: a small layer-norm LSTM (``hyper_units``, no dropout) reads
    ``[x, h]`` and, through embeddings of ``embedding_size``, scales each gate block's input and
    recurrent projections of the main cell, which is layer-normalised. States
    ``[h, c, hyper_h, hyper_c]``; with ``u`` the hyper cell's output and ``k`` a gate block::

        u, hyper state' = hyper_cell([x, h], hyper state)
        alpha_k(u) = (u @ w_k + w_bias_k) @ alpha_k      (for x and h apart: 8 such scalings)
        beta_k(u) = (u @ b_k) @ beta_k                    (recurrent blocks only)
        gate_k = alpha_xk(u) * (x @ kernel)_k + alpha_hk(u) * (h @ recurrent_kernel)_k + beta_k(u) + bias_k
        then as LayerNormLSTMCell, from the gates: LN each block, c', h' = tanh(LN_c(c')) sigmoid(o)

    Initialised as the reference: ``w`` zero with bias one, ``alpha`` ``0.1 / embedding_size``
    (so ``alpha`` starts at 0.1), ``b`` normal with deviation 0.01, ``beta`` zero.

    >>> import numpy as np
    >>> cell = HyperLSTMCell(8, hyper_units=6, embedding_size=4)
    >>> cell.state_size
    [8, 8, 6, 6]
    >>> tuple(keras.layers.RNN(cell)(np.zeros((2, 5, 3), "float32")).shape)
    (2, 8)
    """

    def __init__(self, units, hyper_units=256, embedding_size=32, recurrent_dropout=0.0, forget_bias=1.0,
                 epsilon=1e-3, seed=None, **kwargs):
        super().__init__(units, recurrent_dropout, forget_bias, epsilon, seed, **kwargs)
        self.hyper_units, self.embedding_size = hyper_units, embedding_size
        self.state_size = [units, units, hyper_units, hyper_units]
        self.hyper_cell = LayerNormLSTMCell(
            hyper_units, forget_bias=forget_bias, epsilon=epsilon, name="hyper_cell", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        units, size = self.units, self.embedding_size
        features = input_shape[-1]
        self.hyper_cell.build((None, features + units))
        self.kernel = self.add_weight(name="kernel", shape=(features, 4 * units), initializer="glorot_uniform")
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel", shape=(units, 4 * units), initializer="orthogonal"
        )
        self.bias = self.add_weight(name="bias", shape=(4 * units,), initializer="zeros")
        self.scale_embedding = self.add_weight(
            name="scale_embedding", shape=(self.hyper_units, 8 * size), initializer="zeros"
        )
        self.scale_embedding_bias = self.add_weight(name="scale_embedding_bias", shape=(8 * size,), initializer="ones")
        self.scale = self.add_weight(
            name="scale", shape=(8, size, units), initializer=keras.initializers.Constant(0.1 / size)
        )
        self.shift_embedding = self.add_weight(
            name="shift_embedding",
            shape=(self.hyper_units, 4 * size),
            initializer=keras.initializers.RandomNormal(stddev=0.01),
        )
        self.shift = self.add_weight(name="shift", shape=(4, size, units), initializer="zeros")
        self._build_norms()

    def call(self, inputs, states, training=False):
        h, c = states[0], states[1]
        u, hyper_state = self.hyper_cell(
            ops.concatenate([inputs, h], axis=-1), [states[2], states[3]], training=training
        )
        size, units = self.embedding_size, self.units
        scale_codes = ops.reshape(ops.matmul(u, self.scale_embedding) + self.scale_embedding_bias, (-1, 8, size))
        scales = ops.einsum("bke,keu->bku", scale_codes, self.scale)  # (batch, 8, units)
        shift_codes = ops.reshape(ops.matmul(u, self.shift_embedding), (-1, 4, size))
        shifts = ops.einsum("bke,keu->bku", shift_codes, self.shift)  # (batch, 4, units)
        from_x = ops.reshape(ops.matmul(inputs, self.kernel), (-1, 4, units))
        from_h = ops.reshape(ops.matmul(h, self.recurrent_kernel), (-1, 4, units))
        gates = scales[:, :4] * from_x + scales[:, 4:] * from_h + shifts + ops.reshape(self.bias, (4, units))
        gates = ops.reshape(_normalize(gates, self.epsilon), (-1, 4 * units)) * self.gamma + self.beta
        h, c = self._new_state(gates, c, training)
        return h, [h, c, *hyper_state]

    def get_config(self):
        return {**super().get_config(), "hyper_units": self.hyper_units, "embedding_size": self.embedding_size}
