"""Forward+backward time of sketch-rnn's recurrent layers: keras.layers.LSTM against ours.

The two recurrent layers of sketch-rnn at the paper's sizes, on a batch of 100 sequences of
250 steps:

- encoder: `Bidirectional(LSTM(256))` over the stroke-5 input, (100, 250, 5);
- decoder: `LSTM(512, return_sequences=True)` over the strokes concatenated with z (128),
  (100, 250, 133).

Each is timed as a training step (`train_on_batch`: forward, backward, an SGD update; the
update is negligible), built once from `keras.layers.LSTM` and once from
`sketch_rnn.recurrent.LSTM`, in the same process, timed alternately. The step is compiled the
way Keras compiles it by default: `jax.jit` on JAX, `tf.function` on TensorFlow, eager on torch.
Prints the best wall-clock ms per step (and the process CPU ms: with one thread, on a busy
machine, the CPU time is the steadier measure) and the ratio keras / ours. On TensorFlow and JAX
ours is keras.layers.LSTM here (ratio ~1).

`--scaling` times the decoder alone at 50, 100 and 200 steps instead: the time per step of
sequence is flat for an O(T) implementation and grows linearly for an O(T^2) one.

Run: `KERAS_BACKEND=torch python benchmarks/lstm.py` (keras.layers.LSTM at full size on torch
takes ~40 s a step: `--repeats 2` keeps it to a few minutes). One thread: prefix
`OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"`.
"""

import argparse
import os
import sys
import time

# benchmarks/sketch_rnn.py would shadow the sketch_rnn package: import the package, not this folder.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from sketch_rnn.recurrent import LSTM  # noqa: E402

BATCH, ENC, DEC, Z = 100, 256, 512, 128


def encoder(lstm, steps):
    inputs = keras.Input((steps, 5))
    return keras.Model(inputs, keras.layers.Bidirectional(lstm(ENC))(inputs))


def decoder(lstm, steps):
    inputs = keras.Input((steps, 5 + Z))
    return keras.Model(inputs, lstm(DEC, return_sequences=True)(inputs))


def compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=lambda y, p: ops.mean(ops.square(p)))
    return model


def timed_step(model, x, y):
    """Wall-clock and process CPU seconds of one train_on_batch (which returns the loss as a
    number, so the step has finished)."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.train_on_batch(x, y)
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(name, build, steps, features, warmup, repeats):
    """Best-of-`repeats` step times of the keras.layers.LSTM and our model, timed alternately
    (so that a change of machine load hits both), after `warmup` untimed steps each."""
    x = np.random.default_rng(0).normal(size=(BATCH, steps, features)).astype("float32")
    y = np.zeros((BATCH, 1), "float32")
    models = {}
    for lstm in (keras.layers.LSTM, LSTM):
        keras.utils.set_random_seed(0)
        models[lstm] = compiled(build(lstm, steps))
        for _ in range(warmup):
            models[lstm].train_on_batch(x, y)
    times = {lstm: [] for lstm in models}
    for _ in range(repeats):
        for lstm, model in models.items():
            times[lstm].append(timed_step(model, x, y))
    (theirs, theirs_cpu), (ours, ours_cpu) = ([min(column) for column in zip(*t)] for t in times.values())
    print(f"{keras.backend.backend():10s} {name:22s} T={steps:3d}  keras.layers.LSTM {theirs * 1e3:8.0f} ms "
          f"(cpu {theirs_cpu * 1e3:8.0f})   ours {ours * 1e3:6.0f} ms (cpu {ours_cpu * 1e3:6.0f})   "
          f"keras/ours {theirs / ours:6.2f}", flush=True)
    return theirs, ours


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scaling", action="store_true", help="decoder at 50, 100, 200 steps")
    args = parser.parse_args()
    if args.scaling:
        for steps in (50, 100, 200):
            theirs, ours = compare(f"decoder LSTM({DEC})", decoder, steps, 5 + Z, args.warmup, args.repeats)
            print(f"{'':33s} per sequence step: keras {theirs / steps * 1e3:6.1f} ms   ours {ours / steps * 1e3:5.1f} ms")
        return
    enc = compare(f"encoder Bi-LSTM({ENC})", encoder, args.steps, 5, args.warmup, args.repeats)
    dec = compare(f"decoder LSTM({DEC})", decoder, args.steps, 5 + Z, args.warmup, args.repeats)
    theirs, ours = enc[0] + dec[0], enc[1] + dec[1]
    print(f"{keras.backend.backend():10s} {'encoder + decoder':22s} T={args.steps:3d}  keras.layers.LSTM "
          f"{theirs * 1e3:8.0f} ms{'':15s}ours {ours * 1e3:6.0f} ms{'':13s}keras/ours {theirs / ours:6.2f}")


if __name__ == "__main__":
    main()
