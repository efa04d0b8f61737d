"""lw.Model: taps, one forward pass, per-term logging, scheduled weights, saving, errors."""

import keras
import numpy as np
import pytest
from keras import ops

import lossweave as lw

JIT = [pytest.param("auto", id="jit-auto"), pytest.param(True, id="jit-true")]
# torch.compile of a train step takes ~50 s on 2 CPU cores: one jit_compile=True test on torch
# (the schedule test, which a trace-time value would fail), both on the other backends.
JIT_BUT_TORCH = [
    JIT[0],
    pytest.param(True, id="jit-true", marks=pytest.mark.skipif(
        keras.backend.backend() == "torch", reason="torch.compile costs ~50 s; see JIT")),
]


@keras.saving.register_keras_serializable(package="lossweave_tests")
def activity(layer1):
    return ops.mean(ops.square(layer1), axis=-1)


def penalty_model(units=8, features=12, classes=3):
    inputs = keras.Input((features,))
    layer1 = keras.layers.Dense(units, activation="relu", name="layer1")(inputs)
    probs = keras.layers.Dense(classes, activation="softmax", name="probs")(layer1)
    return lw.Model(inputs, probs, taps={"layer1": layer1})


def data(n=16, features=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, classes, n), classes).astype("float32")
    return x, y


def objective(weight):
    return lw.Objective({"mse": "mean_squared_error", "activity": lw.Term(activity, weight=weight)})


def probes(**functions):
    """MSE plus terms of weight 0 that log what they are injected with (`name=function`)."""
    terms = {name: lw.Term(function, weight=0.0) for name, function in functions.items()}
    return lw.Objective({"mse": "mean_squared_error", **terms})


def test_outputs_are_the_declared_ones():
    model = penalty_model()
    x, _ = data()
    assert tuple(model(x).shape) == (16, 3)
    assert model.predict(x, verbose=0).shape == (16, 3)
    assert model.output_names == ["probs"]
    assert model.tap_names == ("layer1",)


@pytest.mark.parametrize("jit_compile", JIT_BUT_TORCH)
def test_logged_terms_equal_independent_computation(jit_compile):
    model = penalty_model()
    schedule = lw.schedules.linear(0.5, 1.5, steps=4)
    model.compile(optimizer="sgd", loss=objective(schedule), jit_compile=jit_compile)
    probe = keras.Model(model.inputs, [model.get_layer("probs").output, model.get_layer("layer1").output])
    x, y = data()
    for step in range(3):
        probs, layer1 = (np.asarray(t) for t in probe.predict(x, verbose=0))
        expected_mse = np.mean((probs - y) ** 2)
        expected_activity = np.mean(layer1**2)
        logs = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
        np.testing.assert_allclose(logs["mse"][0], expected_mse, rtol=1e-5)
        np.testing.assert_allclose(logs["activity"][0], expected_activity, rtol=1e-5)
        weight = logs["activity_weight"][0]
        np.testing.assert_allclose(weight, float(schedule(step)), rtol=1e-6)
        np.testing.assert_allclose(
            logs["loss"][0], logs["mse"][0] + weight * logs["activity"][0], rtol=1e-5
        )


@pytest.mark.parametrize("jit_compile", JIT)
def test_weight_follows_schedule_every_step(jit_compile):
    model = penalty_model()
    schedule = lw.schedules.cosine(1.0, 0.0, steps=5)
    model.compile(optimizer="sgd", loss=objective(schedule), jit_compile=jit_compile)
    x, y = data()
    history = model.fit(x, y, batch_size=16, epochs=6, verbose=0).history
    expected = [float(schedule(s)) for s in range(6)]
    np.testing.assert_allclose(history["activity_weight"], expected, rtol=1e-5, atol=1e-7)
    assert int(model.step.value) == 6
    # train_on_batch advances the same counter (no value frozen at trace time).
    for s in range(6, 9):
        logs = model.train_on_batch(x, y, return_dict=True)
        np.testing.assert_allclose(logs["activity_weight"], float(schedule(s)), atol=1e-6)


def test_evaluation_does_not_advance_the_step():
    model = penalty_model()
    model.compile(optimizer="sgd", loss=objective(lw.schedules.linear(0.0, 1.0, steps=10)))
    x, y = data()
    history = model.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), verbose=0).history
    assert int(model.step.value) == 4
    np.testing.assert_allclose(history["val_activity_weight"], [0.2, 0.4], rtol=1e-5)
    assert "val_mse" in history and "val_activity" in history
    model.evaluate(x, y, verbose=0)
    assert int(model.step.value) == 4


def test_epoch_and_step_are_injectable():
    model = penalty_model()
    model.compile(
        optimizer="sgd",
        loss=probes(
            epoch_seen=lambda epoch: ops.cast(epoch, "float32"),
            step_seen=lambda step: ops.cast(step, "float32"),
        ),
    )
    x, y = data()
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0).history
    assert history["epoch_seen"] == pytest.approx([0.0, 1.0, 2.0])
    assert history["step_seen"] == pytest.approx([0.5, 2.5, 4.5])  # mean of steps (0,1), (2,3), (4,5)


def test_training_is_injected_true_in_fit_and_false_in_evaluation():
    model = penalty_model()
    model.compile(
        optimizer="sgd",
        loss=probes(training_seen=lambda training: 1.0 if training else 0.0),
        metrics=[lw.metric(lambda training: 2.0 if training else 3.0, name="metric_training")],
    )
    x, y = data()
    history = model.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), verbose=0).history
    assert (history["training_seen"], history["val_training_seen"]) == ([1.0], [0.0])
    assert (history["metric_training"], history["val_metric_training"]) == ([2.0], [3.0])
    assert model.evaluate(x, y, verbose=0, return_dict=True)["training_seen"] == 0.0


def test_sample_weight_is_honoured_like_keras():
    x, y = data()
    sw = np.linspace(0.0, 2.0, len(x)).astype("float32")
    model = penalty_model()
    model.compile(optimizer="sgd", loss=lw.Objective({"mse": "mean_squared_error"}))
    reference = keras.Model(model.inputs, model.outputs[0])
    reference.compile(optimizer="sgd", loss="mean_squared_error")
    ours = model.evaluate(x, y, sample_weight=sw, batch_size=16, verbose=0, return_dict=True)
    theirs = reference.evaluate(x, y, sample_weight=sw, batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_allclose(ours["mse"], theirs["loss"], rtol=1e-6)
    np.testing.assert_allclose(ours["loss"], theirs["loss"], rtol=1e-6)


def test_multi_output_dict_with_output_selection():
    inputs = keras.Input((12,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = {
        "a": keras.layers.Dense(2, name="a")(hidden),
        "b": keras.layers.Dense(1, activation="sigmoid", name="b")(hidden),
    }
    model = lw.Model(inputs, outputs, taps={"hidden": hidden})
    model.compile(
        optimizer="adam",
        loss=lw.Objective({
            "a_mse": lw.Term("mean_squared_error", output="a"),
            "b_bce": lw.Term(keras.losses.BinaryCrossentropy(), output="b", weight=0.5),
        }),
        metrics={"b": ["accuracy"]},
    )
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 12)).astype("float32")
    y = {"a": rng.normal(size=(16, 2)).astype("float32"),
         "b": rng.integers(0, 2, (16, 1)).astype("float32")}
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    assert {"a_mse", "b_bce", "loss"} <= set(history)
    predictions = model.predict(x, verbose=0)
    assert set(predictions) == {"a", "b"}
    np.testing.assert_allclose(
        history["loss"], np.array(history["a_mse"]) + 0.5 * np.array(history["b_bce"]), rtol=1e-5
    )


def test_multi_output_list():
    inputs = keras.Input((12,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = lw.Model(inputs, [keras.layers.Dense(2)(hidden), keras.layers.Dense(3)(hidden)],
                     taps={"hidden": hidden})
    model.compile(optimizer="adam", loss=lw.Objective({
        "first": lw.Term("mse", output=0), "second": lw.Term("mae", output=1)}))
    x = np.ones((8, 12), "float32")
    model.fit(x, [np.zeros((8, 2), "float32"), np.zeros((8, 3), "float32")], epochs=1, verbose=0)
    first, second = model.predict(x, verbose=0)
    assert first.shape == (8, 2) and second.shape == (8, 3)


def test_save_load_continues_schedule(tmp_path):
    schedule = lw.schedules.linear(0.0, 1.0, steps=10)
    model = penalty_model()
    model.compile(optimizer="adam", loss=objective(schedule), metrics=["accuracy"])
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, lw.Model) and loaded.compiled
    assert int(loaded.step.value) == 3
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    history = loaded.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    np.testing.assert_allclose(history["activity_weight"], [0.3, 0.4], rtol=1e-5)
    assert history["activity"][0] > 0 and "accuracy" in history


def test_unknown_name_fails_at_compile_listing_available_names():
    model = penalty_model()
    with pytest.raises(ValueError, match=r"asks for 'layer2'.*Available names: y_true, y_pred, "
                                         r"x, sample_weight, mask, step, epoch, training, layer1"):
        model.compile(loss=lw.Objective({"bad": lambda layer2: ops.mean(layer2)}))


def test_wrong_shape_fails_naming_the_term():
    model = penalty_model()
    model.compile(
        optimizer="sgd",
        loss=lw.Objective({"per_unit": lambda layer1: ops.mean(layer1, axis=0)}),  # shape (8,)
    )
    x, y = data()
    with pytest.raises(ValueError, match=r"term 'per_unit' returned shape \(8,\)"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)


@pytest.mark.parametrize("name", ["loss", "accuracy"])
def test_names_colliding_with_keras_logs_fail(name):
    model = penalty_model()
    with pytest.raises(ValueError, match=f"'{name}' collides"):
        model.compile(loss=lw.Objective({name: "mse"}), metrics=["accuracy"])


def test_bad_tap_name_fails():
    inputs = keras.Input((3,))
    with pytest.raises(ValueError, match="Tap name 'y_pred'"):
        lw.Model(inputs, keras.layers.Dense(1)(inputs), taps={"y_pred": inputs})


def test_plain_keras_loss_still_works():
    model = penalty_model()
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    x, y = data()
    history = model.fit(x, y, epochs=1, verbose=0).history
    assert set(history) == {"loss", "accuracy"}


def test_regularization_losses_are_added():
    inputs = keras.Input((12,))
    layer1 = keras.layers.Dense(8, kernel_regularizer=keras.regularizers.L2(1.0))(inputs)
    model = lw.Model(inputs, layer1, taps={"layer1": layer1})
    model.compile(optimizer="sgd", loss=lw.Objective({"mse": "mse"}))
    x = np.ones((4, 12), "float32")
    logs = model.evaluate(x, np.zeros((4, 8), "float32"), verbose=0, return_dict=True)
    kernel = np.asarray(model.layers[1].kernel)
    np.testing.assert_allclose(logs["loss"], logs["mse"] + np.sum(kernel**2), rtol=1e-5)


def test_tensorboard_gets_every_term(tmp_path):
    tf = pytest.importorskip("tensorflow")  # the TensorBoard callback writes through tf.summary
    model = penalty_model()
    model.compile(optimizer="sgd", loss=objective(lw.schedules.linear(0.0, 1.0, steps=4)))
    x, y = data()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[keras.callbacks.TensorBoard(str(tmp_path))])
    tags = set()
    for event_file in (tmp_path / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(value.tag for value in event.summary.value)
    assert {"epoch_loss", "epoch_mse", "epoch_activity", "epoch_activity_weight"} <= tags


def nan_at_step_5(y_pred, step):
    bad = ops.where(ops.equal(step, 5), float("nan"), 0.0)
    return ops.mean(y_pred) * 0.0 + bad


def test_nan_term_stops_training_naming_term_and_step(tmp_path):
    model = penalty_model()
    model.compile(optimizer="sgd", loss=lw.Objective({"mse": "mse", "fragile": nan_at_step_5}))
    x, y = data()
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt_{epoch}.weights.h5"),
                                                 save_weights_only=True, save_freq=1)
    with pytest.raises(lw.NonFiniteTermError, match=r"training step 5: term 'fragile' is NaN"):
        model.fit(x, y, batch_size=16, epochs=10, verbose=0, callbacks=[checkpoint])
    saved = sorted(int(p.name.split("_")[1].split(".")[0]) for p in tmp_path.glob("ckpt_*"))
    assert saved == [1, 2, 3, 4, 5]  # epochs 1..5 are steps 0..4; nothing after the NaN


def test_nan_check_can_be_disabled():
    model = penalty_model()
    model.compile(optimizer="sgd", check_finite=False,
                  loss=lw.Objective({"mse": "mse", "fragile": nan_at_step_5}))
    x, y = data()
    history = model.fit(x, y, batch_size=16, epochs=7, verbose=0).history
    assert np.isnan(history["fragile"][5]) and np.isfinite(history["fragile"][4])


def test_nan_guard_without_other_callbacks():
    # No synchronous callback: on JAX Keras dispatches batch callbacks asynchronously.
    model = penalty_model()
    model.compile(optimizer="sgd", loss=lw.Objective({"mse": "mse", "fragile": nan_at_step_5}))
    x, y = data()
    with pytest.raises(lw.NonFiniteTermError, match=r"training step 5: term 'fragile' is NaN"):
        model.fit(x, y, batch_size=4, epochs=3, verbose=0)  # 4 steps an epoch: step 5 in epoch 2


def test_metrics_see_the_step_the_batch_trained_at():
    model = penalty_model()
    model.compile(optimizer="sgd", loss=objective(0.1),
                  metrics=[lw.metric(lambda step: ops.cast(step, "float32"), name="seen_step",
                                     aggregation="max")])
    x, y = data(24)
    assert model.fit(x, y, batch_size=8, epochs=1, verbose=0).history["seen_step"] == [2.0]


def test_step_advances_with_a_plain_keras_loss():
    model = penalty_model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = data(24)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert int(model.step.value) == 6


def masked_sequence_model(units, activation):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((7,), dtype="int32")
    hidden = keras.layers.Embedding(20, 8, mask_zero=True)(inputs)
    hidden = keras.layers.LSTM(8, return_sequences=True)(hidden)
    return inputs, keras.layers.Dense(units, activation=activation)(hidden)


MASKED_CASES = {
    "mse": (3, None, lambda rng: rng.normal(size=(16, 7, 3)).astype("float32")),
    "binary_crossentropy": (1, "sigmoid", lambda rng: rng.integers(0, 2, (16, 7, 1)).astype("float32")),
    "sparse_categorical_crossentropy": (5, "softmax", lambda rng: rng.integers(0, 5, (16, 7))),
}


@pytest.mark.parametrize("loss", MASKED_CASES)
def test_masked_terms_equal_keras_compile_loss(loss):
    units, activation, targets = MASKED_CASES[loss]
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 20, (16, 7))
    tokens[:, 5:] = 0
    tokens[::3, 2:] = 0  # padding: the Embedding's mask hides it from the loss
    y = targets(rng)
    keras_model = keras.Model(*masked_sequence_model(units, activation))
    keras_model.compile(loss=loss)
    model = lw.Model(*masked_sequence_model(units, activation))
    model.compile(loss=lw.Objective({
        "by_name": loss,
        "by_function": lw.Term(keras.losses.get(loss), weight=0.0),  # a plain function of the output
    }))
    sample_weight = np.tile(np.linspace(0.0, 1.0, 16, dtype="float32")[:, None], (1, 7))
    for weights in (None, sample_weight):
        theirs = keras_model.evaluate(tokens, y, sample_weight=weights, batch_size=16, verbose=0)
        ours = model.evaluate(tokens, y, sample_weight=weights, batch_size=16, verbose=0,
                              return_dict=True)
        np.testing.assert_allclose(ours["by_name"], theirs, rtol=1e-6)
        np.testing.assert_allclose(ours["by_function"], theirs, rtol=1e-5)
    unmasked = np.where(tokens == 0, 1, tokens)
    assert model.evaluate(unmasked, y, verbose=0, return_dict=True)["by_name"] != pytest.approx(
        ours["by_name"])  # the mask matters on this data


@pytest.mark.parametrize("monitor", ["activity", "val_mse", "val_mean_pred", "accuracy"])
def test_keras_callbacks_in_mode_auto_know_which_way_is_better(monitor, tmp_path):
    model = penalty_model()
    model.compile(optimizer="sgd", loss=objective(lw.schedules.linear(0.0, 1.0, steps=4)),
                  metrics=["accuracy", lw.metric(lambda y_pred: ops.max(y_pred, axis=-1),
                                                 name="mean_pred", direction="up")])
    x, y = data()
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=1),
        keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor=monitor,
                                        save_best_only=True),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, patience=1),
    ]
    model.fit(x, y, epochs=2, validation_data=(x, y), callbacks=callbacks, verbose=0)
    stop, checkpoint, _ = callbacks
    up = monitor in ("val_mean_pred", "accuracy")
    assert stop.monitor_op is (ops.greater if up else ops.less)
    assert checkpoint.monitor_op is (ops.greater if up else ops.less)
    assert (tmp_path / "best.keras").exists()


def test_metric_direction_must_be_up_or_down():
    with pytest.raises(ValueError, match="direction must be 'down'"):
        lw.metric(lambda y_pred: y_pred, name="m", direction="max")


def test_clone_model_keeps_taps_and_compiles_alike():
    model = penalty_model()
    model.compile(optimizer="sgd", loss=objective(0.5))
    clone = keras.models.clone_model(model)
    assert isinstance(clone, lw.Model) and clone.tap_names == ("layer1",)
    assert len(clone.outputs) == 1
    clone.set_weights(model.get_weights())
    x, y = data()
    ours = model.evaluate(x, y, verbose=0, return_dict=True)
    theirs = clone.evaluate(x, y, verbose=0, return_dict=True)
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_compiling_again_leaves_no_stale_logs():
    inputs = keras.Input((12,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = lw.Model(inputs, {"a": keras.layers.Dense(2, name="a")(hidden),
                              "b": keras.layers.Dense(1, name="b")(hidden)}, taps={"hidden": hidden})
    x = np.ones((8, 12), "float32")
    y = {"a": np.zeros((8, 2), "float32"), "b": np.zeros((8, 1), "float32")}
    model.compile(optimizer="sgd", loss={"a": "mse", "b": "mae"})
    first = model.fit(x, y, epochs=1, verbose=0).history
    assert {"a_loss", "b_loss"} <= set(first)
    model.compile(optimizer="sgd", loss=lw.Objective({"a_mse": lw.Term("mse", output="a")}))
    assert set(model.fit(x, y, epochs=1, verbose=0).history) == {"loss", "a_mse"}
    model.compile(optimizer="sgd", loss=lw.Objective({"b_mae": lw.Term("mae", output="b")}))
    assert set(model.fit(x, y, epochs=1, verbose=0).history) == {"loss", "b_mae"}


def test_one_objective_shared_by_two_models_keeps_their_logs_apart():
    shared = objective(0.5)
    first, second = penalty_model(), penalty_model()
    first.compile(optimizer="sgd", loss=shared)
    second.compile(optimizer="sgd", loss=shared)
    x, y = data()
    first_logs = first.evaluate(x, y, verbose=0, return_dict=True)
    second_logs = second.evaluate(x * 10, y, verbose=0, return_dict=True)
    assert first.evaluate(x, y, verbose=0, return_dict=True) == pytest.approx(first_logs)
    assert first_logs["activity"] != pytest.approx(second_logs["activity"])


def test_the_guard_checks_batches_in_the_order_they_began_and_keeps_the_first_error():
    import threading

    from lossweave.guard import _InOrder

    order, seen, raised = _InOrder(), [], {}
    for batch in range(3):
        order.begin(batch)

    def check(batch):
        seen.append(batch)
        if batch >= 1:
            raise lw.NonFiniteTermError(f"step {batch}")

    def end(batch):
        try:
            order.end(batch, lambda: check(batch))
        except lw.NonFiniteTermError as error:
            raised[batch] = str(error)

    threads = [threading.Thread(target=end, args=(batch,)) for batch in (2, 1, 0)]
    for thread in threads:  # started latest first, as a thread pool may run them
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert seen == [0, 1]  # in order; after the first error there is nothing left to check
    assert raised == {1: "step 1", 2: "step 1"}
