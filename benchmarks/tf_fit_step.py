"""Why a TensorFlow training step is slower inside `fit` than in `train_on_batch` (issue 14 item 4).

One sketch-rnn model of the `small` preset, one stream of augmented `aaron_sheep` batches (as
`sketch-rnn train` makes them). Each round times two steps of every variant in turn, after a
first step left out; a variant's number is the median over the rounds of its ratio to the first
variant of the same round (the last variant repeats the first: the A/A pair). The variants:

- `train_on_batch`;
- `fit` fed a generator, as `sketch-rnn train` does (Keras wraps it in `from_generator` +
  `prefetch(AUTOTUNE)`, read in tf.data's own thread);
- `fit` fed one cached batch, `tf.data.Dataset.from_tensors(batch).repeat()`: no Python at all;
- Keras's own compiled step, `multi_step_on_iterator`, called outside `fit` on iterators of
  `from_tensors` and of `from_generator` + `prefetch(AUTOTUNE)` (it is read from the closure of
  `model.train_function`, a Keras internal: this is a probe, not library code).

    KERAS_BACKEND=tensorflow python benchmarks/tf_fit_step.py --rounds 8

Results in RESULTS.md ("`fit` against its own step"): on the 2-core machine, `fit` 1.16-1.18
of `train_on_batch`, the compiled function outside `fit` 1.09-1.17, the A/A pair 1.09.
"""

import argparse
import importlib.util
import itertools
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# benchmarks/sketch_rnn.py would shadow the sketch_rnn package: import the package, not this folder.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from sketch_rnn import presets  # noqa: E402

# benchmarks/sketch_rnn.py (its model, data and timers), by path: its name is the package's.
_spec = importlib.util.spec_from_file_location("sketch_rnn_bench", os.path.join(os.path.dirname(__file__), "sketch_rnn.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        sys.exit("run with KERAS_BACKEND=tensorflow: this probes TensorFlow's fit")
    hps = presets.get("small")
    model = bench.lossweave_model(hps)
    stream = bench.training_stream(hps)
    for _ in range(2):
        model.train_on_batch(*next(stream))
    function = model.train_function
    multi_step_on_iterator = dict(zip(function.__code__.co_freevars, function.__closure__))["multi_step_on_iterator"]
    multi_step_on_iterator = multi_step_on_iterator.cell_contents
    signature = tuple(tf.TensorSpec(a.shape, tf.float32) for a in next(stream))

    def in_fit(dataset, steps):
        times = bench.StepTimes()
        model.fit(dataset, steps_per_epoch=steps, epochs=1, shuffle=False, callbacks=[times], verbose=0)
        return times.seconds[1:]

    def outside_fit(iterator, steps):
        seconds = []
        for _ in range(steps):
            start = time.perf_counter()
            float(multi_step_on_iterator(iterator).get_value()["loss"])
            seconds.append(time.perf_counter() - start)
        return seconds[1:]

    def generated(block):
        return tf.data.Dataset.from_generator(lambda: iter(block), output_signature=signature).prefetch(tf.data.AUTOTUNE)

    variants = {
        "train_on_batch": lambda block: [bench.timed_step(model, *b)[0] for b in block[1:]],
        "fit, a generator (the CLI)": lambda block: in_fit((b for b in block), len(block)),
        "fit, one cached batch": lambda block: in_fit(tf.data.Dataset.from_tensors(block[0]).repeat(), len(block)),
        "outside fit, from_tensors": lambda block: outside_fit(iter(tf.data.Dataset.from_tensors(block[0]).repeat()),
                                                               len(block)),
        "outside fit, from_generator": lambda block: outside_fit(iter(generated(block)), len(block)),
        "train_on_batch (A/A)": lambda block: [bench.timed_step(model, *b)[0] for b in block[1:]],
    }
    for run in variants.values():  # traces each path once
        run(list(itertools.islice(stream, 2)))
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            times[name].append(statistics.median(run(list(itertools.islice(stream, 3)))))
    for name, seconds in times.items():
        paired = bench.paired_ratio(seconds, times["train_on_batch"])
        print(f"{name:30s} s/step: median {statistics.median(seconds):6.3f}  paired ratio to train_on_batch "
              f"{paired:5.3f}  ({args.rounds} rounds)  {bench.load()}", flush=True)


if __name__ == "__main__":
    main()
