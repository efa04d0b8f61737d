"""Seed example (b): a loss that reads an intermediate layer.

Keras 2 (fails on Keras 3 on every backend: "A KerasTensor cannot be used as input to a
TensorFlow/JAX function"):

    def custom_loss(layer):
        def loss(y_true, y_pred):
            return K.mean(K.square(y_pred - y_true) + K.square(layer), axis=-1)
        return loss
    model.compile(optimizer="adam", loss=custom_loss(layer1))

lossweave: tap the layer by name and write the two parts as two terms; both are logged.

Run: `python examples/activation_penalty.py`
"""

import keras
import numpy as np

import lossweave as lw


def build_model():
    inputs = keras.Input((128,))
    layer1 = keras.layers.Dense(64, activation="relu")(inputs)
    layer2 = keras.layers.Dense(64, activation="relu")(layer1)
    probs = keras.layers.Dense(10, activation="softmax")(layer2)
    return lw.Model(inputs, probs, taps={"layer1": layer1})


def objective(penalty_weight=1.0):
    return lw.Objective({
        "mse": "mean_squared_error",
        "activity": lw.Term(lw.losses.activation_penalty, weight=penalty_weight,
                            bind={"activation": "layer1"}),
    })


def make_data(n=1024, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 128)).astype("float32")
    labels = np.argmax(x[:, :10], axis=-1)
    return x, keras.utils.to_categorical(labels, 10).astype("float32")


def main(epochs=3, n=1024, verbose=2):
    x, y = make_data(n)
    model = build_model()
    model.compile(optimizer="adam", loss=objective(), metrics=["accuracy"])
    history = model.fit(x, y, batch_size=128, epochs=epochs, verbose=verbose)
    return model, history, (x, y)


if __name__ == "__main__":
    main()
