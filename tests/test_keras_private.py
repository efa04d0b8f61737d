"""The private Keras APIs of lossweave._keras: each test fails when Keras changes what we rely on."""

import keras
import numpy as np
from keras import ops

from lossweave import _keras


def test_get_keras_mask_reads_the_mask_keras_attaches():
    embedded = keras.layers.Embedding(5, 2, mask_zero=True)(ops.convert_to_tensor([[1, 0]]))
    np.testing.assert_array_equal(ops.convert_to_numpy(_keras.get_keras_mask(embedded)), [[1, 0]])


def test_loss_scaling_for_distribution_is_the_identity_on_one_device():
    value = ops.convert_to_tensor(2.0)
    assert float(_keras.scale_loss_for_distribution(value)) == 2.0
    assert float(_keras.unscale_loss_for_distribution(value)) == 2.0


def test_resolve_loss_resolves_as_compile_does():
    y_true, y_pred = ops.zeros((2, 1)), ops.zeros((2, 3))
    sparse = _keras.resolve_loss("crossentropy", y_true, y_pred)
    assert isinstance(sparse, keras.losses.Loss) and sparse.name == "crossentropy"
    assert sparse.fn is keras.losses.sparse_categorical_crossentropy
    assert isinstance(_keras.resolve_loss("mse", y_true, y_pred), keras.losses.Loss)


def test_keras_callbacks_look_names_up_in_metrics_lists():
    assert issubclass(_keras.MetricGroup, keras.metrics.Metric)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(loss="mse", metrics=["mae"])
    model.fit(np.ones((2, 2)), np.ones((2, 1)), verbose=0)
    group = _keras.MetricGroup([keras.metrics.Mean(name="watched")], name="group")
    group.metrics[0]._direction = "up"
    stop = keras.callbacks.EarlyStopping(monitor="watched")
    stop.set_model(type("Stub", (), {"metrics": [group]})())
    stop._set_monitor_op()
    assert stop.monitor_op is ops.greater


def test_functional_is_the_class_of_functional_models():
    inputs = keras.Input((2,))
    assert type(keras.Model(inputs, keras.layers.Dense(1)(inputs))) is _keras.Functional


def test_compute_output_spec_runs_a_function_symbolically():
    spec = _keras.compute_output_spec(lambda t: ops.mean(t["a"], axis=0),
                                      {"a": keras.KerasTensor((None, 3))})
    assert tuple(spec.shape) == (3,)


def test_trainer_and_graph_hooks_exist_and_are_used():
    assert callable(getattr(keras.Model, _keras.SYMBOLIC_BUILD))
    assert callable(getattr(_keras.Functional, _keras.RUN_THROUGH_GRAPH))
    calls = []

    class Spy(_keras.Functional):
        def _run_through_graph(self, *args, **kwargs):
            calls.append("graph")
            return super()._run_through_graph(*args, **kwargs)

        def _symbolic_build(self, *args, **kwargs):
            calls.append("build")
            return super()._symbolic_build(*args, **kwargs)

    inputs = keras.Input((2,))
    model = Spy(inputs, keras.layers.Dense(1)(inputs))
    model.compile(loss="mse")
    model.fit(np.ones((2, 2)), np.ones((2, 1)), verbose=0)
    assert "graph" in calls
    if keras.backend.backend() != "tensorflow":  # TF builds symbolically under a strategy only
        assert "build" in calls
    calls.clear()
    keras.models.clone_model(model)
    assert set(calls) == {"graph"}
    assert len(list(_keras.flatten_layers(model))) == 2  # the input layer and the Dense


def test_compile_with_loss_none_keeps_the_old_compile_loss():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(loss="mse", metrics=["mae"])
    old_loss, old_metrics = model._compile_loss, model._compile_metrics
    model.compile(loss=None, metrics=None)
    assert model._compile_loss is old_loss and model._compile_metrics is old_metrics
    _keras.forget_compiled(model)
    assert model._compile_loss is None and model._compile_metrics is None


def test_a_masked_keras_loss_leaves_the_sample_weight_alone():
    y_pred = ops.ones((2, 3, 1))
    keras.src.backend.set_keras_mask(y_pred, ops.convert_to_tensor([[True, True, False]] * 2))
    sample_weight = ops.ones((2, 3))
    loss = keras.losses.MeanSquaredError()
    _keras.keras_loss_value(loss, ops.zeros((2, 3, 1)), y_pred, sample_weight)
    np.testing.assert_array_equal(ops.convert_to_numpy(sample_weight), np.ones((2, 3)))
    # Keras itself multiplies the sample weight by the mask in place on torch (why we copy).
    loss(ops.zeros((2, 3, 1)), y_pred, sample_weight=sample_weight)
    changed = not np.array_equal(ops.convert_to_numpy(sample_weight), np.ones((2, 3)))
    assert changed == (keras.backend.backend() == "torch")


def test_a_built_subclassed_model_is_locked_until_unlocked_state():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.ones((1, 2)))
    try:
        net.add_weight(shape=(), name="extra")
        raise AssertionError("Keras no longer locks a built model's state")
    except ValueError:
        pass
    with _keras.unlocked_state(net):
        net.add_weight(shape=(), name="extra")
    assert net._tracker.locked and "extra" in [v.name for v in net.weights]


def test_the_trainer_internals_the_per_term_train_steps_call_exist():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(loss="mse")
    for name in _keras.TRAIN_STEP_INTERNALS[keras.backend.backend()]:
        assert hasattr(model, name), name
