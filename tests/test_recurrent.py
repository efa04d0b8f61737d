"""Tests for sketch_rnn.recurrent.LSTM: the same as keras.layers.LSTM on every backend (outputs, states,
gradients, random stream, saved files), and which path computes it: torch's fused kernel, our loop or Keras's."""

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
def calls(monkeypatch):
    """Which of our paths ran: `calls["fused"]` (torch.lstm) and `calls["loop"]` (our step in
    Keras's loop) list one entry a call; neither ran: keras.layers.LSTM's own code."""
    calls = {"fused": [], "loop": []}
    fused, loop = recurrent._torch_lstm, LSTM._loop

    def fused_spy(*args):
        calls["fused"].append(args)
        return fused(*args)

    def loop_spy(self, *args):
        calls["loop"].append(args)
        return loop(self, *args)

    monkeypatch.setattr(recurrent, "_torch_lstm", fused_spy)
    monkeypatch.setattr(LSTM, "_loop", loop_spy)
    return calls


def ran(calls):
    return {name for name, made in calls.items() if made}


def twins(make, input_shape=(None, STEPS, FEATURES)):
    """`make(LSTM class)` for keras.layers.LSTM and for ours, built, with the same weights."""
    theirs, ours = make(keras.layers.LSTM), make(LSTM)
    theirs.build(input_shape)
    ours.build(input_shape)
    ours.set_weights(theirs.get_weights())
    return theirs, ours


def plain_call(call, x, *states, **kwargs):
    return call(x, initial_state=list(states) or None, **kwargs)


def outputs_and_grads(layer, arrays, forward=plain_call, **kwargs):
    """`forward(layer call, *arrays, **kwargs)` and the gradients of sum(probe * outputs) w.r.t.
    `arrays` and the layer's trainable weights, by the backend's own autodiff; all as NumPy."""

    def loss_of(outputs):
        rng = np.random.default_rng(3)
        outputs = keras.tree.flatten(outputs)
        probes = [rng.normal(size=tuple(o.shape)).astype("float32") for o in outputs]
        return sum(ops.sum(o * ops.convert_to_tensor(p)) for o, p in zip(outputs, probes))

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def f(trainable, arrays):
            def call(*args, **kwargs):
                non_trainable = [v.value for v in layer.non_trainable_variables]
                return layer.stateless_call(trainable, non_trainable, *args, **kwargs)[0]

            outputs = forward(call, *arrays, **kwargs)
            return loss_of(outputs), outputs

        (_, outputs), (weight_grads, array_grads) = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(
            [v.value for v in layer.trainable_variables], [jax.numpy.asarray(a) for a in arrays])
        grads = list(array_grads) + list(weight_grads)
    elif backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            outputs = forward(layer, *tensors, **kwargs)
            loss = loss_of(outputs)
        grads = tape.gradient(loss, tensors + [v.value for v in layer.trainable_variables])
    else:
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        for v in layer.trainable_variables:
            v.value.grad = None
        outputs = forward(layer, *tensors, **kwargs)
        loss_of(outputs).backward()
        grads = [t.grad for t in tensors] + [v.value.grad for v in layer.trainable_variables]
    return [ops.convert_to_numpy(ops.stop_gradient(o)) for o in keras.tree.flatten(outputs)], [
        ops.convert_to_numpy(g) for g in grads]


def assert_same(theirs, ours, arrays, their_forward=plain_call, our_forward=plain_call, **kwargs):
    """Same outputs, final states and gradients (w.r.t. the arrays and the weights)."""
    expected_outputs, expected_grads = outputs_and_grads(theirs, arrays, their_forward, **kwargs)
    actual_outputs, actual_grads = outputs_and_grads(ours, arrays, our_forward, **kwargs)
    assert len(actual_outputs) == len(expected_outputs)
    assert len(actual_grads) == len(expected_grads) == len(arrays) + len(ours.trainable_variables)
    for e, a in zip(expected_outputs, actual_outputs):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)
    for e, a in zip(expected_grads, actual_grads):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5)


CONFIGS = {
    "last output, no bias": (dict(use_bias=False), [X]),
    "backwards, sequences, state, initial state": (
        dict(go_backwards=True, return_sequences=True, return_state=True), [X, STATES[0], STATES[1]]),
}


@pytest.mark.parametrize("config, arrays", CONFIGS.values(), ids=CONFIGS.keys())
def test_equals_keras_lstm_outputs_states_and_gradients(config, arrays, calls):
    theirs, ours = twins(lambda cls: cls(UNITS, unit_forget_bias=False, bias_initializer="random_normal", **config))
    assert_same(theirs, ours, arrays)
    assert ran(calls) == ({"fused"} if TORCH else set())


def test_bidirectional_clones_our_class_and_equals_keras(calls):
    theirs, ours = twins(
        lambda cls: keras.layers.Bidirectional(cls(UNITS, return_sequences=True, return_state=True)))
    assert type(ours.forward_layer) is LSTM and type(ours.backward_layer) is LSTM
    assert ours.backward_layer.go_backwards and not ours.forward_layer.go_backwards
    assert_same(theirs, ours, [X] + STATES)
    assert ran(calls) == ({"fused"} if TORCH else set())
    assert all(args[0].shape[1] == STEPS for args in calls["fused"])


def test_input_dropout_in_training_matches_keras(calls):
    theirs, ours = twins(lambda cls: cls(UNITS, dropout=0.5, seed=7, return_sequences=True))
    expected, actual = theirs(X, training=True), ours(X, training=True)
    np.testing.assert_allclose(ops.convert_to_numpy(actual), ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-5)
    assert ran(calls) == ({"fused"} if TORCH else set())


def test_recurrent_dropout_in_training_matches_keras(calls):
    theirs, ours = twins(lambda cls: cls(UNITS, recurrent_dropout=0.5, seed=7, return_sequences=True, return_state=True))
    for e, a in zip(theirs(X), ours(X)):  # not training: no dropout, but the masks are drawn
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(e), rtol=1e-5, atol=1e-5)
    assert_same(theirs, ours, [X, STATES[0], STATES[1]], training=True)  # so the same masks here
    # Training: our step, which does not slice the recurrent kernel at every step as Keras's does
    # (no fused kernel has this dropout). Not training: keras.layers.LSTM's (fused on torch).
    assert len(calls["loop"]) == 1 and len(calls["fused"]) == (1 if TORCH else 0)


def test_recurrent_dropout_with_a_mask_in_training_matches_keras(calls):
    mask = np.arange(STEPS)[None, :] < np.array([[STEPS], [3], [1]])
    theirs, ours = twins(lambda cls: cls(UNITS, recurrent_dropout=0.5, seed=7, go_backwards=True, return_sequences=True))
    expected, actual = theirs(X, mask=mask, training=True), ours(X, mask=mask, training=True)
    np.testing.assert_allclose(ops.convert_to_numpy(actual), ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-5)
    assert ran(calls) == {"loop"}


def test_mask_falls_back_to_keras(calls):
    mask = np.arange(STEPS)[None, :] < np.array([[STEPS], [3], [1]])
    theirs, ours = twins(lambda cls: cls(UNITS, return_sequences=True, return_state=True))
    for e, a in zip(theirs(X, mask=mask), ours(X, mask=mask)):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(e), rtol=1e-5, atol=1e-5)
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.Masking(0.0), LSTM(UNITS)])
    model(X)
    assert not ran(calls)


@pytest.mark.parametrize(
    "config",
    [dict(activation="relu"), dict(recurrent_activation="hard_sigmoid"), dict(unroll=True), dict(use_cudnn=False)],
    ids=["relu", "hard_sigmoid", "unroll", "use_cudnn=False"])
def test_other_configurations_fall_back_to_keras(config, calls):
    theirs, ours = twins(lambda cls: cls(UNITS, return_sequences=True, **config))
    np.testing.assert_allclose(ops.convert_to_numpy(ours(X)), ops.convert_to_numpy(theirs(X)), rtol=1e-5, atol=1e-5)
    assert not ran(calls)


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


def repeated(x, condition):
    steps = ops.shape(x)[1]
    return ops.concatenate([x, ops.repeat(ops.expand_dims(condition, 1), steps, axis=1)], axis=-1)


def concat_call(call, x, condition, *states, **kwargs):
    return call(repeated(x, condition), initial_state=list(states) or None, **kwargs)


def condition_call(call, x, condition, *states, **kwargs):
    return call(x, condition=condition, initial_state=list(states) or None, **kwargs)


CONDITION = np.random.default_rng(4).normal(size=(BATCH, 3)).astype("float32")
CONDITION_CONFIGS = {
    "sequences and state": dict(return_sequences=True, return_state=True),
    "backwards, relu, no bias": dict(go_backwards=True, activation="relu", use_bias=False, return_sequences=True),
}


@pytest.mark.parametrize("config", CONDITION_CONFIGS.values(), ids=CONDITION_CONFIGS.keys())
def test_condition_equals_keras_lstm_on_the_repeated_condition(config, calls):
    theirs, ours = twins(lambda cls: cls(UNITS, bias_initializer="random_normal", **config),
                         input_shape=(None, STEPS, FEATURES + 3))
    assert_same(theirs, ours, [X, CONDITION, STATES[0], STATES[1]], concat_call, condition_call)
    if TORCH:
        assert ran(calls) == (set() if "activation" in config else {"fused"})
    else:
        assert ran(calls) == {"loop"}


def test_condition_with_recurrent_dropout_matches_keras_in_training():
    theirs, ours = twins(lambda cls: cls(UNITS, recurrent_dropout=0.5, seed=7, return_sequences=True),
                         input_shape=(None, STEPS, FEATURES + 3))
    expected = theirs(repeated(X, CONDITION))  # not training: no dropout, but the masks are drawn
    actual = ours(X, condition=CONDITION)
    np.testing.assert_allclose(ops.convert_to_numpy(actual), ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-5)
    assert_same(theirs, ours, [X, CONDITION], concat_call, condition_call, training=True)  # so the same masks here


def test_condition_with_a_mask_equals_keras_lstm_on_the_repeated_condition(calls):
    mask = np.arange(STEPS)[None, :] < np.array([[STEPS], [3], [1]])
    theirs, ours = twins(lambda cls: cls(UNITS, return_sequences=True), input_shape=(None, STEPS, FEATURES + 3))
    expected = theirs(repeated(X, CONDITION), mask=mask)
    actual = ours(X, condition=CONDITION, mask=mask)
    np.testing.assert_allclose(ops.convert_to_numpy(actual), ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-5)
    assert ran(calls) == (set() if TORCH else {"loop"})


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="XLA on TensorFlow (JAX always compiles)")
def test_trains_under_jit_compile():
    inputs, condition = keras.Input((STEPS, FEATURES)), keras.Input((3,))
    hidden = LSTM(UNITS, recurrent_dropout=0.5, return_sequences=True)(inputs)
    model = keras.Model([inputs, condition], LSTM(UNITS)(hidden, condition=condition))
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)  # XLA on TensorFlow
    model.train_on_batch([X, CONDITION], np.ones((BATCH, UNITS), "float32"))


def test_saved_model_round_trips_and_weights_load_into_keras_lstm(tmp_path):
    def build(cls):
        inputs, condition = keras.Input((STEPS, FEATURES)), keras.Input((3,))
        hidden = keras.layers.Bidirectional(cls(UNITS, return_sequences=True), name="encoder")(inputs)
        decoder = cls(UNITS, go_backwards=True, name="decoder")
        if cls is LSTM:
            outputs = decoder(hidden, condition=condition)
        else:
            outputs = decoder(repeated(hidden, condition))
        return keras.Model([inputs, condition], outputs)

    model = build(LSTM)
    expected = ops.convert_to_numpy(model([X, CONDITION]))
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert [type(layer) for layer in restored.layers] == [type(layer) for layer in model.layers]
    assert type(restored.get_layer("encoder").backward_layer) is LSTM and type(restored.get_layer("decoder")) is LSTM
    np.testing.assert_allclose(ops.convert_to_numpy(restored([X, CONDITION])), expected, rtol=1e-6)

    model.save_weights(tmp_path / "model.weights.h5")
    plain = build(keras.layers.LSTM)
    plain.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_allclose(ops.convert_to_numpy(plain([X, CONDITION])), expected, rtol=1e-5, atol=1e-5)


# The reference's layer-norm and hyper cells, against a float64 NumPy step written from the formulas.
# The cells compute in float32 (Keras 3.15 on torch computes ops.mean and ops.matmul of float64
# tensors in float32), so they match it to float32's precision.
TOLERANCE = {"rtol": 2e-5, "atol": 2e-6}

def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def np_layer_norm(v, gamma, beta, epsilon=1e-3):
    mean = v.mean(axis=-1, keepdims=True)
    var = ((v - mean) ** 2).mean(axis=-1, keepdims=True)
    return gamma * (v - mean) / np.sqrt(var + epsilon) + beta


def np_lstm_update(gates, c, w, mask):
    """Gates (i, j, f, o), each block layer-normalised with its own slice of gamma and beta."""
    units = c.shape[1]
    i, j, f, o = (np_layer_norm(gates[:, k * units:(k + 1) * units], w["gamma"][k * units:(k + 1) * units],
                                w["beta"][k * units:(k + 1) * units]) for k in range(4))
    c = c * sigmoid(f + 1.0) + sigmoid(i) * np.tanh(j) * mask
    return np.tanh(np_layer_norm(c, w["c_gamma"], w["c_beta"])) * sigmoid(o), c


def np_layer_norm_step(x, h, c, w, mask=1.0):
    return np_lstm_update(x @ w["kernel"] + h @ w["recurrent_kernel"], c, w, mask)


def np_hyper_step(x, h, c, hyper_h, hyper_c, w, mask=1.0):
    hyper_h, hyper_c = np_layer_norm_step(np.concatenate([x, h], axis=1), hyper_h, hyper_c, w["hyper"])
    size, units = w["scale"].shape[1:]

    def hyper_norm(layer, k, shift):
        code = hyper_h @ w["scale_embedding"][:, k * size:(k + 1) * size] + w["scale_embedding_bias"][k * size:(k + 1) * size]
        result = (code @ w["scale"][k]) * layer
        if shift is not None:
            result = result + (hyper_h @ w["shift_embedding"][:, shift * size:(shift + 1) * size]) @ w["shift"][shift]
        return result

    from_x, from_h = x @ w["kernel"], h @ w["recurrent_kernel"]
    gates = np.concatenate([
        hyper_norm(from_x[:, k * units:(k + 1) * units], k, None)
        + hyper_norm(from_h[:, k * units:(k + 1) * units], 4 + k, k)
        + w["bias"][k * units:(k + 1) * units]
        for k in range(4)
    ], axis=1)
    h, c = np_lstm_update(gates, c, w, mask)
    return h, c, hyper_h, hyper_c


def random_weights(cell, rng):
    """Every weight of `cell` (and of its hyper cell) set to random values; returned as NumPy by name."""
    def fill(layer):
        weights = {}
        for variable in layer._trainable_variables:
            value = rng.normal(scale=0.5, size=tuple(variable.shape))
            variable.assign(value)
            weights[variable.name] = value
        return weights

    weights = fill(cell)
    if isinstance(cell, recurrent.HyperLSTMCell):
        weights["hyper"] = fill(cell.hyper_cell)
    return weights


def make_cell(kind, **kwargs):
    cell = (recurrent.LayerNormLSTMCell(UNITS, **kwargs) if kind == "layer_norm" else
            recurrent.HyperLSTMCell(UNITS, hyper_units=4, embedding_size=3, **kwargs))
    cell.build((None, FEATURES))
    return cell


def np_step(kind, x, states, weights, mask=1.0):
    step = np_layer_norm_step if kind == "layer_norm" else np_hyper_step
    return step(x, *states, weights, mask=mask)


@pytest.mark.parametrize("kind", ["layer_norm", "hyper"])
def test_cell_step_matches_a_float64_numpy_reference(kind):
    rng = np.random.default_rng(5)
    cell = make_cell(kind)
    weights = random_weights(cell, rng)
    x = rng.normal(size=(BATCH, FEATURES))
    states = [rng.normal(size=(BATCH, size)) for size in cell.state_size]
    output, new_states = cell(x.astype("float32"), [s.astype("float32") for s in states])
    expected = np_step(kind, x, states, weights)
    np.testing.assert_allclose(ops.convert_to_numpy(output), expected[0], **TOLERANCE)
    assert len(new_states) == len(expected) == len(cell.state_size)
    for got, want in zip(new_states, expected):
        np.testing.assert_allclose(ops.convert_to_numpy(got), want, **TOLERANCE)


@pytest.mark.parametrize("kind", ["layer_norm", "hyper"])
def test_recurrent_dropout_drops_the_candidate_with_one_mask_a_sequence_while_training(kind):
    rng = np.random.default_rng(6)
    cell = make_cell(kind, recurrent_dropout=0.5, seed=1)
    weights = random_weights(cell, rng)
    masks = []
    create = cell._create_dropout_mask

    def recording(step_input, rate):
        masks.append(create(step_input, rate))
        return masks[-1]

    cell._create_dropout_mask = recording
    layer = keras.layers.RNN(cell, return_sequences=True)
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    trained = ops.convert_to_numpy(layer(x.astype("float32"), training=True))
    assert len(masks) == 1  # drawn once, before the loop
    mask = ops.convert_to_numpy(masks[0])
    assert set(np.unique(mask)) == {0.0, 2.0}

    def np_sequence(mask):
        states, outputs = [np.zeros((BATCH, size)) for size in cell.state_size], []
        for t in range(STEPS):
            states = np_step(kind, x[:, t], states, weights, mask)
            outputs.append(states[0])
        return np.stack(outputs, axis=1)

    np.testing.assert_allclose(trained, np_sequence(mask), **TOLERANCE)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x.astype("float32"))), np_sequence(1.0), **TOLERANCE)


@pytest.mark.parametrize("kind", ["layer_norm", "hyper"])
def test_cell_models_train_and_round_trip_through_keras_files(kind, tmp_path):
    cell = (recurrent.LayerNormLSTMCell(UNITS, recurrent_dropout=0.2) if kind == "layer_norm" else
            recurrent.HyperLSTMCell(UNITS, hyper_units=4, embedding_size=3, recurrent_dropout=0.2))
    inputs = keras.Input((STEPS, FEATURES))
    model = keras.Model(inputs, keras.layers.RNN(cell, return_sequences=True, name="rnn")(inputs))
    model.compile(optimizer="adam", loss="mse")
    before = [ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    model.fit(X, np.ones((BATCH, STEPS, UNITS), "float32"), epochs=2, verbose=0)
    assert all(not np.array_equal(ops.convert_to_numpy(w), b) for w, b in zip(model.trainable_weights, before))
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    restored_cell = restored.get_layer("rnn").cell
    assert type(restored_cell) is type(cell) and restored_cell.get_config() == cell.get_config()
    np.testing.assert_allclose(ops.convert_to_numpy(restored(X)), ops.convert_to_numpy(model(X)), rtol=1e-6)


def test_bad_recurrent_dropout_is_a_clear_error():
    with pytest.raises(ValueError, match=r"recurrent_dropout is a drop probability in \[0, 1\), got 1.5"):
        recurrent.LayerNormLSTMCell(4, recurrent_dropout=1.5)
