"""lw.diagnostics.gradients: per-term gradient norms and cosines, against the backend's autodiff."""

import keras
import numpy as np
import pytest
from keras import ops

import lossweave as lw

WEIGHT = 0.3


def tapped_model():
    """`lw.Model` with a tap, and a plain Keras twin sharing its layers that outputs the tap."""
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    outputs = keras.layers.Dense(2)(hidden)
    return lw.Model(inputs, outputs, taps={"hidden": hidden}), keras.Model(inputs, [outputs, hidden])


def objective():
    return lw.Objective({
        "mse": "mean_squared_error",
        "activity": lw.Term(lambda hidden: ops.mean(ops.square(hidden - 0.2)), weight=WEIGHT),
    })


def independent_terms(y):
    """The weighted terms from the twin's outputs, written out by hand."""
    return {
        "mse": lambda outputs, hidden: ops.mean(ops.square(outputs - y)),
        "activity": lambda outputs, hidden: WEIGHT * ops.mean(ops.square(hidden - 0.2)),
    }


def backend_gradients(twin, x, fn):
    """The gradient of `fn(*twin(x))` w.r.t. the twin's trainable variables, by the backend."""
    backend = keras.backend.backend()
    variables = twin.trainable_variables
    if backend == "jax":
        import jax

        non_trainable = [v.value for v in twin.non_trainable_variables]

        def value(trainable):
            outputs, _ = twin.stateless_call(trainable, non_trainable, x)
            return fn(*outputs)

        return [np.asarray(g) for g in jax.grad(value)([v.value for v in variables])]
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            result = fn(*twin(x))
        return filled(tape.gradient(result, variables), variables)
    import torch

    result = fn(*twin(ops.convert_to_tensor(x)))
    grads = torch.autograd.grad(result, [v.value for v in variables], allow_unused=True)
    return filled([None if g is None else g.detach() for g in grads], variables)


def filled(grads, variables):
    """numpy gradients, zeros where the backend says None (a variable the term does not reach)."""
    return [np.zeros(v.shape) if g is None else np.asarray(g) for g, v in zip(grads, variables)]


def expected(twin, x, y):
    """`{name_grad_norm, name_grad_cos}` computed independently on one batch."""
    terms = independent_terms(ops.convert_to_tensor(y))
    grads = {name: np.concatenate([g.ravel() for g in backend_gradients(twin, x, fn)])
             for name, fn in terms.items()}
    total = sum(grads.values())
    logs = {}
    for name, g in grads.items():
        logs[f"{name}_grad_norm"] = np.linalg.norm(g)
        logs[f"{name}_grad_cos"] = g @ total / (np.linalg.norm(g) * np.linalg.norm(total))
    return logs


def data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype("float32"), rng.normal(size=(n, 2)).astype("float32")


def test_logged_norms_and_cosines_equal_the_backends_autodiff():
    model, twin = tapped_model()
    x, y = data()
    want = expected(twin, x, y)  # the weights before the step; lr 0 keeps them
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=objective(),
                  diagnostics=lw.diagnostics.gradients(every=1))
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    assert set(want) < set(history)
    for name, value in want.items():
        np.testing.assert_allclose(history[name][0], value, rtol=1e-4, err_msg=name)
    assert min(want["mse_grad_cos"], want["activity_grad_cos"]) < 0.99  # not a trivial cosine


def test_every_n_measures_those_steps_and_holds_the_last_value():
    model, twin = tapped_model()
    x, y = data(n=16)
    batches = [expected(twin, x[i:i + 4], y[i:i + 4]) for i in range(0, 16, 4)]
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=objective(),
                  diagnostics=lw.diagnostics.gradients(every=3))
    history = model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0).history
    # Steps 0..11, four a epoch; measured at 0, 3 (epoch 0), 6 (epoch 1), 9 (epoch 2): batches
    # 0 and 3, then 2, then 1.
    measured = [[0, 3], [2], [1]]
    for name in batches[0]:
        want = [np.mean([batches[b][name] for b in epoch]) for epoch in measured]
        np.testing.assert_allclose(history[name], want, rtol=1e-4, err_msg=name)


def test_an_epoch_without_a_measured_step_shows_the_last_one():
    model, twin = tapped_model()
    x, y = data(n=16)
    first = expected(twin, x[:4], y[:4])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=objective(),
                  diagnostics=lw.diagnostics.gradients(every=100))
    history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history
    for name, value in first.items():
        np.testing.assert_allclose(history[name], [value, value], rtol=1e-4, err_msg=name)


def test_diagnostics_are_logged_in_training_not_in_evaluation():
    model, _ = tapped_model()
    x, y = data(n=16)
    model.compile(optimizer="sgd", loss=objective(), diagnostics=lw.diagnostics.gradients(every=1))
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, validation_data=(x, y)).history
    grads = {"mse_grad_norm", "mse_grad_cos", "activity_grad_norm", "activity_grad_cos"}
    assert grads <= set(history)
    assert {"val_loss", "val_mse", "val_activity"} <= set(history)
    assert not [key for key in history if key.startswith("val_") and "_grad_" in key]
    evaluation = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    assert set(evaluation) == {"loss", "mse", "activity"}
    assert grads <= set(model.fit(x, y, batch_size=4, epochs=1, verbose=0).history)


def test_training_with_diagnostics_equals_training_without():
    x, y = data(n=16)
    results = []
    for diagnostics in (None, lw.diagnostics.gradients(every=2)):
        keras.utils.set_random_seed(1)
        model, _ = tapped_model()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=objective(),
                      diagnostics=diagnostics)
        history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history
        results.append((history["loss"], [w.numpy() if hasattr(w, "numpy") else w
                                          for w in model.get_weights()]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_diagnostics_need_an_objective_and_free_names():
    model, _ = tapped_model()
    with pytest.raises(ValueError, match="lw.Objective"):
        model.compile(loss="mse", diagnostics=lw.diagnostics.gradients())
    with pytest.raises(ValueError, match="mse_grad_norm"):
        model.compile(loss=lw.Objective({"mse": "mse", "mse_grad_norm": "mae"}),
                      diagnostics=lw.diagnostics.gradients())
    with pytest.raises(ValueError, match="positive integer"):
        lw.diagnostics.gradients(every=0)


def test_diagnostics_round_trip_in_the_compile_config(tmp_path):
    model, _ = tapped_model()
    model.compile(optimizer="sgd", loss=lw.Objective({"mse": "mse"}),
                  diagnostics=lw.diagnostics.gradients(every=7))
    x, y = data()
    model.fit(x, y, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded._lw.diagnostics.every == 7
    assert "mse_grad_cos" in loaded.fit(x, y, verbose=0).history
