"""Seed example (a): a custom metric `mean_pred` next to "accuracy".

Keras 2:

    def mean_pred(y_true, y_pred):
        return K.mean(y_pred)
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy", mean_pred])

lossweave: `lw.metric` turns the same function into a metric whose epoch value is exact (the mean
over all predictions of the epoch, not a mean of batch means).

Run: `python examples/mean_pred.py`
"""

import keras
import numpy as np
from keras import ops

import lossweave as lw


def mean_pred(y_pred):
    return ops.mean(y_pred, axis=-1)


def main(epochs=3, n=512, seed=0, verbose=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 20)).astype("float32")
    y = (x[:, :1] + 0.5 * x[:, 1:2] > 0).astype("float32")
    inputs = keras.Input((20,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer="rmsprop",
        loss="binary_crossentropy",
        metrics=["accuracy", lw.metric(mean_pred, name="mean_pred")],
    )
    history = model.fit(x, y, batch_size=64, epochs=epochs, verbose=verbose)
    return model, history, (x, y)


if __name__ == "__main__":
    main()
