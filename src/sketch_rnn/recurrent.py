"""An LSTM layer that runs in torch's fused LSTM kernel on the torch backend.

Keras 3.15's torch backend computes an LSTM on the CPU with a Python loop that
reads one time step of the precomputed input projection per iteration
(`x_proj[t]`). The backward of each such read allocates and zero-fills a
gradient as large as the whole projection, so a training step costs O(T^2)
in the sequence length T: 36.6 s instead of ~2.3 s for a sketch-rnn step of
250 time steps (see `benchmarks/RESULTS_lstm.md`). `LSTM` below is
`keras.layers.LSTM` with one change: on the torch backend, when the fused
kernel computes exactly the same function, the sequence goes through
`torch.lstm` (oneDNN on CPU, cuDNN on CUDA) instead.
"""

import keras
from keras import activations
from keras import ops


@keras.saving.register_keras_serializable(package="sketch_rnn")
class LSTM(keras.layers.LSTM):
    """`keras.layers.LSTM`, with torch's fused kernel on the torch backend.

    Same constructor, config and weights as `keras.layers.LSTM` (the same
    weights load into either). On TensorFlow and JAX it is exactly
    `keras.layers.LSTM`. On torch the sequence is computed by `torch.lstm`
    when that is the same function: `activation="tanh"`,
    `recurrent_activation="sigmoid"`, no mask, no recurrent dropout while
    training, `unroll=False`, `use_cudnn` not `False`. Otherwise (and for
    the backward copy inside `keras.layers.Bidirectional`, which is also this
    class) Keras' own implementation runs.

    >>> import numpy as np
    >>> from sketch_rnn.recurrent import LSTM
    >>> layer = LSTM(8, return_sequences=True, return_state=True)
    >>> outputs, h, c = layer(np.zeros((2, 5, 3), "float32"))
    >>> tuple(outputs.shape), tuple(h.shape), tuple(c.shape)
    ((2, 5, 8), (2, 8), (2, 8))
    """

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self._uses_fused_kernel(mask, training):
            return super().inner_loop(
                sequences, initial_state, mask, training=training
            )
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


def _torch_lstm(inputs, h0, c0, kernel, recurrent_kernel, bias):
    """Runs an LSTM over `inputs` (batch, time, features) with `torch.lstm`.

    Why a torch call in a backend-neutral package: Keras 3.15's torch LSTM
    (`keras/src/backend/torch/rnn.py::_fallback_lstm`, every non-CUDA run)
    loops in Python over `x_proj[t]`; each slice's backward zero-fills a
    (time, batch, 4 * units) gradient, which makes the backward pass
    O(time^2). `torch.lstm` unbinds the projection once (O(time)) and runs
    oneDNN's LSTM on CPU (cuDNN on CUDA).

    Keras and torch order the gates the same way (input, forget, cell,
    output) and compute the same cell; Keras stores the kernels transposed
    relative to torch and has one bias where torch has two (`b_ih + b_hh`), so
    the second is zero. Returns `(outputs, h, c)`: all hidden states (batch,
    time, units), and the final hidden and cell states (batch, units).
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
