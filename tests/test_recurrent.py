"""Tests for sketch_rnn.recurrent.LSTM: equal to keras.layers.LSTM on every backend, fused on torch."""

import keras
import numpy as np
import pytest
from keras import ops

from sketch_rnn import recurrent
from sketch_rnn.recurrent import LSTM

BATCH, STEPS, FEATURES, UNITS = 3, 7, 4, 5
X = np.random.default_rng(1).normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
STATES = list(np.random.default_rng(2).normal(size=(4, BATCH, UNITS)).astype("float32"))
TORCH = keras.backend.backend() == "torch"


@pytest.fixture
def fused_calls(monkeypatch):
    """Records every call of the torch fused kernel (there are none off torch)."""
    calls = []
    original = recurrent._torch_lstm

    def spy(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(recurrent, "_torch_lstm", spy)
    return calls


def twins(make, input_shape=(None, STEPS, FEATURES)):
    """`make(LSTM class)` for keras.layers.LSTM and for ours, built, with the same weights."""
    theirs, ours = make(keras.layers.LSTM), make(LSTM)
    theirs.build(input_shape)
    ours.build(input_shape)
    ours.set_weights(theirs.get_weights())
    return theirs, ours


def loss_and_grads(layer, arrays, **kwargs):
    """sum(probe * outputs) and its gradients w.r.t. `arrays` (x, then any initial
    states) and the layer's trainable weights, by the backend's own autodiff."""

    def call(x, *states):
        return layer(x, initial_state=list(states) or None, **kwargs)

    def loss_of(outputs):
        rng = np.random.default_rng(3)
        probes = [rng.normal(size=tuple(o.shape)).astype("float32") for o in keras.tree.flatten(outputs)]
        return sum(ops.sum(o * ops.convert_to_tensor(p)) for o, p in zip(keras.tree.flatten(outputs), probes))

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def f(trainable, arrays):
            outputs, _ = layer.stateless_call(
                trainable, [v.value for v in layer.non_trainable_variables], *arrays[:1],
                initial_state=list(arrays[1:]) or None, **kwargs)
            return loss_of(outputs)

        loss, (weight_grads, array_grads) = jax.value_and_grad(f, argnums=(0, 1))(
            [v.value for v in layer.trainable_variables], [jax.numpy.asarray(a) for a in arrays])
        grads = list(array_grads) + list(weight_grads)
    elif backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            loss = loss_of(call(*tensors))
        grads = tape.gradient(loss, tensors + [v.value for v in layer.trainable_variables])
    else:
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        for v in layer.trainable_variables:
            v.value.grad = None
        loss = loss_of(call(*tensors))
        loss.backward()
        grads = [t.grad for t in tensors] + [v.value.grad for v in layer.trainable_variables]
    return float(ops.convert_to_numpy(loss)), [ops.convert_to_numpy(g) for g in grads]


def assert_same(theirs, ours, arrays, **kwargs):
    expected, actual = theirs(arrays[0], initial_state=arrays[1:] or None, **kwargs), ours(
        arrays[0], initial_state=arrays[1:] or None, **kwargs)
    expected, actual = keras.tree.flatten(expected), keras.tree.flatten(actual)
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(e), rtol=1e-5, atol=1e-5)
    expected_loss, expected_grads = loss_and_grads(theirs, arrays, **kwargs)
    actual_loss, actual_grads = loss_and_grads(ours, arrays, **kwargs)
    np.testing.assert_allclose(actual_loss, expected_loss, rtol=1e-5, atol=1e-5)
    assert len(actual_grads) == len(expected_grads) == len(arrays) + len(ours.trainable_variables)
    for e, a in zip(expected_grads, actual_grads):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5)


CONFIGS = {
    "last output": {},
    "sequences": dict(return_sequences=True),
    "state": dict(return_state=True),
    "sequences and state": dict(return_sequences=True, return_state=True),
    "backwards": dict(go_backwards=True),
    "backwards, sequences and state": dict(go_backwards=True, return_sequences=True, return_state=True),
    "no bias": dict(use_bias=False, return_sequences=True),
}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_equals_keras_lstm_outputs_states_and_gradients(config, fused_calls):
    theirs, ours = twins(lambda cls: cls(UNITS, unit_forget_bias=False, bias_initializer="random_normal", **config))
    assert_same(theirs, ours, [X])
    assert bool(fused_calls) == TORCH


def test_equals_keras_lstm_with_initial_state(fused_calls):
    theirs, ours = twins(lambda cls: cls(UNITS, return_sequences=True, return_state=True, go_backwards=True))
    assert_same(theirs, ours, [X, STATES[0], STATES[1]])
    assert bool(fused_calls) == TORCH


def test_bidirectional_clones_our_class_and_equals_keras(fused_calls):
    theirs, ours = twins(
        lambda cls: keras.layers.Bidirectional(cls(UNITS, return_sequences=True, return_state=True)))
    assert type(ours.forward_layer) is LSTM and type(ours.backward_layer) is LSTM
    assert ours.backward_layer.go_backwards and not ours.forward_layer.go_backwards
    assert_same(theirs, ours, [X])
    assert_same(theirs, ours, [X] + STATES)
    assert {call[0].shape[1] for call in fused_calls} == ({STEPS} if TORCH else set())


def test_input_dropout_in_training_matches_keras(fused_calls):
    theirs, ours = twins(lambda cls: cls(UNITS, dropout=0.5, seed=7, return_sequences=True))
    expected, actual = theirs(X, training=True), ours(X, training=True)
    np.testing.assert_allclose(ops.convert_to_numpy(actual), ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-5)
    assert bool(fused_calls) == TORCH


def test_recurrent_dropout_in_training_falls_back_to_keras(fused_calls):
    theirs, ours = twins(lambda cls: cls(UNITS, recurrent_dropout=0.5, seed=7, return_sequences=True))
    expected, actual = theirs(X, training=True), ours(X, training=True)
    np.testing.assert_allclose(ops.convert_to_numpy(actual), ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-5)
    assert not fused_calls
    assert_same(theirs, ours, [X])  # not training: recurrent dropout is off, so the fused kernel is exact
    assert bool(fused_calls) == TORCH


def test_mask_falls_back_to_keras(fused_calls):
    mask = np.arange(STEPS)[None, :] < np.array([[STEPS], [3], [1]])
    theirs, ours = twins(lambda cls: cls(UNITS, return_sequences=True, return_state=True))
    for e, a in zip(theirs(X, mask=mask), ours(X, mask=mask)):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(e), rtol=1e-5, atol=1e-5)
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.Masking(0.0), LSTM(UNITS)])
    model(X)
    assert not fused_calls


@pytest.mark.parametrize(
    "config",
    [dict(activation="relu"), dict(recurrent_activation="hard_sigmoid"), dict(unroll=True), dict(use_cudnn=False)],
    ids=["relu", "hard_sigmoid", "unroll", "use_cudnn=False"])
def test_other_configurations_fall_back_to_keras(config, fused_calls):
    theirs, ours = twins(lambda cls: cls(UNITS, return_sequences=True, **config))
    np.testing.assert_allclose(ops.convert_to_numpy(ours(X)), ops.convert_to_numpy(theirs(X)), rtol=1e-5, atol=1e-5)
    assert not fused_calls


def test_stateful_carries_state_like_keras():
    theirs, ours = twins(lambda cls: cls(UNITS, stateful=True), input_shape=(BATCH, STEPS, FEATURES))
    for _ in range(2):
        np.testing.assert_allclose(
            ops.convert_to_numpy(ours(X)), ops.convert_to_numpy(theirs(X)), rtol=1e-5, atol=1e-5)


def test_train_step_updates_every_weight():
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.Bidirectional(LSTM(UNITS)),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = model.get_weights()
    model.train_on_batch(X, np.ones((BATCH, 1), "float32"))
    assert all(np.any(b != a) for b, a in zip(before, model.get_weights()))


def test_saved_model_round_trips_and_weights_load_into_keras_lstm(tmp_path):
    def build(cls):
        inputs = keras.Input((STEPS, FEATURES))
        hidden = keras.layers.Bidirectional(cls(UNITS, return_sequences=True))(inputs)
        return keras.Model(inputs, cls(UNITS, go_backwards=True)(hidden))

    model = build(LSTM)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert [type(layer) for layer in restored.layers] == [type(layer) for layer in model.layers]
    assert type(restored.layers[1].backward_layer) is LSTM and type(restored.layers[2]) is LSTM
    np.testing.assert_allclose(ops.convert_to_numpy(restored(X)), ops.convert_to_numpy(model(X)), rtol=1e-6)

    model.save_weights(tmp_path / "model.weights.h5")
    plain = build(keras.layers.LSTM)
    plain.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_allclose(ops.convert_to_numpy(plain(X)), ops.convert_to_numpy(model(X)), rtol=1e-5, atol=1e-5)
