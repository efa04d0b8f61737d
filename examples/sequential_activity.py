"""A `Sequential` classifier with an activity penalty on a hidden layer, named by an `lw.Tap`.

`lw.Sequential` is a `keras.Sequential`; an `lw.Tap("hidden")` in the stack passes its input on
unchanged and names it for the objective, which adds a scheduled L2 activity term next to the
cross-entropy. Both are logged, and `EarlyStopping` can watch either.

Run: `python examples/sequential_activity.py`
"""

import keras
import numpy as np

import lossweave as lw


def build_model(features=20, classes=4):
    return lw.Sequential([
        keras.Input((features,)),
        keras.layers.Dense(32, activation="relu"),
        lw.Tap("hidden"),
        keras.layers.Dense(classes, activation="softmax"),
    ])


def objective():
    return lw.Objective({
        "ce": "sparse_categorical_crossentropy",
        "activity": lw.Term(lw.losses.activation_penalty, bind={"activation": "hidden"},
                            weight=lw.schedules.linear(0.0, 1e-2, steps=50)),
    })


def make_data(n=512, features=20, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    return x, np.argmax(x[:, :classes], axis=-1)


def main(epochs=5, n=512, verbose=2):
    x, y = make_data(n)
    model = build_model()
    model.compile(optimizer="adam", loss=objective(), metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_ce", patience=2)
    history = model.fit(x, y, batch_size=64, epochs=epochs, validation_split=0.25,
                        callbacks=[stop], verbose=verbose)
    return model, history, (x, y)


if __name__ == "__main__":
    main()
