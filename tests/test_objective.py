"""Objective and Term outside a model: injection, reduction, sample weights, errors, configs."""

import keras
import numpy as np
import pytest
from keras import ops

import lossweave as lw

Y_TRUE = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 0.0]], "float32")
Y_PRED = np.array([[0.5, 1.0], [1.0, 0.0], [0.0, 0.0]], "float32")
SW = np.array([1.0, 0.5, 0.0], "float32")
NAMES = ["y_true", "y_pred", "x", "sample_weight", "mask", "step", "epoch", "hidden"]


def tensors(**extra):
    base = {"y_true": ops.convert_to_tensor(Y_TRUE), "y_pred": ops.convert_to_tensor(Y_PRED),
            "x": None, "sample_weight": None, "mask": None, "step": 3, "epoch": 0,
            "hidden": ops.ones((3, 4))}
    base.update(extra)
    return base


def value(term, **extra):
    term.resolve("t", NAMES)
    return float(term.value(tensors(**extra)))


def test_named_keras_loss_with_sample_weight_matches_keras():
    ours = value(lw.Term("mean_squared_error"), sample_weight=ops.convert_to_tensor(SW))
    theirs = float(keras.losses.MeanSquaredError()(Y_TRUE, Y_PRED, sample_weight=SW))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_loss_object_keeps_its_own_reduction():
    term = lw.Term(keras.losses.MeanAbsoluteError(reduction="sum"))
    np.testing.assert_allclose(value(term), np.sum(np.mean(np.abs(Y_TRUE - Y_PRED), -1)), rtol=1e-6)


def test_sum_reduction_and_fixed_kwargs():
    term = lw.Term(lambda y_true, y_pred, power: ops.sum(ops.abs(y_true - y_pred) ** power, -1),
                   reduction="sum", power=2.0)
    np.testing.assert_allclose(value(term), np.sum((Y_TRUE - Y_PRED) ** 2), rtol=1e-6)


def test_function_taking_sample_weight_weighs_itself():
    term = lw.Term(lambda y_pred, sample_weight: ops.sum(ops.mean(y_pred, -1) * sample_weight))
    result = value(term, sample_weight=ops.convert_to_tensor(SW))
    np.testing.assert_allclose(result, np.sum(Y_PRED.mean(-1) * SW), rtol=1e-6)


def test_bind_renames_a_parameter():
    term = lw.Term(lw.losses.activation_penalty, bind={"activation": "hidden"})
    assert value(term) == pytest.approx(1.0)


def test_bind_or_kwargs_naming_a_missing_parameter_fails():
    with pytest.raises(ValueError, match="'activity' is not a parameter"):
        lw.Term(lw.losses.activation_penalty, bind={"activity": "hidden"}).resolve("t", NAMES)
    with pytest.raises(ValueError, match="'scale' is not a parameter"):
        lw.Term(lambda y_pred: y_pred, scale=2.0).resolve("t", NAMES)


def test_term_returning_a_structure_fails_naming_it():
    term = lw.Term(lambda y_pred: {"a": y_pred})
    term.resolve("pair", NAMES)
    with pytest.raises(ValueError, match="term 'pair' returned a dict"):
        term.value(tensors())


def test_objective_sums_weighted_terms():
    objective = lw.Objective({
        "mae": "mean_absolute_error",
        "scaled": lw.Term(lambda step: ops.cast(step, "float32"), weight=lw.schedules.linear(0, 1, steps=6)),
    })
    assert objective.build(NAMES) == ["mae", "scaled", "scaled_weight"]
    total, logged = objective.compute(tensors())
    np.testing.assert_allclose(float(logged["scaled"]), 3.0)
    np.testing.assert_allclose(float(logged["scaled_weight"]), 0.5)
    np.testing.assert_allclose(float(total), float(logged["mae"]) + 1.5, rtol=1e-6)


@pytest.mark.parametrize("terms, message", [
    ({}, "non-empty dict"),
    (["mse"], "non-empty dict"),
])
def test_bad_objective_fails(terms, message):
    with pytest.raises(ValueError, match=message):
        lw.Objective(terms)


def test_term_names_must_be_identifiers():
    with pytest.raises(ValueError, match="identifiers"):
        lw.Objective({"my term": "mse"}).build(NAMES)


def test_bad_reduction_fails():
    with pytest.raises(ValueError, match="reduction must be one of"):
        lw.Term("mse", reduction="none")


def test_config_round_trip():
    objective = lw.Objective({
        "mse": "mean_squared_error",
        "kl": lw.Term(lw.losses.gaussian_kl, weight=lw.schedules.linear(0.0, 1.0, steps=10),
                      free_bits=0.2, bind={"z_mean": "hidden", "z_log_var": "hidden"}),
    })
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(objective))
    assert restored.get_config() == objective.get_config()
    assert restored.terms["kl"].kwargs == {"free_bits": 0.2}


def multi_output_model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4)(inputs)
    outputs = {"a": keras.layers.Dense(2, name="a")(hidden), "b": keras.layers.Dense(1, name="b")(hidden)}
    return lw.Model(inputs, outputs, taps={"hidden": hidden})


def test_term_without_output_on_a_multi_output_model_fails_at_compile_listing_outputs():
    model = multi_output_model()
    with pytest.raises(ValueError, match=r"term 'mse' reads y_pred/y_true, but the model has "
                                         r"several outputs \(a, b\).*output='a'"):
        model.compile(loss=lw.Objective({"mse": "mse"}))
    with pytest.raises(ValueError, match=r"term 'mse' has output='c', but the model's outputs "
                                         r"are \['a', 'b'\]"):
        model.compile(loss=lw.Objective({"mse": lw.Term("mse", output="c")}))
    model.compile(loss=lw.Objective({"act": lambda hidden: ops.mean(hidden)}))  # no output read


@pytest.mark.parametrize("returned, what", [(None, "None"), ("oops", "a str")])
def test_term_returning_a_non_tensor_names_the_term(returned, what):
    term = lw.Term(lambda y_pred: returned)
    term.resolve("odd", NAMES)
    with pytest.raises(ValueError, match=f"term 'odd' returned {what}; a term must return a tensor"):
        term.value(tensors())


def test_a_term_named_like_the_weight_of_a_scheduled_term_is_refused():
    objective = lw.Objective({
        "kl": lw.Term("mse", weight=lw.schedules.linear(0.0, 1.0, steps=10)),
        "kl_weight": "mae",
    })
    with pytest.raises(ValueError, match="'kl_weight' collides with the logged weight of the "
                                         "scheduled term 'kl'"):
        objective.build(NAMES)


def test_a_misspelled_keras_loss_name_names_the_term():
    with pytest.raises(ValueError, match="term 'recon': 'mean_sqared_error' is not a Keras loss name"):
        lw.Objective({"recon": "mean_sqared_error"}).build(NAMES)


def test_a_schedule_class_passed_uncalled_says_to_call_it():
    with pytest.raises(TypeError, match=r"weight=Linear is a schedule class.*call it"):
        lw.Term("mse", weight=lw.schedules.linear)


def test_values_along_a_wrong_axis_equal_to_the_batch_size_are_caught():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8)(inputs)  # 8 units, and a batch of 8 below
    model = lw.Model(inputs, keras.layers.Dense(1)(hidden), taps={"hidden": hidden})
    model.compile(optimizer="sgd", loss=lw.Objective({
        "mse": "mse", "per_unit": lambda hidden: ops.mean(hidden, axis=0)}))
    with pytest.raises(ValueError, match=r"term 'per_unit' returned shape \(8,\), whose first axis "
                                         "is not the batch axis"):
        model.fit(np.ones((8, 4), "float32"), np.ones((8, 1), "float32"), batch_size=8, verbose=0)
