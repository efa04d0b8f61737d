"""`LSTM`: keras.layers.LSTM, without three avoidable costs of Keras 3.15 on sketch-rnn.

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
