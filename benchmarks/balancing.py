"""Term balancing where the weights matter, and what per-term gradients cost.

1. The GradNorm paper's synthetic regression (Chen et al. 2018, sec. 5.1), scaled down for a CPU:
   T tasks `y_i = sigma_i tanh((B + eps_i) x)` (B, eps_i Gaussian, shared across seeds' draws of
   x), a shared ReLU trunk with one linear head per task, squared error per task on the raw
   scale, so that the large-sigma tasks dominate an equally weighted sum. Each task's test error
   is reported relative to a single-task model of the same architecture trained the same number
   of steps (1.0: as good as training that task alone); equal weights against each balancer,
   over several seeds.
2. The cost of a training step with `diagnostics=gradients(every=1)`, `every=100`, `gradnorm()`
   and `pcgrad()`, as ratios to the plain step of the same model in the same run.

    KERAS_BACKEND=jax python benchmarks/balancing.py [--seeds 3] [--epochs 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import lossweave as lw  # noqa: E402

SIGMAS = (1.0, 3.0, 10.0, 30.0)
INPUTS, OUTPUTS, UNITS = 50, 10, 64


def tasks(seed, n_train=2000, n_test=1000):
    """Inputs and each task's targets (the task structure B, eps_i fixed; the data from `seed`)."""
    structure = np.random.default_rng(1234)
    base = structure.normal(0.0, np.sqrt(10.0), (INPUTS, OUTPUTS))
    own = [structure.normal(0.0, np.sqrt(3.5), (INPUTS, OUTPUTS)) for _ in SIGMAS]
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (n_train + n_test, INPUTS)).astype("float32") / np.sqrt(INPUTS)
    ys = [sigma * np.tanh(x @ (base + e)) for sigma, e in zip(SIGMAS, own)]
    y = np.concatenate(ys, axis=1).astype("float32")
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def task_error(index):
    def error(y_true, y_pred):
        part = slice(index * OUTPUTS, (index + 1) * OUTPUTS)
        return ops.mean(ops.square(y_pred[:, part] - y_true[:, part]), axis=-1)

    return error


def network(heads):
    inputs = keras.Input((INPUTS,))
    hidden = inputs
    for _ in range(3):
        hidden = keras.layers.Dense(UNITS, activation="relu")(hidden)
    outputs = keras.layers.Concatenate()([keras.layers.Dense(OUTPUTS)(hidden) for _ in range(heads)])
    return lw.Model(inputs, outputs)


def train(x, y, heads, balance, epochs, seed):
    keras.utils.set_random_seed(seed)
    model = network(heads)
    terms = {f"task{i}": task_error(i) for i in range(heads)}
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=lw.Objective(terms, balance=balance))
    model.fit(x, y, batch_size=100, epochs=epochs, verbose=0)
    return model


def test_errors(model, x, y, heads):
    prediction = model.predict(x, batch_size=1000, verbose=0)
    return [float(np.mean((prediction[:, i * OUTPUTS:(i + 1) * OUTPUTS]
                           - y[:, i * OUTPUTS:(i + 1) * OUTPUTS]) ** 2)) for i in range(heads)]


BALANCERS = {
    "equal weights": lambda: None,
    "uncertainty": lw.balancers.uncertainty,
    "dwa": lw.balancers.dwa,
    "gradnorm": lw.balancers.gradnorm,
    "pcgrad": lw.balancers.pcgrad,
}


def quality(seeds, epochs):
    ratios = {name: [] for name in BALANCERS}  # per seed: each task's error / single-task error
    for seed in range(seeds):
        (x, y), (xt, yt) = tasks(seed)
        single = []
        for i in range(len(SIGMAS)):
            part = slice(i * OUTPUTS, (i + 1) * OUTPUTS)
            model = train(x, y[:, part], 1, None, epochs, seed)
            single += test_errors(model, xt, yt[:, part], 1)
        for name, balance in BALANCERS.items():
            errors = test_errors(train(x, y, len(SIGMAS), balance(), epochs, seed), xt, yt, len(SIGMAS))
            ratios[name].append([e / s for e, s in zip(errors, single)])
        print(f"seed {seed} done", flush=True)
    header = " | ".join(f"sigma={s:g}" for s in SIGMAS)
    print(f"\n| weighting | {header} | geometric mean |")
    print("|---" * (len(SIGMAS) + 2) + "|")
    for name, runs in ratios.items():
        runs = np.asarray(runs)  # (seeds, tasks)
        cells = [f"{m:.2f} ± {s:.2f}" for m, s in zip(runs.mean(0), runs.std(0))]
        geometric = np.exp(np.log(runs).mean(1))
        print(f"| {name} | {' | '.join(cells)} | {geometric.mean():.2f} ± {geometric.std():.2f} |")


def step_cost(repeats, steps):
    (x, y), _ = tasks(0, n_train=100 * steps, n_test=0)
    configs = {
        "plain": ({}, None),
        "diagnostics every=1": ({"diagnostics": lw.diagnostics.gradients(every=1)}, None),
        "diagnostics every=100": ({"diagnostics": lw.diagnostics.gradients(every=100)}, None),
        "gradnorm": ({}, lw.balancers.gradnorm),
        "pcgrad": ({}, lw.balancers.pcgrad),
    }
    models = {}
    for name, (kwargs, balance) in configs.items():
        keras.utils.set_random_seed(0)
        model = network(len(SIGMAS))
        terms = {f"task{i}": task_error(i) for i in range(len(SIGMAS))}
        model.compile(optimizer="adam", loss=lw.Objective(terms, balance=balance and balance()),
                      **kwargs)
        model.fit(x[:200], y[:200], batch_size=100, epochs=1, verbose=0)  # compiles the step
        models[name] = model
    times = {name: [] for name in configs}
    for _ in range(repeats):  # alternated, so that load from other work spreads over all
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=100, epochs=1, verbose=0)
            times[name].append((time.perf_counter() - start) / steps)
    plain = statistics.median(times["plain"])
    print(f"\n| step ({keras.backend.backend()}) | ms/step (median of {repeats}) | ratio to plain |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {1e3 * median:.2f} | {median / plain:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--only", choices=("quality", "cost"))
    args = parser.parse_args()
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, tasks sigma={SIGMAS}")
    if args.only != "cost":
        quality(args.seeds, args.epochs)
    if args.only != "quality":
        step_cost(args.repeats, args.steps)


if __name__ == "__main__":
    main()
