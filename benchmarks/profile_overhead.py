"""Where lossweave's extra time per training step goes, against the hand-written model.

Companion of `benchmarks/overhead.py` (same models, same data, same `--threads`). On a shared
machine a median of epoch times cannot resolve a few percent, so this script leans on what noise
does not move, and on short pieces timed many times:

- `ops`: the work of one step, counted. TensorFlow: the ops of the traced train step's graph;
  JAX: the equations of its jaxpr and the leaves of the state passed to each call; torch: the
  aten ops one eager step dispatches and the Python function calls it makes (cProfile's count).
- `parts`: torch (eager), each piece of the step on its own (forward pass, `compute_loss`,
  `compute_metrics`, and inside lossweave's `compute_loss` each of its calls), with its aten
  ops, Python calls and CPU time (`--quantile` of `--repeats` interleaved runs of `--calls`
  calls). Every backend: the NaN guard's batch check and
  Keras's dispatch of batch callbacks, with and without lossweave's callbacks.
- `step`: the whole training step without `fit`'s loop (TensorFlow: the `tf.function` on an
  iterator; JAX: the jitted step; torch: the eager step), best of runs, interleaved, and the
  paired median ratio.
- `pyprofile`: torch, cProfile of the lossweave functions in one eager step.

The fixes this profile proposed are in `src/` now (`benchmarks/RESULTS.md`, "After the fixes");
the copies of them it once patched in at run time are gone with them.

Run: `KERAS_BACKEND=torch python benchmarks/profile_overhead.py --threads 1 ops parts step`.
"""

import argparse
import collections
import contextlib
import cProfile
import pstats
import statistics
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])  # benchmarks/, for `overhead`

import overhead  # noqa: E402  (reads --threads before the backend is imported)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import lossweave as lw  # noqa: E402
from lossweave import model as lw_model  # noqa: E402
from lossweave import step as lw_step  # noqa: E402
from lossweave import taps as lw_taps  # noqa: E402
from lossweave.guard import NonFiniteGuard  # noqa: E402

BACKEND = keras.backend.backend()
PATHS = ["hand", "hand_aa", "functional", "sequential", "hand_sub", "subclassed"]


def data(steps, batch_size):
    rng = np.random.default_rng(0)
    n = steps * batch_size
    x = rng.normal(size=(n, overhead.FEATURES)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, overhead.CLASSES, n), overhead.CLASSES)
    return x, y.astype("float32")


def built(paths, x, y, batch_size, jit_compile="auto"):
    models = {path: overhead.build(path, jit_compile) for path in paths}
    for model in models.values():
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    return models


#: torch runs an eager step in the calling thread (one kernel thread): its CPU time is the
#: step's work, whatever else the machine runs. TensorFlow and JAX compute in threads of
#: their own, so they are timed by the wall clock.
CLOCK = time.thread_time if BACKEND == "torch" else time.perf_counter


def samples(fns, calls, repeats):
    """`{name: [seconds per call, one per run]}` of each `fn()`, the fns interleaved run by run."""
    runs = {name: [] for name in fns}
    for _ in range(repeats):
        for name, call in fns.items():
            call()  # warm
            start = CLOCK()
            for _ in range(calls):
                call()
            runs[name].append((CLOCK() - start) / calls)
    return runs


QUANTILE = 0.1


def low_percentile(series, q=0.1):
    """The `q` quantile: robust to the runs other jobs slowed down, less jumpy than the min."""
    ordered = sorted(series)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def best_of(fns, calls, repeats):
    """`{name: best seconds per call}` (the run the other jobs disturbed least)."""
    return {name: min(runs) for name, runs in samples(fns, calls, repeats).items()}


def paired(runs, base):
    """Median over runs of each fn's time / `base`'s time in the same run (drift cancels)."""
    return {name: statistics.median(a / b for a, b in zip(series, runs[base]))
            for name, series in runs.items()}


def print_times(title, times, base=None, ratios=None):
    print(f"\n{title}")
    for name, seconds in times.items():
        extra = ""
        if base is not None and name != base:
            extra = f"  {seconds / times[base]:.3f}x  {(seconds - times[base]) * 1e6:+8.1f} us"
            if ratios is not None:
                extra += f"  (paired median {ratios[name]:.3f}x)"
        print(f"  {name:42} {seconds * 1e6:9.1f} us{extra}")


# -- the step alone, per backend ------------------------------------------------------------


def batch_of(x, y, batch_size):
    return ops.convert_to_tensor(x[:batch_size]), ops.convert_to_tensor(y[:batch_size])


def step_function(model, x, y, batch_size):
    """A callable running one compiled training step of `model` on one fixed batch."""
    xb, yb = batch_of(x, y, batch_size)
    if BACKEND == "torch":
        model.train()
        return lambda: model.train_function([(xb, yb)])
    if BACKEND == "tensorflow":
        import tensorflow as tf

        iterator = iter(tf.data.Dataset.from_tensors((xb, yb)).repeat())
        function = model.train_function
        return lambda: function(iterator)
    import jax

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    step = jax.jit(model.train_step)
    holder = [state]

    def run():
        logs, holder[0] = step(holder[0], (xb, yb))
        jax.block_until_ready(logs)

    return run


# -- ops: the work counted ------------------------------------------------------------------


def count_ops(models, x, y, batch_size):
    print(f"\nWork per training step ({BACKEND})")
    for path, model in models.items():
        if BACKEND == "tensorflow":
            import tensorflow as tf

            xb, yb = batch_of(x, y, batch_size)
            graph = tf.function(model.train_step).get_concrete_function((xb, yb)).graph
            kinds = collections.Counter(op.type for op in graph.get_operations())
            print(f"  {path:12} {sum(kinds.values()):5d} graph ops  {dict(kinds.most_common(12))}")
        elif BACKEND == "jax":
            import jax

            xb, yb = batch_of(x, y, batch_size)
            state = (
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
                [v.value for v in model.optimizer.variables],
                [v.value for v in model.metrics_variables],
            )
            jaxpr = jax.make_jaxpr(model.train_step)(state, (xb, yb))
            kinds = collections.Counter(_primitives(jaxpr.jaxpr))
            leaves = len(jax.tree_util.tree_leaves(state))
            print(f"  {path:12} {sum(kinds.values()):5d} jaxpr eqns, {leaves} state leaves  "
                  f"{dict(kinds.most_common(10))}")
        else:
            aten, calls = torch_counts(model, x, y, batch_size)
            print(f"  {path:12} {sum(aten.values()):5d} aten ops, {calls:6d} Python calls  "
                  f"{dict(aten.most_common(10))}")


def _primitives(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn.primitive.name
        for sub in eqn.params.values():
            inner = getattr(sub, "jaxpr", None)
            if inner is not None:
                yield from _primitives(getattr(inner, "jaxpr", inner))


def torch_counts(model, x, y, batch_size):
    """(aten ops by name, Python function calls) of one eager training step."""
    run = step_function(model, x, y, batch_size)
    run()
    return count_calls(run)


def count_calls(run):
    """(aten ops by name dispatched on this thread, Python function calls) of one `run()`."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[str(func.overloadpacket.__name__)] += 1
            return func(*args, **(kwargs or {}))

    counter = Count()
    with counter:
        run()
    profile = cProfile.Profile()
    profile.enable()
    run()
    profile.disable()
    return counter.ops, pstats.Stats(profile).total_calls


def python_calls_by_file(model, x, y, batch_size, top=25):
    """cProfile of a few eager steps: the lossweave functions and their own (tottime) share."""
    run = step_function(model, x, y, batch_size)
    run()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(50):
        run()
    profile.disable()
    stats = pstats.Stats(profile)
    rows = []
    for (file, line, name), (cc, nc, tt, ct, _) in stats.stats.items():
        if "lossweave" in file:
            rows.append((ct / 50, nc / 50, f"{file.rsplit('/', 1)[-1]}:{line}({name})"))
    rows.sort(reverse=True)
    print("\n  lossweave functions in one eager step (cProfile, cumulative; inflated by profiling)")
    for ct, nc, where in rows[:top]:
        print(f"    {where:55} {nc:5.1f} calls  {ct * 1e6:8.1f} us")


# -- parts (torch eager) --------------------------------------------------------------------


def torch_parts(models, x, y, batch_size, calls, repeats):
    """Each piece of the eager step on its own: aten ops, Python calls, CPU time (`QUANTILE` of
    `repeats` interleaved runs of `calls` calls)."""
    xb, yb = batch_of(x, y, batch_size)
    fns = {}
    for path, model in models.items():
        model.train()
        lossweave = isinstance(model, lw.Model)
        stepping = (lambda m=model: lw_taps.stepping(m, training=True)) if lossweave else (
            contextlib.nullcontext)

        def forward(model=model, stepping=stepping):
            with stepping():
                return model(xb, training=True)

        y_pred = forward()
        y_pred_detached = keras.tree.map_structure(lambda t: t.detach(), y_pred)
        pieces = {
            "forward": forward,
            "compute_loss": lambda m=model, p=y_pred_detached: m.compute_loss(
                xb, yb, p, None, training=True),
            "compute_metrics": lambda m=model, p=y_pred_detached, s=stepping: _in(
                s, m.compute_metrics, xb, yb, p),
        }
        for piece, fn in pieces.items():
            fns[f"{path}: {piece}"] = fn
        if lossweave:
            tensors = lw_step.step_tensors(xb, yb, y_pred_detached.outputs, y_pred_detached.taps,
                                           None, True)
            objective, trackers = model._lw.objective, model._lw.trackers
            _, logged = objective.compute(tensors)
            if path == "functional":
                fns[f"{path}:   _tapped (2 ops.copy)"] = (
                    lambda m=model, o=y_pred.outputs: m._tapped(o, {}))
                fns[f"{path}:   step_tensors"] = lambda p=y_pred_detached: lw_step.step_tensors(
                    xb, yb, p.outputs, p.taps, None, True)
                fns[f"{path}:   Objective.compute"] = lambda o=objective, t=tensors: o.compute(t)
                for name, term in objective.terms.items():
                    fns[f"{path}:     Term.value {name}"] = (
                        lambda term=term, t=tensors: term.value(t))
                    fns[f"{path}:     weight {name}"] = (
                        lambda term=term, t=tensors: term.weight(t["step"]))
                fns[f"{path}:   TermTracker.update"] = (
                    lambda tr=trackers, lg=logged, t=tensors: tr.update(lg, t))
                fns[f"{path}:   model.losses"] = lambda m=model: m.losses
                fns[f"{path}:   get_metrics_result"] = model.get_metrics_result
                fns[f"{path}:   TermTracker.result"] = trackers.result
        elif path == "hand":
            probs, layer1 = y_pred_detached
            fns[f"{path}:   mse + mean"] = lambda: ops.mean(
                keras.losses.mean_squared_error(yb, probs))
            fns[f"{path}:   3 Mean.update_state"] = lambda m=model: (
                m.mse_tracker.update_state(ops.mean(probs), sample_weight=64),
                m.activity_tracker.update_state(ops.mean(probs), sample_weight=64),
                m.weight_tracker.update_state(ops.mean(probs), sample_weight=64))
            fns[f"{path}:   get_metrics_result"] = model.get_metrics_result
    counts = {name: count_calls(fn) for name, fn in fns.items()}
    runs = samples(fns, calls, repeats)
    times = {name: low_percentile(series, QUANTILE) for name, series in runs.items()}
    print(f"\nPieces of one eager step (torch): aten ops, Python calls, CPU time ({QUANTILE:.0%} "
          f"quantile of {repeats} interleaved runs of {calls} calls)")
    for name, seconds in times.items():
        aten, py = counts[name]
        print(f"  {name:55} {sum(aten.values()):4d} ops {py:5d} calls {seconds * 1e6:8.1f} us")
    print("  extra over hand (subclassed: over hand_sub), ops / calls / us:")
    for piece in ("forward", "compute_loss", "compute_metrics"):
        cells = []
        for path in models:
            if path in ("hand", "hand_sub"):
                continue
            base = "hand_sub" if path == "subclassed" else "hand"
            a, b = f"{path}: {piece}", f"{base}: {piece}"
            cells.append(f"{path} {sum(counts[a][0].values()) - sum(counts[b][0].values()):+d} / "
                         f"{counts[a][1] - counts[b][1]:+d} / {(times[a] - times[b]) * 1e6:+.0f}")
        print(f"    {piece:16} " + "   ".join(cells))


def _in(context, fn, *args):
    with context():
        return fn(*args)


def callback_costs(models, x, y, batch_size, calls, repeats):
    """The guard's per-batch check and Keras's dispatch of batch callbacks, timed on their own."""
    model = models["functional"]
    logs = keras.tree.map_structure(ops.convert_to_tensor,
                                    {"loss": 0.5, "mse": 0.4, "activity": 0.1, "activity_weight": 0.0})
    guard = NonFiniteGuard(list(model._lw.objective.terms))
    guard.set_model(model)
    guard.on_epoch_begin(0)
    hand_list = keras.callbacks.CallbackList([], add_history=True, model=models["hand"])
    lw_list = keras.callbacks.CallbackList(
        [NonFiniteGuard(list(model._lw.objective.terms)), lw_model._EpochCounter(model.epoch)],
        add_history=True, model=model)
    for cbs in (hand_list, lw_list):
        cbs.on_train_begin()
        cbs.on_epoch_begin(0)
    batches = iter(range(10**9))

    def batch(cbs):
        number = next(batches)
        cbs.on_train_batch_begin(number)
        cbs.on_train_batch_end(number, logs)

    def check():
        number = next(batches)
        guard.on_train_batch_begin(number)
        guard.on_train_batch_end(number, logs)

    fns = {
        "guard: batch begin + end, called directly": check,
        "hand: CallbackList batch begin + end": lambda: batch(hand_list),
        "lw:   CallbackList batch begin + end": lambda: batch(lw_list),
        "lw:   guard.on_epoch_begin + _EpochCounter": lambda: (
            guard.on_epoch_begin(0), lw_model._EpochCounter(model.epoch).on_epoch_begin(0)),
    }
    times = best_of(fns, calls, repeats)
    for cbs in (hand_list, lw_list):
        cbs.on_epoch_end(0, logs)
        cbs.on_train_end()
    print_times(f"Callbacks, best of {repeats} x {calls} calls ({BACKEND}; "
                f"async dispatch: {hand_list._async_train})", times)


# -- step and ablate ------------------------------------------------------------------------


def step_times(models, x, y, batch_size, calls, repeats, title):
    """Best seconds per step of each model, and the paired ratios (subclassed to hand_sub)."""
    fns = {path: step_function(model, x, y, batch_size) for path, model in models.items()}
    runs = samples(fns, calls, repeats)
    times = {name: min(series) for name, series in runs.items()}
    ratios = paired(runs, "hand")
    if "hand_sub" in runs:
        for path in runs:
            if path.startswith("subclassed"):
                ratios[path] = paired(runs, "hand_sub")[path]
    print_times(title + " (paired: subclassed to hand_sub, the others to hand)", times,
                base="hand", ratios=ratios)
    return times, ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="*", default=["ops", "parts", "step"],
                        choices=["ops", "parts", "step", "pyprofile"])
    parser.add_argument("--threads", help="as for overhead.py")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quantile", type=float, default=0.1,
                        help="which low quantile of the runs `parts` reports (torch)")
    args = parser.parse_args()
    global QUANTILE
    QUANTILE = args.quantile
    x, y = data(8, args.batch_size)
    print(f"backend={BACKEND} batch={args.batch_size} threads={args.threads or 'default'}")
    models = built(PATHS, x, y, args.batch_size)
    if "ops" in args.what:
        count_ops(models, x, y, args.batch_size)
    if "pyprofile" in args.what and BACKEND == "torch":
        python_calls_by_file(models["functional"], x, y, args.batch_size)
    if "parts" in args.what:
        if BACKEND == "torch":
            torch_parts(models, x, y, args.batch_size, args.calls, args.repeats)
        callback_costs(models, x, y, args.batch_size, args.calls * 10, args.repeats)
    if "step" in args.what:
        step_times(models, x, y, args.batch_size, args.calls, args.repeats,
                   f"Step alone, best of {args.repeats} x {args.calls} calls ({BACKEND})")


if __name__ == "__main__":
    main()
