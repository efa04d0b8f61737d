"""lw.metric: exact streaming aggregation, taps in lw.Model, plain keras.Model, arithmetic."""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import ops

import lossweave as lw
from lossweave.metrics import AGGREGATIONS, ComposedMetric, InjectedMetric, metric

PROPERTY = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# -- helpers ---------------------------------------------------------------------------------------


@st.composite
def datasets(draw):
    """`(rng, n, bounds)`: a seeded generator, a data size and random uneven batch bounds.

    Batch sizes come from a few values so that JAX's eager ops compile for few shapes.
    """
    sizes = draw(st.lists(st.sampled_from([1, 2, 5]), min_size=1, max_size=5))
    bounds = np.cumsum([0, *sizes]).tolist()
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng, bounds[-1], list(zip(bounds[:-1], bounds[1:]))


def _weights(rng, shape):
    """Random sample weights in {0, 0.5, 1, 2}, at least one not 0."""
    w = rng.choice(np.array([0.0, 0.5, 1.0, 2.0], "float32"), size=shape)
    w.flat[rng.integers(w.size)] = 1.0
    return w


def stream_update_state(m, bounds, y_true, y_pred, sample_weight):
    for start, stop in bounds:
        m.update_state(y_true[start:stop], y_pred[start:stop], sample_weight[start:stop])
    return float(m.result())


def stream_tensors(m, bounds, **arrays):
    m.resolve(["y_true", "y_pred", "x", "sample_weight", "mask", "step", "epoch"])
    for start, stop in bounds:
        m.update_from_tensors({k: ops.convert_to_tensor(v[start:stop]) for k, v in arrays.items()})
    return float(m.result())


def close(streamed, expected):
    np.testing.assert_allclose(streamed, expected, rtol=1e-5, atol=1e-6)


def squared_error(y_true, y_pred):
    return ops.square(y_pred - y_true)


# -- exact streaming: hypothesis properties ------------------------------------------------------


@PROPERTY
@given(datasets())
def test_mean_streams_exactly(data):
    rng, n, bounds = data
    k = 2
    y_true, y_pred = rng.normal(size=(2, n, k)).astype("float32")
    w = _weights(rng, (n,))
    m = metric(squared_error, name="mse")
    per_sample = ((y_pred.astype("f8") - y_true) ** 2).mean(axis=1)
    close(stream_update_state(m, bounds, y_true, y_pred, w), (per_sample * w).sum() / w.sum())


@PROPERTY
@given(datasets())
def test_mean_of_a_scalar_weights_each_batch_by_its_size(data):
    rng, n, bounds = data
    y_pred = rng.normal(size=(n, 2)).astype("float32")
    m = metric(lambda y_pred: ops.mean(y_pred), name="mean_pred")
    close(stream_update_state(m, bounds, y_pred, y_pred, np.ones(n, "float32")), y_pred.mean())


@PROPERTY
@given(datasets())
def test_masked_mean_is_the_mean_over_unmasked_elements(data):
    rng, n, bounds = data
    steps = 3
    y_true, y_pred = rng.normal(size=(2, n, steps)).astype("float32")
    mask = rng.random((n, steps)) < 0.6
    mask[rng.integers(n), rng.integers(steps)] = True
    w = _weights(rng, (n,))
    mask[w == 0] = False
    mask[np.argmax(w > 0), 0] = True
    m = metric(squared_error, name="masked_mse", aggregation="masked_mean")
    streamed = stream_tensors(m, bounds, y_true=y_true, y_pred=y_pred, mask=mask, sample_weight=w)
    weights = mask * w[:, None]
    values = (y_pred.astype("f8") - y_true) ** 2
    close(streamed, (values * weights).sum() / weights.sum())


def _true_positives(y_true, y_pred):
    hits = ops.cast(y_pred > 0.5, "float32")
    return ops.sum(y_true * hits, axis=-1), ops.sum(hits, axis=-1)


@PROPERTY
@given(datasets())
def test_ratio_is_the_ratio_of_sums(data):
    rng, n, bounds = data
    k = 2
    y_true = (rng.random((n, k)) < 0.5).astype("float32")
    y_pred = rng.random((n, k)).astype("float32")
    w = _weights(rng, (n,))
    m = metric(_true_positives, name="precision", aggregation="ratio")
    hits = (y_pred > 0.5).astype("f8")
    den = (hits.sum(axis=1) * w).sum()
    expected = (y_true * hits).sum(axis=1) @ w / den if den else 0.0
    close(stream_update_state(m, bounds, y_true, y_pred, w), expected)


@PROPERTY
@given(datasets())
def test_sum_is_the_weighted_sum_over_the_data(data):
    rng, n, bounds = data
    k = 2
    y_true, y_pred = rng.normal(size=(2, n, k)).astype("float32")
    w = _weights(rng, (n,))
    m = metric(squared_error, name="sse", aggregation="sum")
    expected = (((y_pred.astype("f8") - y_true) ** 2) * w[:, None]).sum()
    close(stream_update_state(m, bounds, y_true, y_pred, w), expected)


@PROPERTY
@given(datasets(), st.sampled_from(["max", "min"]))
def test_max_and_min_ignore_zero_weights(data, aggregation):
    rng, n, bounds = data
    y_pred = rng.normal(size=(n, 2)).astype("float32")
    w = _weights(rng, (n,))
    m = metric(lambda y_pred: y_pred, name="extreme", aggregation=aggregation)
    kept = y_pred[w > 0]
    expected = kept.max() if aggregation == "max" else kept.min()
    close(stream_update_state(m, bounds, y_pred, y_pred, w), expected)


def test_reset_state_restores_the_initial_state():
    m = metric(lambda y_pred: y_pred, name="peak", aggregation="max")
    m.update_state(np.zeros((2, 1)), np.array([[3.0], [-1.0]]))
    m.reset_state()
    m.update_state(np.zeros((2, 1)), np.array([[-5.0], [-2.0]]))
    assert float(m.result()) == -2.0


def test_last_keeps_the_latest_batch_mean():
    m = metric(lambda y_pred: y_pred, name="last", aggregation="last")
    m.update_state(np.zeros(2), np.array([1.0, 3.0]))
    m.update_state(np.zeros(2), np.array([5.0, 7.0]), np.array([1.0, 0.0]))
    assert float(m.result()) == 5.0


def test_masked_values_that_are_not_finite_are_ignored():
    m = metric(lambda y_pred: ops.log(y_pred), name="log", aggregation="masked_mean")
    m.resolve(["y_pred", "mask"])
    m.update_from_tensors({"y_pred": ops.array([[1.0, 0.0]]), "mask": ops.array([[True, False]])})
    assert float(m.result()) == 0.0


def test_aggregations_are_declared_once():
    assert set(AGGREGATIONS) == {"mean", "masked_mean", "ratio", "sum", "max", "min", "last"}


# -- clear failures ------------------------------------------------------------------------------


def test_unknown_aggregation_is_refused():
    with pytest.raises(ValueError, match="aggregation must be one of"):
        metric(squared_error, name="m", aggregation="median")


def test_ratio_must_return_a_pair():
    m = metric(squared_error, name="bad_ratio", aggregation="ratio")
    with pytest.raises(ValueError, match="'bad_ratio'.*pair"):
        m.update_state(np.zeros((2, 1)), np.ones((2, 1)))


def test_masked_mean_needs_per_element_values():
    m = metric(lambda y_pred: ops.mean(y_pred), name="scalar", aggregation="masked_mean")
    with pytest.raises(ValueError, match="'scalar'.*per-element"):
        m.update_state(np.zeros((2, 1)), np.ones((2, 1)))


def test_several_outputs_need_output():
    m = metric(lambda y_pred: y_pred["a"], name="a_sum", aggregation="sum")
    m.resolve(["y_pred", "sample_weight"])
    tensors = {"y_pred": {"a": ops.ones((2,))}, "sample_weight": {"a": ops.ones((2,))}}
    with pytest.raises(ValueError, match="'a_sum'.*several outputs.*output="):
        m.update_from_tensors(tensors)
    m = metric(lambda y_pred: y_pred, name="a_sum", aggregation="sum", output="a")
    m.resolve(["y_pred", "sample_weight"])
    m.update_from_tensors(tensors)
    assert float(m.result()) == 2.0


def test_bind_and_fixed_arguments_follow_the_injector():
    m = metric(lambda a, scale: a * scale, name="scaled", bind={"a": "y_pred"}, scale=3.0)
    m.update_state(np.zeros(2), np.array([1.0, 2.0]))
    assert float(m.result()) == 4.5
    with pytest.raises(ValueError, match="'b' is not a parameter"):
        metric(lambda a: a, name="m", bind={"b": "y_pred"})


# -- in models -------------------------------------------------------------------------------------


def _tapped_model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="relu")(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(hidden)
    return lw.Model(inputs, outputs, taps={"hidden": hidden}), keras.Model(inputs, hidden)


def _data(n=24):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (rng.random((n, 1)) < 0.5).astype("float32")


def test_metric_reads_a_tap_in_lw_model():
    model, hidden_model = _tapped_model()
    mean_hidden = metric(lambda hidden: ops.mean(hidden, axis=-1), name="mean_hidden")
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy", mean_hidden])
    x, y = _data()
    expected = hidden_model.predict(x, verbose=0).mean()
    for batch_size in (len(x), 7):  # one batch, then uneven batches: the same exact value
        logs = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
        np.testing.assert_allclose(logs["mean_hidden"], expected, rtol=1e-5)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert {"accuracy", "loss", "mean_hidden"} <= set(history.history)


def test_lw_model_reports_unknown_names_at_compile():
    model, _ = _tapped_model()
    with pytest.raises(ValueError, match="asks for 'latent'.*Available names: .*hidden"):
        model.compile(loss="mse", metrics=[metric(lambda latent: latent, name="latent_mean")])


def test_output_picks_one_output_of_a_multi_output_model():
    inputs = keras.Input((3,))
    a = keras.layers.Dense(1, name="a")(inputs)
    b = keras.layers.Dense(2, name="b")(inputs)
    model = lw.Model(inputs, {"a": a, "b": b})
    mean_b = metric(lambda y_pred: y_pred, name="mean_b", output="b")
    model.compile(loss={"a": "mse", "b": "mse"}, metrics=[mean_b])
    x = np.random.default_rng(1).normal(size=(10, 3)).astype("float32")
    y = {"a": np.zeros((10, 1), "float32"), "b": np.zeros((10, 2), "float32")}
    logs = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    expected = model.predict(x, verbose=0)["b"].mean()
    np.testing.assert_allclose(logs["mean_b"], expected, rtol=1e-5)


def mean_pred(y_true, y_pred):  # the seed's Keras 2 custom metric
    return ops.mean(y_pred)


def test_metric_in_a_plain_keras_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(
        optimizer="rmsprop",
        loss="binary_crossentropy",
        metrics=["accuracy", metric(mean_pred, name="mean_pred")],
    )
    x, y = _data()
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert {"accuracy", "mean_pred"} <= set(history.history)
    logs = model.evaluate(x, y, batch_size=5, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["mean_pred"], model.predict(x, verbose=0).mean(), rtol=1e-5)


def test_plain_keras_model_names_what_a_metric_may_ask_for():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(loss="mse", metrics=[metric(lambda hidden: hidden, name="mean_hidden")])
    x, y = _data(4)
    with pytest.raises(ValueError) as error:
        model.evaluate(x, y, verbose=0)
    message = str(error.value)
    assert "metric 'mean_hidden' asks for 'hidden'" in message
    assert "Available names: y_true, y_pred, sample_weight" in message
    assert "lw.Model" in message


# -- arithmetic ------------------------------------------------------------------------------------


def _counts():
    def hits(y_pred):
        return ops.cast(y_pred > 0.5, "float32")

    tp = metric(lambda y_true, y_pred: y_true * hits(y_pred), name="tp", aggregation="sum")
    pp = metric(hits, name="pp", aggregation="sum")
    return tp, pp


def test_arithmetic_composes_final_results():
    a = metric(lambda y_pred: y_pred, name="a", aggregation="sum")
    b = metric(lambda y_true: y_true, name="b")
    rng = np.random.default_rng(2)
    y_true, y_pred = rng.random((2, 9, 2)).astype("float32")
    sa, mb = y_pred.astype("f8").sum(), y_true.astype("f8").mean()
    cases = {
        "a_over_b": (a / b, sa / mb),
        "a_plus_2_times_b": (a + 2 * b, sa + 2 * mb),
        "neg_a": (-a, -sa),
        "a_minus_b": (a - b, sa - mb),
        "a_times_b": (a * b, sa * mb),
        "3_over_a": (3 / a, 3 / sa),
        "1_minus_b": (1 - b, 1 - mb),
        "a_times_0.5": (a * 0.5, sa * 0.5),
    }
    for name, (composite, expected) in cases.items():
        assert isinstance(composite, ComposedMetric) and composite.name == name
        for start, stop in ((0, 4), (4, 5), (5, 9)):
            composite.update_state(y_true[start:stop], y_pred[start:stop])
        close(float(composite.result()), expected)
    assert float(a.result()) == 0.0  # a composite updates its own copies


def test_a_metric_used_twice_is_updated_once():
    a = metric(lambda y_pred: y_pred, name="a", aggregation="sum")
    expression = (a + a * a) / a
    assert len(expression.parts) == 1 and len(expression.variables) == 1
    expression.update_state(np.zeros(2), np.array([1.0, 2.0]))
    close(float(expression.result()), (3 + 9) / 3)
    with pytest.raises(TypeError):
        a + "b"


def test_division_by_zero_is_zero_and_named_renames():
    tp, pp = _counts()
    precision = (tp / pp).named("precision")
    assert precision.name == "precision"
    precision.update_state(np.ones((2, 1)), np.zeros((2, 1)))
    assert float(precision.result()) == 0.0


def _check_counts(model, x, y):
    logs = model.evaluate(x, y, batch_size=7, verbose=0, return_dict=True)
    hits = model.predict(x, batch_size=len(x), verbose=0) > 0.5
    true_positives, predicted = float((hits * y).sum()), float(hits.sum())
    close(logs["precision"], true_positives / predicted if predicted else 0.0)
    close(logs["tp"], true_positives)
    close(logs["2_times_pp_minus_tp"], 2 * predicted - true_positives)


def test_precision_from_counts_in_fit_and_evaluate_of_lw_model():
    tp, pp = _counts()
    model, _ = _tapped_model()
    metrics = [(tp / pp).named("precision"), tp, 2 * pp - tp]
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=metrics)
    x, y = _data(30)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert {"precision", "tp", "2_times_pp_minus_tp"} <= set(history.history)
    _check_counts(model, x, y)


def test_precision_from_counts_in_a_plain_keras_model():
    tp, pp = _counts()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    metrics = [(tp / pp).named("precision"), tp, 2 * pp - tp]
    model.compile(loss="binary_crossentropy", metrics=metrics)
    _check_counts(model, *_data(30))


def test_injected_metric_is_a_keras_metric():
    m = metric(squared_error, name="mse")
    assert isinstance(m, InjectedMetric) and isinstance(m, keras.metrics.Metric)
    assert [v.dtype for v in m.variables] == ["float32", "float32"]
