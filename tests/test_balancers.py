"""lw.balancers: DWA, GradNorm, uncertainty weighting and PCGrad, against their formulas."""

import keras
import numpy as np
import pytest
from keras import ops

import lossweave as lw


@keras.saving.register_keras_serializable(package="lossweave_tests")
def first_task(y_true, y_pred):
    return ops.square(y_pred[:, 0] - y_true[:, 0])


@keras.saving.register_keras_serializable(package="lossweave_tests")
def second_task(y_true, y_pred):
    return ops.square(y_pred[:, 1] - y_true[:, 1])


def two_tasks(balance, scale=30.0, n=32, seed=0):
    """A shared trunk with two regression outputs; the second task's targets are `scale`x."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = np.stack([x @ rng.normal(size=4), scale * np.tanh(x @ rng.normal(size=4))], axis=1)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    model = lw.Model(inputs, keras.layers.Dense(2)(hidden))
    objective = lw.Objective({"a": first_task, "b": second_task}, balance=balance)
    return model, objective, x, y.astype("float32")


def test_dwa_weights_are_k_softmax_of_the_last_two_epoch_ratios():
    model, objective, x, y = two_tasks(lw.balancers.dwa(temperature=2.0))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=objective)
    history = model.fit(x, y, batch_size=8, epochs=5, shuffle=False, verbose=0).history
    weights = np.stack([history["a_weight"], history["b_weight"]], axis=1)
    means = np.stack([history["a"], history["b"]], axis=1)
    np.testing.assert_allclose(weights[:2], 1.0, rtol=1e-6)  # the first two epochs
    for epoch in range(2, 5):
        ratios = means[epoch - 1] / means[epoch - 2]
        want = 2 * np.exp(ratios / 2.0) / np.exp(ratios / 2.0).sum()
        np.testing.assert_allclose(weights[epoch], want, rtol=1e-5)
    assert abs(weights[2:, 0] - 1).max() > 1e-3  # the weights did move


def test_gradnorm_weights_sum_to_k_at_every_step():
    balance = lw.balancers.gradnorm(alpha=1.5, learning_rate=0.05)
    model, objective, x, y = two_tasks(balance)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=objective)
    # One step an epoch, so each logged weight is one step's weight.
    history = model.fit(x, y, batch_size=32, epochs=12, shuffle=False, verbose=0).history
    totals = np.add(history["a_weight"], history["b_weight"])
    np.testing.assert_allclose(totals, 2.0, rtol=1e-5)
    assert history["a_weight"][0] == pytest.approx(1.0)
    # The 30x task's gradient is far larger: GradNorm lowers its weight.
    assert history["b_weight"][-1] < 0.9 * history["a_weight"][-1]


def test_uncertainty_weights_a_30x_larger_task_well_below_the_other():
    model, objective, x, y = two_tasks(lw.balancers.uncertainty())
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss=objective)
    history = model.fit(x, y, batch_size=8, epochs=15, shuffle=False, verbose=0).history
    assert history["b_weight"][-1] < 0.25 * history["a_weight"][-1]
    assert history["b_weight"][0] > 0.5  # it got there by training: both start at 1
    assert [v.name for v in model.trainable_variables].count("uncertainty_log_variance") == 1


def _vectors(*arrays):
    """A gradient as two variables' parts: the first two entries and the rest."""
    return [[ops.convert_to_tensor(np.asarray(a[:2], "float32")),
             ops.convert_to_tensor(np.asarray(a[2:], "float32"))] for a in arrays]


def _flat(grads):
    return np.concatenate([ops.convert_to_numpy(g) for g in grads])


def test_pcgrad_leaves_no_conflict_with_any_term_gradient():
    g1, g2 = np.array([1.0, 2.0, 0.0, -1.0]), np.array([-2.0, -1.0, 1.0, 0.5])
    assert g1 @ g2 < 0  # a conflicting pair
    terms = _vectors(g1, g2)
    total = [a + b for a, b in zip(*terms)]
    combined = _flat(lw.balancers.pcgrad().combine(None, None, terms, total))
    for g in (g1, g2):
        assert combined @ g >= -1e-6
    # Algorithm 1: each gradient projected on the normal plane of the other, then summed.
    want = (g1 - (g1 @ g2) / (g2 @ g2) * g2) + (g2 - (g2 @ g1) / (g1 @ g1) * g1)
    np.testing.assert_allclose(combined, want, rtol=1e-6)


def test_pcgrad_is_the_plain_sum_without_conflict_and_keeps_other_gradients():
    g1, g2 = np.array([1.0, 2.0, 0.0, -1.0]), np.array([2.0, 0.5, 1.0, 0.5])
    assert g1 @ g2 > 0
    terms = _vectors(g1, g2)
    extra = np.array([0.1, 0.2, 0.3, 0.4])  # an add_loss gradient, untouched
    total = [a + b + e for a, b, e in zip(*terms, _vectors(extra)[0])]
    combined = _flat(lw.balancers.pcgrad().combine(None, None, terms, total))
    np.testing.assert_allclose(combined, g1 + g2 + extra, rtol=1e-6)


@keras.saving.register_keras_serializable(package="lossweave_tests")
def up(y_pred):
    return ops.mean(y_pred)


@keras.saving.register_keras_serializable(package="lossweave_tests")
def down(y_pred):
    return -2.0 * ops.mean(y_pred)


@pytest.mark.parametrize("balance", [None, lw.balancers.pcgrad()], ids=["sum", "pcgrad"])
def test_pcgrad_is_the_update_in_fit(balance):
    # The two terms' gradients are opposite: PCGrad projects both to zero, the sum does not.
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(1, use_bias=False)
    model = lw.Model(inputs, dense(inputs))
    model.compile(optimizer=keras.optimizers.SGD(1.0),
                  loss=lw.Objective({"up": up, "down": down}, balance=balance))
    before = ops.convert_to_numpy(dense.kernel)
    x = np.ones((4, 3), "float32")
    model.fit(x, np.zeros((4, 1)), batch_size=4, verbose=0)
    change = np.abs(ops.convert_to_numpy(dense.kernel) - before).max()
    assert (change < 1e-6) if balance is not None else (change > 0.5)


@pytest.mark.parametrize("balance", [
    lw.balancers.uncertainty(), lw.balancers.dwa(), lw.balancers.gradnorm(),
], ids=["uncertainty", "dwa", "gradnorm"])
def test_save_and_load_resume_the_balancer_state(balance, tmp_path):
    model, objective, x, y = two_tasks(balance)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=objective)
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    saved = {name: ops.convert_to_numpy(v) for name, v in model._lw.balance_state.items()}
    for name, variable in loaded._lw.balance_state.items():
        np.testing.assert_allclose(ops.convert_to_numpy(variable), saved[name], err_msg=name)
    untouched = 0.0 if isinstance(balance, lw.balancers.uncertainty) else 1.0
    assert not np.allclose(saved[next(iter(saved))], untouched)  # the state has moved
    going_on = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    resumed = loaded.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    for name in ("a", "b", "a_weight", "b_weight"):
        np.testing.assert_allclose(resumed[name], going_on[name], rtol=1e-5, err_msg=name)


def test_balance_covers_the_terms_named_and_refuses_a_scheduled_weight():
    model, _, x, y = two_tasks(None)
    objective = lw.Objective({"a": first_task, "b": second_task, "c": up},
                             balance=lw.balancers.dwa(terms=["a", "b"]))
    model.compile(optimizer="sgd", loss=objective)
    logged = sorted(model.fit(x, y, verbose=0).history)
    assert logged == ["a", "a_weight", "b", "b_weight", "c", "loss"]
    ramp = lw.schedules.linear(0.0, 1.0, steps=10)
    scheduled = lw.Objective({"a": lw.Term(first_task, weight=ramp), "b": second_task},
                             balance=lw.balancers.uncertainty())
    with pytest.raises(ValueError, match="'a' has a scheduled weight and is balanced"):
        model.compile(optimizer="sgd", loss=scheduled)
    with pytest.raises(ValueError, match=r"\['z'\]"):
        lw.Objective({"a": first_task}, balance=lw.balancers.gradnorm(terms=["z"]))
    with pytest.raises(TypeError, match="lw.balancers"):
        lw.Objective({"a": first_task}, balance="dwa")
