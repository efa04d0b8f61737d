"""Taps in every model style: functional, functional with lw.Tap layers, subclassed, Sequential."""

import keras
import numpy as np
import pytest
from keras import ops

import lossweave as lw


class CountTrainingCalls(keras.layers.Layer):
    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

    def call(self, inputs, training=None):
        if training:
            self.calls.assign_add(1.0)
        return inputs


class Subclassed(lw.Model):
    """The keras.io style: layers as attributes, a `call`, taps by function and by layer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.counter = CountTrainingCalls()
        self.tap_layer = lw.Tap("logits")
        self.head = keras.layers.Dense(3)

    def call(self, inputs, training=False):
        hidden = lw.tap("hidden", self.counter(self.hidden(inputs), training=training))
        return ops.softmax(self.tap_layer(self.head(hidden)))


def functional():
    inputs = keras.Input((12,))
    counter = CountTrainingCalls()
    hidden = counter(keras.layers.Dense(8, activation="relu")(inputs))
    logits = keras.layers.Dense(3)(hidden)
    probs = keras.layers.Softmax()(lw.Tap("logits")(logits))
    return lw.Model(inputs, probs, taps={"hidden": hidden}), counter


def sequential():
    counter = CountTrainingCalls()
    model = lw.Sequential([
        keras.Input((12,)), keras.layers.Dense(8, activation="relu"), counter, lw.Tap("hidden"),
        keras.layers.Dense(3), lw.Tap("logits"), keras.layers.Softmax(),
    ])
    return model, counter


def subclassed():
    model = Subclassed()
    return model, model.counter


STYLES = {"functional": functional, "sequential": sequential, "subclassed": subclassed}


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype("float32")
    return x, keras.utils.to_categorical(rng.integers(0, 3, n), 3).astype("float32")


def objective():
    return lw.Objective({
        "ce": "categorical_crossentropy",
        "activity": lw.Term(lambda hidden: ops.mean(ops.square(hidden), axis=-1),
                            weight=lw.schedules.linear(0.0, 1.0, steps=10)),
        "logit_size": lw.Term(lambda logits: ops.mean(ops.abs(logits)), weight=0.0),
    })


def reference(model, x):
    """hidden and logits of the same weights, computed without lossweave."""
    dense_layers = [layer for layer in keras.tree.flatten(model._flatten_layers())
                    if isinstance(layer, keras.layers.Dense)]
    hidden = keras.ops.convert_to_numpy(dense_layers[0](x))
    logits = keras.ops.convert_to_numpy(dense_layers[1](hidden))
    return hidden, logits


@pytest.mark.parametrize("style", STYLES)
def test_every_style_logs_terms_from_its_taps(style):
    model, counter = STYLES[style]()
    metric = lw.metric(lambda logits: ops.max(logits, axis=-1), name="max_logit", aggregation="max")
    model.compile(optimizer="sgd", loss=objective(), metrics=["accuracy", metric])
    x, y = data()
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0).history
    assert {"ce", "activity", "activity_weight", "logit_size", "accuracy", "max_logit"} <= set(history)
    assert float(counter.calls.value) == 8.0  # one forward pass per step: 2 epochs of 4 steps
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    hidden, logits = reference(model, x)
    np.testing.assert_allclose(logs["activity"], np.mean(hidden**2), rtol=1e-5)
    np.testing.assert_allclose(logs["logit_size"], np.mean(np.abs(logits)), rtol=1e-5)
    np.testing.assert_allclose(logs["max_logit"], np.max(logits), rtol=1e-5)
    assert float(counter.calls.value) == 8.0  # evaluation is not a training call


@pytest.mark.parametrize("style", STYLES)
def test_every_style_shows_only_its_outputs(style):
    model, _ = STYLES[style]()
    x, _ = data()
    assert tuple(model(x).shape) == (16, 3)
    assert model.predict(x, verbose=0).shape == (16, 3)
    if style != "subclassed":
        assert len(model.outputs) == 1 and tuple(model.output_shape) == (None, 3)
    if style == "functional":
        assert tuple(model.output.shape) == (None, 3)


def test_static_tap_names():
    assert functional()[0].tap_names == ("hidden", "logits")
    assert sequential()[0].tap_names == ("hidden", "logits")
    assert subclassed()[0].tap_names == ("logits",)  # lw.tap calls are seen once it runs


def test_a_tap_inside_a_nested_sub_model_is_seen():
    inner_inputs = keras.Input((12,))
    inner_hidden = lw.Tap("deep")(keras.layers.Dense(5)(inner_inputs))
    encoder = keras.Model(inner_inputs, keras.layers.Dense(4)(inner_hidden), name="encoder")

    class Outer(lw.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.encoder, self.head = encoder, keras.layers.Dense(3)

        def call(self, inputs):
            return self.head(self.encoder(inputs))

    for model in (Outer(), lw.Model(encoder.inputs, keras.layers.Dense(3)(encoder.outputs[0]))):
        assert model.tap_names == ("deep",)
        model.compile(optimizer="sgd", loss=lw.Objective({
            "mse": "mse", "deep": lw.Term(lambda deep: ops.mean(ops.square(deep)), weight=0.0)}))
        x, y = data()
        logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
        deep = keras.Model(inner_inputs, inner_hidden).predict(x, verbose=0)
        np.testing.assert_allclose(logs["deep"], np.mean(deep**2), rtol=1e-5)


def test_two_taps_with_one_name_fail():
    with pytest.raises(ValueError, match="Two lw.Tap layers named 'h'"):
        lw.Sequential([keras.Input((3,)), lw.Tap("h"), keras.layers.Dense(2), lw.Tap("h")])
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(2)(inputs)
    with pytest.raises(ValueError, match="Two taps named 'h'"):
        lw.Model(inputs, lw.Tap("h")(hidden), taps={"h": hidden})

    class Twice(lw.Model):
        def call(self, inputs):
            return lw.tap("h", inputs) + lw.tap("h", inputs)

    model = Twice()
    model.compile(optimizer="sgd", loss=lw.Objective({"mse": "mse"}))
    with pytest.raises(ValueError, match="Two taps named 'h' in one forward pass"):
        model.fit(np.ones((4, 3)), np.ones((4, 3)), verbose=0)


def test_tap_on_a_symbolic_tensor_while_building_a_graph_fails():
    inputs = keras.Input((3,))
    with pytest.raises(ValueError, match=r"Use the layer lw.Tap\('h'\).*taps=\{'h': h\}"):
        lw.tap("h", keras.layers.Dense(2)(inputs))


def test_tap_inside_a_call_traced_symbolically_returns_the_tensor():
    model = Subclassed()
    outputs = model(keras.Input((12,)))  # Keras traces call symbolically
    assert tuple(outputs.shape) == (None, 3)
    model.summary(print_fn=lambda *args, **kwargs: None)


def test_bad_tap_names_fail():
    with pytest.raises(ValueError, match="Tap name 'y_pred'"):
        lw.Tap("y_pred")
    with pytest.raises(ValueError, match="Tap name 'not valid'"):
        lw.tap("not valid", np.ones(2))


def test_unknown_name_of_a_subclassed_model_fails_at_the_first_step_listing_its_taps():
    model = Subclassed()
    model.compile(optimizer="sgd", loss=lw.Objective({"bad": lambda hiden: ops.mean(hiden)}))
    x, y = data()
    with pytest.raises(ValueError, match=r"asks for 'hiden'.*Available names: .*training, "
                                         r"(hidden, logits|logits, hidden)"):
        model.fit(x, y, verbose=0)


class CustomStep(Subclassed):
    traced = 0

    def train_step(self, *args, **kwargs):
        CustomStep.traced += 1  # each trace (TF, JAX) or step (torch) passes here
        return super().train_step(*args, **kwargs)


def test_custom_train_step_calling_super_keeps_taps_and_schedules():
    model = CustomStep()
    model.compile(optimizer="sgd", loss=objective())
    x, y = data()
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    np.testing.assert_allclose(history["activity_weight"], [0.05, 0.25], rtol=1e-5)
    assert int(model.step.value) == 4 and history["activity"][0] > 0
    assert CustomStep.traced >= 1


def test_custom_train_step_without_super_gets_a_clear_error():
    backend = keras.backend.backend()

    class ByHand(Subclassed):
        if backend == "tensorflow":
            def train_step(self, data):
                import tensorflow as tf

                x, y = data
                with tf.GradientTape() as tape:
                    loss = self.compute_loss(x, y, self(x, training=True))
                self.optimizer.apply(tape.gradient(loss, self.trainable_weights),
                                     self.trainable_weights)
                return {"loss": loss}
        elif backend == "torch":
            def train_step(self, data):
                x, y = data
                loss = self.compute_loss(x, y, self(x, training=True))
                loss.backward()
                return {"loss": loss}
        else:
            def train_step(self, state, data):
                trainable, non_trainable, optimizer_vars, metrics_vars = state
                x, y = data
                y_pred, _ = self.stateless_call(trainable, non_trainable, x)
                loss, _ = self.stateless_compute_loss(
                    trainable, non_trainable, metrics_vars, x=x, y=y, y_pred=y_pred)
                return {"loss": loss}, state

    model = ByHand()
    model.compile(optimizer="sgd", loss=objective())
    x, y = data()
    with pytest.raises(ValueError, match=r"term 'activity' asks for 'hidden'.*a custom train_step "
                                         r"must call super\(\).train_step"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
