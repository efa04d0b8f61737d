"""Training-step time of the sketch-rnn model, and what lossweave costs in it.

All runs use one batch of 100 training sketches of `aaron_sheep.npz` (read from
../shared/data beside the repository, normalised as for training), padded to the full 250 steps, and time single
`train_on_batch` calls (which return the logs as numbers: the step has finished) after warm-up
steps, never whole `fit` calls (but in `infit` and `fit`). The modes:

- `steps`: seconds per training step of `sketch_rnn.model.build_model(preset)` (the paper's
  sizes, `--size paper`, or the issue's small ones, `--size small`). `--xla` compiles with
  `jit_compile=True` (TensorFlow's default is no XLA; JAX always compiles, torch runs eagerly);
  `--precision mixed_bfloat16` runs its recurrent layers in bfloat16; `--dec-model` and
  `--enc-model` pick the cells (`lstm`, `layer_norm`, `hyper`; as `--set dec_model=...`).
- `compare`: the same, for two models timed alternately: the plain Keras 3 port of the issue
  (`keras.layers.LSTM`, a masked `Bidirectional` encoder, the decoder fed `concat([stroke, z])`)
  and `build_model` (`sketch_rnn.recurrent.LSTM`, an unmasked encoder reading each sketch to its
  end, the decoder fed the strokes with `condition=z`).
- `ratio`: training steps per second of the lossweave model against the same network with a
  hand-written `compute_loss` (a `keras.Model` subclass doing the same math with the same
  per-term `Mean` trackers), timed alternately in the same process. Target: >= 0.97.
- `infit`: seconds per training step inside `fit` (from `on_train_batch_begin` to
  `on_train_batch_end`, fed as `sketch-rnn train` feeds it: augmented batches from a generator)
  against `train_on_batch` on the same kind of batches, in blocks of `--repeats` steps alternated
  `--rounds` times in one process, with a second `train_on_batch` block as the A/A pair; the
  median over the rounds of each block's ratio to the first `train_on_batch` block of its round.
- `fit`: the timeline of a short `model.fit` as `sketch-rnn train` runs it (the last training
  batch, the validation pass, the end of training), to see where the time after the last step
  goes.

Prints wall-clock and process CPU seconds (with one thread on a busy machine the CPU time is the
steadier measure; see RESULTS.md). Run, for example:

    KERAS_BACKEND=tensorflow python benchmarks/sketch_rnn.py steps --size paper
    KERAS_BACKEND=jax python benchmarks/sketch_rnn.py ratio --size small
"""

import argparse
import dataclasses
import itertools
import os
import statistics
import sys
import time

# benchmarks/sketch_rnn.py would shadow the sketch_rnn package: import the package, not this folder.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import lossweave as lw  # noqa: E402
from sketch_rnn import data, presets  # noqa: E402
from sketch_rnn import model as sketch_model  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "aaron_sheep.npz")
BATCH = 100


def batch(hps):
    """(x, y) for the first BATCH training sketches, normalised, at the preset's full length."""
    sketches = data.load_npz(DATA, max_len=hps.max_seq_len)
    train = data.normalize(sketches.train, data.scale_factor(sketches.train))
    return data.arrays(train[:BATCH], hps.max_seq_len)


class HandWritten(keras.Model):
    """sketch-rnn's objective written by hand: what a user writes to get the same logs."""

    def __init__(self, hps, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hps = hps
        self.kl_weight = sketch_model.kl_weight(hps)
        self.step = self.add_weight(shape=(), dtype="int32", initializer="zeros", trainable=False)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("offset", "pen", "kl", "kl_weight")}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        head, z_mean, z_log_var = y_pred
        mdn, m = lw.losses.bivariate_mdn_nll, self.hps.num_mixture
        values = {
            "offset": ops.mean(mdn(y, head, m, part="offset")),
            "pen": ops.mean(mdn(y, head, m, part="pen", training=training)),
            "kl": lw.losses.gaussian_kl(z_mean, z_log_var, free_bits=self.hps.kl_tolerance),
            "kl_weight": self.kl_weight(self.step.value),
        }
        size = ops.shape(x)[0]
        for name, value in values.items():
            self.trackers[name].update_state(value, sample_weight=size)
        if training:
            self.step.assign_add(1)
        return values["offset"] + values["pen"] + values["kl_weight"] * values["kl"]


def lossweave_model(hps, jit_compile="auto"):
    keras.utils.set_random_seed(0)
    model = sketch_model.build_model(hps, compile=False)
    model.compile(optimizer=sketch_model.optimizer(hps), loss=sketch_model.objective(hps), jit_compile=jit_compile)
    return model


def hand_written_model(hps, jit_compile="auto"):
    keras.utils.set_random_seed(0)
    graph = sketch_model.build_model(hps, compile=False)  # the same layers, initialised alike
    outputs = [graph.get_layer(name).output for name in ("mdn_head", "z_mean", "z_log_var")]
    model = HandWritten(hps, graph.inputs, outputs)
    model.compile(optimizer=sketch_model.optimizer(hps), jit_compile=jit_compile)
    return model


def _decoder_and_head(hps, z, recurrent, **decoder_inputs):
    """sketch-rnn's decoder from z's initial state, and its mixture head, as `build_model` has them."""
    state = keras.layers.Dense(
        2 * hps.dec_rnn_size, activation="tanh",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001), name="init_state")(z)
    decoder = recurrent(hps.dec_rnn_size, return_sequences=True, recurrent_dropout=hps.recurrent_dropout, name="decoder")
    decoded = decoder(initial_state=ops.split(state, 2, axis=-1), **decoder_inputs)
    return keras.layers.Dense(6 * hps.num_mixture + 3, name="mdn_head")(decoded)


def plain_keras_model(hps):
    """The plain Keras 3 port the issue's reference numbers come from: `keras.layers.LSTM`,
    `Bidirectional` with the padding masked, the decoder fed `concat([stroke, z])`."""
    keras.utils.set_random_seed(0)
    strokes = keras.Input((hps.max_seq_len + 1, 5), name="strokes")
    sketch = strokes[:, 1:]
    encoder = keras.layers.Bidirectional(
        keras.layers.LSTM(hps.enc_rnn_size, recurrent_dropout=hps.recurrent_dropout), name="encoder")
    encoded = encoder(sketch, mask=ops.not_equal(sketch[..., 4], 1.0))
    z_mean = keras.layers.Dense(hps.z_size, name="z_mean")(encoded)
    z_log_var = keras.layers.Dense(hps.z_size, name="z_log_var")(encoded)
    z = sketch_model.Sampling(name="z")([z_mean, z_log_var])
    repeated = keras.layers.RepeatVector(hps.max_seq_len)(z)
    head = _decoder_and_head(hps, z, keras.layers.LSTM,
                             sequences=ops.concatenate([strokes[:, :-1], repeated], axis=-1))
    model = lw.Model(strokes, head, taps={"z_mean": z_mean, "z_log_var": z_log_var})
    model.compile(optimizer=sketch_model.optimizer(hps), loss=sketch_model.objective(hps))
    return model


def timed_step(model, x, y):
    wall, cpu = time.perf_counter(), time.process_time()
    logs = model.train_on_batch(x, y, return_dict=True)
    return time.perf_counter() - wall, time.process_time() - cpu, logs


def load():
    return f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""


def steps(args, hps, x, y):
    model = lossweave_model(hps, jit_compile=True if args.xla else "auto")
    start = time.perf_counter()
    for _ in range(args.warmup):
        timed_step(model, x, y)
    warmup = time.perf_counter() - start
    times = [timed_step(model, x, y)[:2] for _ in range(args.repeats)]
    walls, cpus = zip(*times)
    name = keras.backend.backend() + (" XLA" if args.xla else "") + (" bf16" if args.precision != "float32" else "")
    if (hps.dec_model, hps.enc_model) != ("lstm", "lstm"):
        name += f" dec={hps.dec_model} enc={hps.enc_model}"
    print(f"{name:14s} {args.size:5s} dropout {hps.recurrent_dropout:g}  s/step: best {min(walls):6.3f}  median {statistics.median(walls):6.3f}  "
          f"(cpu best {min(cpus):6.3f})   warm-up {warmup:5.1f} s for {args.warmup}   "
          f"[{', '.join(f'{w:.2f}' for w in walls)}]  {load()}", flush=True)


def ratio(args, hps, x, y):
    models = {"lossweave": lossweave_model(hps), "hand-written": hand_written_model(hps)}
    # The same weights and batch: the same loss, where nothing is random (no z sampling, no dropout).
    losses = {name: model.test_on_batch(x, y, return_dict=True) for name, model in models.items()}
    for model in models.values():
        for _ in range(args.warmup):
            timed_step(model, x, y)
    times = {name: [] for name in models}
    for _ in range(args.repeats):  # alternately, so that a change of load hits both
        for name, model in models.items():
            times[name].append(timed_step(model, x, y)[0])
    ours, theirs = (statistics.median(t) for t in times.values())
    print(f"{keras.backend.backend():10s} {args.size:5s}  lossweave {ours:6.3f} s/step  hand-written {theirs:6.3f} "
          f"s/step  steps/s ratio lossweave / hand-written {theirs / ours:.3f}   test losses "
          f"{losses['lossweave']['loss']:.6f} / {losses['hand-written']['loss']:.6f}   {load()}", flush=True)


def compare(args, hps, x, y):
    models = {
        "plain Keras 3": plain_keras_model(hps),
        "sketch_rnn.build_model": lossweave_model(hps),
    }
    for model in models.values():
        for _ in range(args.warmup):
            timed_step(model, x, y)
    times = {name: [] for name in models}
    for _ in range(args.repeats):  # alternately, so that a change of load hits all alike
        for name, model in models.items():
            times[name].append(timed_step(model, x, y)[:2])
    plain = min(wall for wall, _ in times["plain Keras 3"])
    for name, t in times.items():
        walls, cpus = zip(*t)
        print(f"{keras.backend.backend():10s} {args.size:5s} {name:24s} s/step: best {min(walls):6.3f}  median "
              f"{statistics.median(walls):6.3f}  (cpu best {min(cpus):6.3f})  plain / this {plain / min(walls):5.2f}  "
              f"{load()}", flush=True)


class Timeline(keras.callbacks.Callback):
    """Prints seconds since the start of `fit` at each callback hook that ends a phase."""

    def __init__(self):
        super().__init__()
        self.start = time.perf_counter()

    def _mark(self, what):
        print(f"  {time.perf_counter() - self.start:7.2f} s  {what}", flush=True)

    def on_train_batch_end(self, batch, logs=None):
        self._mark(f"train batch {batch} done")

    def on_test_begin(self, logs=None):
        self._mark("validation begins")

    def on_test_batch_end(self, batch, logs=None):
        self._mark(f"validation batch {batch} done")

    def on_epoch_end(self, epoch, logs=None):
        self._mark(f"epoch {epoch} ends")

    def on_train_end(self, logs=None):
        self._mark("training ends")


def fit(args, hps, x, y):
    """A short fit as `sketch-rnn train` runs it: augmented batches from a generator, validation
    on `--validation-batches` batches after the epoch, `verbose=2`; prints the timeline."""
    model = lossweave_model(hps, jit_compile=True if args.xla else "auto")
    sketches = data.load_npz(DATA, max_len=hps.max_seq_len)
    scale = data.scale_factor(sketches.train)
    batches = data.StrokeBatches(data.normalize(sketches.train, scale), BATCH, hps.max_seq_len,
                                 np.random.default_rng(0), augment=True)
    if args.endless:  # an endless generator: tf.data's prefetch may keep pulling after the last step
        stream = batches.forever()
    else:  # exactly the batches fit takes
        stream = (b for b, _ in zip(batches.forever(), range(args.repeats)))
    validation = None
    if args.validation_batches:
        valid = data.normalize(sketches.valid[: args.validation_batches * BATCH], scale)
        validation = data.arrays(valid, hps.max_seq_len)
    print(f"{keras.backend.backend()} {args.size}: fit, {args.repeats} steps from "
          f"{'an endless' if args.endless else 'a finite'} generator, "
          f"{args.validation_batches} validation batches, verbose=2", flush=True)
    timeline = Timeline()
    model.fit(stream, steps_per_epoch=args.repeats, epochs=1, validation_data=validation,
              validation_batch_size=BATCH, shuffle=False, callbacks=[timeline], verbose=2)
    timeline._mark("fit returned")
    del stream
    timeline._mark("generator released")


class StepTimes(keras.callbacks.Callback):
    """Seconds of each training step of `fit`, from its batch's begin to its end."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self.begun = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self.begun)


def training_stream(hps):
    """Endless `(x, y)` batches of `aaron_sheep`'s training sketches as `sketch-rnn train` makes
    them: normalised, shuffled, augmented, padded to the preset's length."""
    sketches = data.load_npz(DATA, max_len=hps.max_seq_len)
    batches = data.StrokeBatches(data.normalize(sketches.train, data.scale_factor(sketches.train)), BATCH,
                                 hps.max_seq_len, np.random.default_rng(0), augment=True)
    return batches.from_step(0, seed=0)


def paired_ratio(seconds, base):
    """The median over the rounds of each round's `seconds` over its `base`."""
    return statistics.median(s / b for s, b in zip(seconds, base))


def infit(args, hps, x, y):
    model = lossweave_model(hps)
    stream = training_stream(hps)
    for _ in range(args.warmup):
        model.train_on_batch(*next(stream))
    times = {"fit": [], "train_on_batch A": [], "train_on_batch A'": []}
    for _ in range(args.rounds):  # a block of each in turn: a change of load hits the three alike
        for name, seconds in times.items():
            block = list(itertools.islice(stream, args.repeats + 1))
            if name == "fit":  # the CLI's call; its first step (a new iterator) left out
                steps = StepTimes()
                model.fit((b for b in block), steps_per_epoch=len(block), epochs=1, shuffle=False,
                          callbacks=[steps], verbose=0)
                seconds.append(statistics.median(steps.seconds[1:]))
            else:
                seconds.append(statistics.median(timed_step(model, *b)[0] for b in block[1:]))
    for name, seconds in times.items():
        paired = paired_ratio(seconds, times["train_on_batch A"])
        print(f"{keras.backend.backend():10s} {args.size:5s} {name:18s} s/step: median {statistics.median(seconds):6.3f}  "
              f"paired ratio to train_on_batch A {paired:5.3f}   ({args.rounds} blocks of {args.repeats})  {load()}",
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["steps", "compare", "ratio", "infit", "fit"])
    parser.add_argument("--size", choices=["paper", "small"], default="small")
    parser.add_argument("--xla", action="store_true", help="jit_compile=True (for TensorFlow)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="infit mode: alternations")
    parser.add_argument("--validation-batches", type=int, default=5, help="fit mode (the CLI's cap: 5)")
    parser.add_argument("--endless", action="store_true", help="fit mode: an endless batch generator")
    parser.add_argument("--recurrent-dropout", type=float, default=None, help="override the preset's")
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32",
                        help="build_model's precision (the plain Keras 3 port stays float32)")
    parser.add_argument("--dec-model", choices=sketch_model.DEC_MODELS, default="lstm", help="build_model's decoder cell")
    parser.add_argument("--enc-model", choices=sketch_model.ENC_MODELS, default="lstm", help="build_model's encoder cell")
    args = parser.parse_args()
    hps = dataclasses.replace(presets.get(args.size), precision=args.precision, dec_model=args.dec_model,
                              enc_model=args.enc_model)
    if args.recurrent_dropout is not None:
        hps = dataclasses.replace(hps, recurrent_dropout=args.recurrent_dropout)
    x, y = batch(hps)
    {"steps": steps, "compare": compare, "ratio": ratio, "infit": infit, "fit": fit}[args.mode](args, hps, x, y)


if __name__ == "__main__":
    main()
