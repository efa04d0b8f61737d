"""Step-time overhead of lw.Model + lw.Objective against the hand-written equivalent.

The seed's activation-penalty model (Input(128) -> Dense(64, relu) -> Dense(64, relu) ->
Dense(10, softmax); loss = MSE + scheduled mean squared activation of the first hidden layer),
trained two ways in the same process on the same data:

- lossweave: `lw.Model` with a tap and an `lw.Objective` of two terms, the activity weight a
  `lw.schedules.linear` of the step, NaN guard on (the default), and once more with the guard off to price it;
- by hand: a functional `keras.Model` subclass returning `[probs, layer1]`, whose `compute_loss`
  does the same math, advances its own step variable and keeps the same `Mean` trackers (mse,
  activity, activity_weight): what a user writes to get the same logs without lossweave.

Prints seconds per step for each and the ratio lossweave / hand-written (target <= 1.03), for the
default `jit_compile` and `jit_compile=True`. Run: `KERAS_BACKEND=jax python benchmarks/overhead.py`.
"""

import argparse
import statistics
import time

import keras
import numpy as np
from keras import ops

import lossweave as lw

SCHEDULE = lw.schedules.linear(0.0, 1e-3, steps=1000)


def layers():
    inputs = keras.Input((128,))
    layer1 = keras.layers.Dense(64, activation="relu")(inputs)
    layer2 = keras.layers.Dense(64, activation="relu")(layer1)
    probs = keras.layers.Dense(10, activation="softmax")(layer2)
    return inputs, layer1, probs


class HandWritten(keras.Model):
    """The same objective written by hand in `compute_loss`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step = self.add_weight(shape=(), dtype="int32", initializer="zeros", trainable=False)
        self.mse_tracker = keras.metrics.Mean(name="mse")
        self.activity_tracker = keras.metrics.Mean(name="activity")
        self.weight_tracker = keras.metrics.Mean(name="activity_weight")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        probs, layer1 = y_pred
        mse = ops.mean(keras.losses.mean_squared_error(y, probs))
        activity = ops.mean(ops.square(layer1))
        weight = SCHEDULE(self.step.value)
        batch = ops.shape(x)[0]
        self.mse_tracker.update_state(mse, sample_weight=batch)
        self.activity_tracker.update_state(activity, sample_weight=batch)
        self.weight_tracker.update_state(weight, sample_weight=batch)
        if training:
            self.step.assign_add(1)
        return mse + weight * activity


def lossweave_model(jit_compile, check_finite=True):
    inputs, layer1, probs = layers()
    model = lw.Model(inputs, probs, taps={"layer1": layer1})
    model.compile(
        optimizer="adam",
        jit_compile=jit_compile,
        check_finite=check_finite,
        loss=lw.Objective({
            "mse": "mean_squared_error",
            "activity": lw.Term(lambda layer1: ops.mean(ops.square(layer1)), weight=SCHEDULE),
        }),
    )
    return model


def hand_written_model(jit_compile):
    inputs, layer1, probs = layers()
    model = HandWritten(inputs, [probs, layer1])
    model.compile(optimizer="adam", jit_compile=jit_compile)
    return model


def seconds_per_step(model, x, y, batch_size):
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    return (time.perf_counter() - start) / (len(x) // batch_size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per timed fit")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jit", nargs="+", default=["auto", "true"], choices=["auto", "true"],
                        help="jit_compile settings to run (torch.compile takes ~1 min a model)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.normal(size=(n, 128)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, n), 10).astype("float32")
    print(f"backend={keras.backend.backend()} batch={args.batch_size} steps/fit={args.steps}")
    for jit_compile in [{"auto": "auto", "true": True}[j] for j in args.jit]:
        models = {
            "lossweave": lossweave_model(jit_compile),
            "unguarded": lossweave_model(jit_compile, check_finite=False),
            "hand": hand_written_model(jit_compile),
        }
        for model in models.values():  # compile and warm up
            model.fit(x[: args.batch_size * 5], y[: args.batch_size * 5], verbose=0)
        times = {name: [] for name in models}
        for _ in range(args.repeats):  # interleave, so drift hits both alike
            for name, model in models.items():
                times[name].append(seconds_per_step(model, x, y, args.batch_size))
        ours, unguarded, theirs = (statistics.median(t) for t in times.values())
        print(
            f"jit_compile={jit_compile!s:5}  lossweave {ours * 1e3:7.3f} ms/step  "
            f"hand-written {theirs * 1e3:7.3f} ms/step  ratio {ours / theirs:.3f}  |  "
            f"NaN guard off {unguarded * 1e3:7.3f} ms/step: guard costs {ours / unguarded - 1:+.1%}"
        )


if __name__ == "__main__":
    main()
