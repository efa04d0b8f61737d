"""Step-time overhead of lossweave against the hand-written equivalent, every model style.

The seed's activation-penalty model (Input(128) -> Dense(64, relu) -> Dense(64, relu) ->
Dense(10, softmax); loss = MSE + scheduled mean squared activation of the first hidden layer),
trained in the same process on the same data, batch 64, 128 steps an epoch, as:

- `hand`, `hand_aa`: two identical hand-written functional `keras.Model` subclasses returning
  `[probs, layer1]`, whose `compute_loss` does the same math, advances its own step variable and
  keeps the same three `Mean` trackers (mse, activity, activity_weight): what a user writes to get
  the same logs without lossweave. The second one is the A/A pair: its ratio to the first is the
  machine's noise.
- `hand_sub`: the same hand-written objective in a subclassed `keras.Model` whose `call` returns
  `(probs, layer1)`: the baseline of the subclassed path.
- `functional`: `lw.Model(inputs, probs, taps={"layer1": layer1})`;
- `sequential`: `lw.Sequential([... lw.Tap("layer1") ...])`;
- `subclassed`: `class Net(lw.Model)` whose `call` runs `lw.tap("layer1", h)`;
  each with an `lw.Objective` of two terms (`"mean_squared_error"` and the activity term, its
  weight a `lw.schedules.linear` of the step), NaN guard on (the default), and each again with
  `check_finite=False` (`*_noguard`) to price the guard.

Epochs are alternated: each round runs one epoch (`fit(epochs=1)`) of every model, the order
rotated by one model a round. Printed, for the epoch loop's wall time (a callback's
`on_epoch_begin` to `on_epoch_end`: every step and batch callback), its CPU time (all threads),
and the whole `fit` call's wall time (setup included): the median seconds per step of each model,
its ratio to its baseline (`hand` for functional and Sequential, `hand_sub` for subclassed; goal
<= 1.00, bar <= 1.03 + the A/A noise), the median and range of the per-round ratios, and the
guard's cost. Default `jit_compile` on every backend, and `jit_compile=True` on TensorFlow (XLA);
on JAX "auto" already is XLA, and torch's `jit_compile=True` (torch.compile, ~50 s a model) runs
only when asked for with `--jit true`.

Run: `KERAS_BACKEND=jax python benchmarks/overhead.py` (`--quick` for a short run, `--threads 1`
on a shared machine, `--json FILE` for the raw times). `benchmarks/profile_overhead.py` says
where the time goes.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time


def _threads_from_argv():
    """`--threads N` must act before the backend is imported (XLA and TensorFlow read it then)."""
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return None


THREADS = _threads_from_argv()
if THREADS:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                "TF_NUM_INTEROP_THREADS"):
        os.environ[var] = THREADS
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
                               f"{'false' if THREADS == '1' else 'true'} "
                               f"intra_op_parallelism_threads={THREADS}").strip()

import keras  # noqa: E402
import numpy as np
from keras import ops  # noqa: E402

import lossweave as lw  # noqa: E402

if THREADS and keras.backend.backend() == "torch":
    import torch

    torch.set_num_threads(int(THREADS))

SCHEDULE = lw.schedules.linear(0.0, 1e-3, steps=1000)
UNITS, FEATURES, CLASSES = 64, 128, 10


# -- hand-written baselines ------------------------------------------------------------------


class HandObjective:
    """The objective written by hand in `compute_loss`, with the same three `Mean` trackers."""

    def _setup_hand(self):
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


class HandWritten(HandObjective, keras.Model):
    """Functional: `HandWritten(inputs, [probs, layer1])`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_hand()


class HandWrittenNet(HandObjective, keras.Model):
    """Subclassed: `call` returns `(probs, layer1)`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense1, self.dense2, self.head = dense_layers()
        self._setup_hand()

    def call(self, x, training=False):
        layer1 = self.dense1(x)
        return self.head(self.dense2(layer1)), layer1


# -- lossweave --------------------------------------------------------------------------------


class Net(lw.Model):
    """Subclassed lossweave model, the keras.io way: layers in `__init__`, a tap in `call`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense1, self.dense2, self.head = dense_layers()

    def call(self, x, training=False):
        layer1 = lw.tap("layer1", self.dense1(x))
        return self.head(self.dense2(layer1))


def dense_layers():
    return (
        keras.layers.Dense(UNITS, activation="relu"),
        keras.layers.Dense(UNITS, activation="relu"),
        keras.layers.Dense(CLASSES, activation="softmax"),
    )


def functional_graph():
    inputs = keras.Input((FEATURES,))
    dense1, dense2, head = dense_layers()
    layer1 = dense1(inputs)
    return inputs, layer1, head(dense2(layer1))


def objective():
    return lw.Objective({
        "mse": "mean_squared_error",
        "activity": lw.Term(lambda layer1: ops.mean(ops.square(layer1)), weight=SCHEDULE),
    })


def build(path, jit_compile):
    """A compiled model of one path (see the module docstring)."""
    guarded = not path.endswith("_noguard")
    style = path.removesuffix("_noguard")
    if style in ("hand", "hand_aa"):
        inputs, layer1, probs = functional_graph()
        model = HandWritten(inputs, [probs, layer1])
    elif style == "hand_sub":
        model = HandWrittenNet()
    elif style == "functional":
        inputs, layer1, probs = functional_graph()
        model = lw.Model(inputs, probs, taps={"layer1": layer1})
    elif style == "sequential":
        dense1, dense2, head = dense_layers()
        model = lw.Sequential([keras.Input((FEATURES,)), dense1, lw.Tap("layer1"), dense2, head])
    elif style == "subclassed":
        model = Net()
    else:
        raise ValueError(f"unknown path {path!r}")
    if style.startswith("hand"):
        model.compile(optimizer="adam", jit_compile=jit_compile)
    else:
        model.compile(optimizer="adam", jit_compile=jit_compile, loss=objective(),
                      check_finite=guarded)
    return model


#: Each path and the hand-written model it is compared with.
BASELINES = {
    "hand_aa": "hand",
    "functional": "hand",
    "functional_noguard": "hand",
    "sequential": "hand",
    "sequential_noguard": "hand",
    "hand_sub": "hand",
    "subclassed": "hand_sub",
    "subclassed_noguard": "hand_sub",
}
PATHS = ["hand", *BASELINES]


class EpochClock(keras.callbacks.Callback):
    """Times the epoch loop: from `on_epoch_begin` to `on_epoch_end` (after Keras has waited for
    the asynchronous batch callbacks, and after reading the epoch's loss, so the device is done)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        float(logs["loss"])
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start


MEASURES = {
    "epoch": "wall time of the epoch loop",
    "cpu": "CPU time of the epoch loop (all threads)",
    "fit": "wall time of the whole fit() call, setup included",
}


def seconds_per_step(model, x, y, batch_size):
    """`{"epoch", "cpu", "fit"}` seconds per step of one `fit(epochs=1)`: the epoch loop's wall
    time, its CPU time (every thread of the process), the whole `fit` call's wall time."""
    clock = EpochClock()
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False, callbacks=[clock])
    wall = time.perf_counter() - start
    steps = len(x) // batch_size
    return {"epoch": clock.seconds / steps, "cpu": clock.cpu_seconds / steps, "fit": wall / steps}


def run(paths, jit_compile, x, y, batch_size, rounds):
    """`{"epoch"|"cpu"|"fit": {path: [seconds per step, one per round]}}`, epochs alternated, the
    order rotated by one model a round."""
    models = {path: build(path, jit_compile) for path in paths}
    for model in models.values():  # trace / compile, and one untimed epoch
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    times = {what: {path: [] for path in paths} for what in MEASURES}
    order = list(paths)
    for _ in range(rounds):
        for path in order:
            for what, seconds in seconds_per_step(models[path], x, y, batch_size).items():
                times[what][path].append(seconds)
        order = order[1:] + order[:1]
    return times


def summarize(times):
    """Rows of (path, baseline, median s/step, ratio of medians, median and range of round ratios)."""
    rows = []
    for path, series in times.items():
        base = BASELINES.get(path)
        median = statistics.median(series)
        if base is None or base not in times:
            rows.append((path, None, median, None, None, None))
            continue
        per_round = [a / b for a, b in zip(series, times[base])]
        rows.append((path, base, median, median / statistics.median(times[base]),
                     statistics.median(per_round), (min(per_round), max(per_round))))
    return rows


def report(times, jit_compile):
    for what, label in MEASURES.items():
        print(f"\njit_compile={jit_compile}, per step: {label}")
        print(f"{'path':20} {'ms/step':>8} {'vs':>9} {'ratio':>6}   round ratios: median (range)")
        for path, base, median, ratio, per_round, spread in summarize(times[what]):
            if base is None:
                print(f"{path:20} {median * 1e3:8.3f}")
                continue
            print(f"{path:20} {median * 1e3:8.3f} {base:>9} {ratio:6.3f}"
                  f"   {per_round:6.3f} ({spread[0]:.3f}-{spread[1]:.3f})")
        med = {path: statistics.median(series) for path, series in times[what].items()}
        for style in ("functional", "sequential", "subclassed"):
            if style in med and f"{style}_noguard" in med:
                print(f"NaN guard, {style}: {med[style] / med[style + '_noguard'] - 1:+.1%}")


def default_jit(backend):
    return {"tensorflow": ["auto", "true"], "jax": ["auto"], "torch": ["auto"]}[backend]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="short run: 3 rounds of 32 steps, default jit_compile only")
    parser.add_argument("--steps", type=int, default=128, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7, help="alternated epochs per model")
    parser.add_argument("--jit", nargs="+", choices=["auto", "true"],
                        help="jit_compile settings (default: auto, and true on TensorFlow)")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=PATHS)
    parser.add_argument("--threads", help="threads of the backend's CPU kernels (default: the "
                        "backend's own); 1 steadies a small model on a shared machine")
    parser.add_argument("--json", help="write the raw seconds per step here")
    args = parser.parse_args()
    backend = keras.backend.backend()
    jits = args.jit or default_jit(backend)
    if args.quick:
        args.steps, args.rounds, jits = 32, 3, args.jit or ["auto"]
    paths = [p for p in PATHS if p in args.paths]  # baselines first
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, CLASSES, n), CLASSES).astype("float32")
    print(f"backend={backend} keras={keras.__version__} batch={args.batch_size} "
          f"steps/epoch={args.steps} rounds={args.rounds} threads={args.threads or 'default'} "
          f"python={platform.python_version()}")
    results = {}
    for jit in jits:
        jit_compile = {"auto": "auto", "true": True}[jit]
        times = run(paths, jit_compile, x, y, args.batch_size, args.rounds)
        report(times, jit_compile)
        results[jit] = times
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": backend, "batch_size": args.batch_size, "steps": args.steps,
                       "rounds": args.rounds, "threads": args.threads, "seconds_per_step": results}, f, indent=1)


if __name__ == "__main__":
    main()
