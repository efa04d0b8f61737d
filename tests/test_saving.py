"""Saving: .keras round trips of lw.Model with objectives and metrics, and of each serializable."""

import inspect
import json

import keras
import numpy as np
import pytest
from keras import ops

import lossweave as lw
from lossweave.metrics import ComposedMetric, InjectedMetric, metric
from lossweave.serialization import deserialize_function, serialize_function


@keras.saving.register_keras_serializable(package="lossweave_test_saving")
def activity(hidden):
    return ops.mean(ops.square(hidden), axis=-1)


@keras.saving.register_keras_serializable(package="lossweave_test_saving")
def mean_hidden(hidden):
    return ops.mean(hidden, axis=-1)


@keras.saving.register_keras_serializable(package="lossweave_test_saving")
def true_positive(y_true, y_pred):
    return y_true * ops.cast(y_pred > 0.5, "float32")


@keras.saving.register_keras_serializable(package="lossweave_test_saving")
def predicted_positive(y_pred):
    return ops.cast(y_pred > 0.5, "float32")


def _model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="relu")(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(hidden)
    return lw.Model(inputs, outputs, taps={"hidden": hidden})


def _data(n=24):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (rng.random((n, 1)) < 0.5).astype("float32")


def _same_logs(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7, err_msg=name)


# -- .keras files ----------------------------------------------------------------------------------


def test_keras_file_round_trip_continues_the_schedule(tmp_path):
    schedule = lw.schedules.linear(0.0, 1.0, steps=20)
    tp = metric(true_positive, name="tp", aggregation="sum")
    pp = metric(predicted_positive, name="pp", aggregation="sum")
    model = _model()
    model.compile(
        optimizer="adam",
        loss=lw.Objective({
            "bce": "binary_crossentropy",
            "activity": lw.Term(activity, weight=schedule),
        }),
        metrics=["accuracy", metric(mean_hidden, name="mean_hidden"), (tp / pp).named("precision")],
    )
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 3 steps
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)

    assert isinstance(loaded, lw.Model) and loaded.compiled
    assert int(ops.convert_to_numpy(loaded.step)) == 3
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    logs = loaded.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    _same_logs(logs, model.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True))
    assert {"bce", "activity", "accuracy", "mean_hidden", "precision"} <= set(logs)

    history = loaded.fit(x, y, batch_size=len(x), epochs=1, verbose=0)  # one step, at step 3
    np.testing.assert_allclose(history.history["activity_weight"][0], float(schedule(3)), rtol=1e-6)
    assert int(ops.convert_to_numpy(loaded.step)) == 4


def test_lambdas_load_only_in_unsafe_mode(tmp_path):
    model = _model()
    model.compile(
        optimizer="sgd",
        loss=lw.Objective({
            "bce": "binary_crossentropy",
            "activity": lw.Term(lambda hidden: ops.mean(ops.square(hidden)), weight=0.1),
        }),
        metrics=[metric(lambda hidden: ops.max(hidden), name="max_hidden", aggregation="max")],
    )
    x, y = _data()
    expected = model.evaluate(x, y, verbose=0, return_dict=True)
    path = tmp_path / "lambdas.keras"
    with pytest.warns(UserWarning, match="lambda"):
        model.save(path)

    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.load_model(path)
    loaded = keras.saving.load_model(path, safe_mode=False)  # the lambdas still find `ops`
    _same_logs(loaded.evaluate(x, y, verbose=0, return_dict=True), expected)


def test_unregistered_local_functions_fail_at_save(tmp_path):
    def local_penalty(hidden):
        return ops.mean(hidden)

    def local_metric(y_pred):
        return y_pred

    for loss, metrics, name in [
        (lw.Objective({"penalty": local_penalty}), [], "local_penalty"),
        ("mse", [metric(local_metric, name="local")], "local_metric"),
    ]:
        model = _model()
        model.compile(optimizer="sgd", loss=loss, metrics=metrics)
        with pytest.raises(ValueError, match=f"{name}.*register_keras_serializable"):
            model.save(tmp_path / "local.keras")


# -- each serializable -----------------------------------------------------------------------------


def _round_trip(obj, safe_mode=True):
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(obj)))
    return keras.saving.deserialize_keras_object(config, safe_mode=safe_mode)


SCHEDULES = [
    lw.schedules.constant(0.5),
    lw.schedules.linear(0.0, 1.0, steps=10, begin=2),
    lw.schedules.cosine(1.0, 0.1, steps=10),
    lw.schedules.sigmoid(0.0, 1.0, midpoint=5, width=2),
    lw.schedules.cyclical(0.0, 1.0, period=6, ratio=0.5),
    lw.schedules.exponential_approach(0.01, 0.5, decay=0.9),
    lw.schedules.piecewise([3, 8], [0.0, lw.schedules.linear(0.0, 1.0, steps=5), 1.0]),
    lw.schedules.epochwise(lw.schedules.cosine(1.0, 0.0, steps=4), steps_per_epoch=3),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_schedules_round_trip(schedule):
    restored = _round_trip(schedule)
    assert type(restored) is type(schedule) and restored is not schedule
    steps = [0, 1, 3, 7, 12, 100]
    assert [float(restored(s)) for s in steps] == [float(schedule(s)) for s in steps]


def _step_tensors():
    rng = np.random.default_rng(3)
    return {
        "y_true": ops.convert_to_tensor((rng.random((5, 1)) < 0.5).astype("float32")),
        "y_pred": ops.convert_to_tensor(rng.random((5, 1)).astype("float32")),
        "hidden": ops.convert_to_tensor(rng.normal(size=(5, 3)).astype("float32")),
        "sample_weight": ops.convert_to_tensor(rng.random(5).astype("float32")),
        "mask": None,
        "step": ops.convert_to_tensor(4),
    }


def test_term_and_objective_round_trip():
    available = ["y_true", "y_pred", "sample_weight", "mask", "step", "hidden"]
    term = lw.Term(
        lw.losses.activation_penalty,
        weight=lw.schedules.linear(0.0, 1.0, steps=8),
        bind={"activation": "hidden"},
        reduction="sum",
        kind="l1",
    )
    restored = _round_trip(term)
    assert restored.get_config() == term.get_config()
    for t in (term, restored):
        t.resolve("act", available)
    tensors = _step_tensors()
    assert float(restored.value(tensors)) == float(term.value(tensors))

    objective = lw.Objective({"bce": "binary_crossentropy", "act": term})
    restored = _round_trip(objective)
    assert list(restored.terms) == ["bce", "act"]
    for o in (objective, restored):
        o.build(available)
    assert float(restored.compute(tensors)[0]) == float(objective.compute(tensors)[0])


def _ready_terms():
    return [
        fn
        for _, fn in inspect.getmembers(lw.losses, inspect.isfunction)
        if fn.__module__.startswith("lossweave.losses")
    ]


def test_ready_terms_round_trip_by_name():
    terms = _ready_terms()
    assert terms, "lossweave.losses exports no functions"
    for fn in terms:
        config = serialize_function(fn, owner=f"term {fn.__name__!r}")
        assert fn.__name__ in json.dumps(config) and "lambda" not in json.dumps(config)
        assert deserialize_function(json.loads(json.dumps(config)), owner="test") is fn
        assert _round_trip(lw.Term(fn)).fn is fn


@pytest.mark.filterwarnings("ignore:The object being serialized includes a `lambda`")
def test_metrics_round_trip():
    tp = metric(true_positive, name="tp", aggregation="sum")
    pp = metric(predicted_positive, name="pp", aggregation="sum")
    scaled = metric(
        lambda a, scale: a * scale, name="scaled", bind={"a": "y_pred"}, output=None, scale=2.0
    )
    precision = (tp / pp).named("precision")
    originals = [tp, precision, 1 - 0.5 * precision, scaled]
    restored = [_round_trip(m, safe_mode=False) for m in originals]
    tensors = _step_tensors()
    for original, copy in zip(originals, restored):
        assert type(copy) is type(original) and copy.name == original.name
        for m in (original, copy):
            m.update_state(tensors["y_true"], tensors["y_pred"], tensors["sample_weight"])
        assert float(copy.result()) == float(original.result())
    assert isinstance(restored[1], ComposedMetric) and len(restored[1].parts) == 2
    assert isinstance(restored[3], InjectedMetric) and restored[3].kwargs == {"scale": 2.0}
    with pytest.raises(ValueError, match="safe_mode"):
        _round_trip(scaled)
