"""The ``sketch-rnn`` command: ``train``, ``sample``, ``reconstruct``, ``complete``, ``interpolate``.

::

    sketch-rnn train --data synthetic --preset demo --out runs/demo
    sketch-rnn train --data cat.npz pig.npz --preset small --steps 20000 --out runs/catpig
    sketch-rnn train --data sheep.npz --set recurrent_dropout=0 --set precision=mixed_bfloat16 --out runs/sheep
    sketch-rnn sample --out runs/demo --n 16 --temperature 0.5
    sketch-rnn reconstruct --out runs/demo
    sketch-rnn complete --out runs/demo --n 8 --keep 0.5
    sketch-rnn interpolate --out runs/demo
    sketch-rnn serve --out runs/demo --port 8000

``train`` writes into its ``--out`` folder (``sketch_rnn.runs``), each file atomically:
``config.json`` (hyperparameters, data scale factor, data spec, classes, seed, target step),
``model.keras``, ``history.csv`` (every term, ``kl_weight``, ``lr`` and ``val_*``, by step) and
``losses.png`` after every epoch, a backup of the training state every ``--backup-every`` steps
and on Ctrl-C (which then exits with status 130), and, at the end, ``samples.png``,
``reconstructions.png`` and ``interpolation.png``. Run it again on its folder and it resumes:

- a run that was stopped (killed, Ctrl-C, a full disk) goes on from its last backup to the step
  it was started for, on the batches it would have had: no steps repeated or skipped in its
  history, the KL weight and the learning rate going on from where they stopped;
- a finished run trains ``--steps`` more steps.

The other commands read a trained folder and write into a subfolder of it (``sample/``,
``reconstruct/``, ``complete/``, ``interpolate/``). ``complete`` keeps the first ``--keep`` of
each of ``--n`` held-out sketches and lets the model finish them: ``pairs.png`` shows the kept
parts above the completed sketches, the kept part drawn in red.

>>> args = _parser().parse_args(["train", "--data", "synthetic", "--preset", "demo", "--out", "runs/demo"])
>>> args.run.__name__, args.data, args.steps, args.backup_every
('train', ['synthetic'], None, 100)
"""

import argparse
import dataclasses
import itertools
import os
import sys
from pathlib import Path

import keras
import numpy as np

from sketch_rnn import data, devices, presets, render, runs, sampling
from sketch_rnn.model import HParams, build_model

#: At most this many validation sketches are evaluated after each epoch.
VALID_CAP = 500
#: Temperatures of the rows of ``samples.png``.
SAMPLE_TEMPERATURES = (0.2, 0.5, 0.8)
#: Temperature of ``reconstructions.png`` and ``interpolation.png``.
PICTURE_TEMPERATURE = 0.1


# --- data ----------------------------------------------------------------------------------------


def _data_spec(paths, per_class, seed):
    if paths == ["synthetic"]:
        return {"source": "synthetic", "per_class": per_class, "seed": seed}
    return {"source": "npz", "paths": [str(Path(p).resolve()) for p in paths]}


def _spread(labels, n):
    """Indices of ``n`` items taking the classes in turn: the first of each class, then the second...

    >>> _spread(np.array([0, 0, 0, 1, 2, 2]), 5)
    [0, 3, 4, 1, 5]
    """
    rank = np.zeros(len(labels), dtype=int)
    for label in np.unique(labels):
        rank[labels == label] = np.arange(np.sum(labels == label))
    return [int(i) for i in np.lexsort((labels, rank))[:n]]


# --- pictures ------------------------------------------------------------------------------------


def _pictures(model, config, valid, valid_labels, out):
    """``samples.png``, and for a conditional model ``reconstructions.png`` and ``interpolation.png``."""
    scale = config["scale"]
    drawn, titles = [], []
    for t in SAMPLE_TEMPERATURES:  # the same 8 codes in each row
        drawn += sampling.sample(model, 8, temperature=t, seed=0, scale=scale)
        titles += [f"t={t}"] * 8
    written = [render.grid(drawn, out / "samples.png", ncols=8, titles=titles)]
    if config["hparams"]["conditional"]:
        picked = [valid[i] for i in _spread(valid_labels, 8)]
        rebuilt = sampling.reconstruct(model, picked, temperature=PICTURE_TEMPERATURE, seed=0, scale=scale)
        written.append(render.pairs(picked, rebuilt, out / "reconstructions.png"))
        if len(picked) > 1:
            strip = _interpolation(model, picked[:2], 8, PICTURE_TEMPERATURE, 0, scale)
            written.append(render.strip(strip, out / "interpolation.png"))
    return written


def _interpolation(model, pair, steps, temperature, seed, scale):
    """The first sketch, ``steps`` sketches decoded from codes between theirs, then the second."""
    _, strip = sampling.interpolate(model, *pair, steps=steps, temperature=temperature, seed=seed, scale=scale)
    return [pair[0], *strip, pair[1]]


# --- train ---------------------------------------------------------------------------------------


def _budget(config, steps_left):
    """``N steps, about T at S s a step (...)`` for a run of ``config`` with ``steps_left`` to go."""
    seconds = presets.SECONDS_PER_STEP.get(config["preset"])
    if seconds is None:
        return f"{steps_left:,} steps"
    return (f"{steps_left:,} steps, about {runs.duration(seconds * steps_left)} at ~{seconds:g} s a step "
            f"(the {config['preset']} preset on the 2-core CPU of benchmarks/RESULTS.md)")


def _first_line(out, config, point, new, more):
    """What ``train`` is about to do to ``out``: start, resume, go on by ``--steps``, or nothing."""
    where = f"starting at step {point.step} of {config['target']:,}"
    left = config["target"] - point.step
    if new:
        default = " (the preset's num_steps; --steps N for another budget)" if more is None else ""
        return f"{out}: a new {config['preset']!r} run, {where}: {_budget(config, left)}{default}"
    if more is not None:
        return f"{out}: resuming its finished run for --steps {more:,} more, {where}: {_budget(config, left)}"
    if left:
        return f"{out}: resuming its stopped run from its backup, {where}: {_budget(config, left)} to go"
    return (f"{out}: holds a run finished at step {point.step:,}, {where}: nothing to train, its pictures are "
            f"redrawn (--steps N trains N more steps; another --out starts a new run)")


def _warn_dropped(sketches, max_len):
    dropped = sketches.dropped
    if sum(dropped.values()):
        counts = ", ".join(f"{count} {split}" for split, count in dropped.items())
        print(f"warning: {sum(dropped.values())} sketches ({counts}) have more than max_seq_len={max_len} points "
              f"and are left out; a new run with --set max_seq_len=N keeps those of up to N points",
              file=sys.stderr, flush=True)


def _check_same_run(args, config, out):
    """Refuse arguments that would change the run held in ``out``."""
    if args.set:
        raise ValueError(f"{out} holds a run whose hyperparameters are fixed; --set them for a new --out")
    if args.preset not in (None, config["preset"]):
        raise ValueError(f"{out} holds a {config['preset']!r} run; train --preset {args.preset} into another --out")
    if args.unconditional and config["hparams"]["conditional"]:
        raise ValueError(f"{out} holds a conditional run; train --unconditional into another --out")
    if args.seed not in (None, config["seed"]):
        raise ValueError(f"{out} holds a run of --seed {config['seed']}; train --seed {args.seed} into another --out")
    if args.data is not None and _data_spec(args.data, args.per_class, config["seed"]) != config["data"]:
        raise ValueError(f"{out} holds a run on other data ({config['data']}); use another --out")


def _resume(args, out):
    """``(config, model, point, rows, sketches)`` of the run in ``out``, with ``--steps`` more if given."""
    config = runs.read_config(out)
    _check_same_run(args, config, out)
    hps = HParams(**config["hparams"])
    sketches = runs.load_data(config["data"], hps.max_seq_len)
    keras.utils.set_random_seed(config["seed"])
    if args.diagnostics is not None:
        config["diagnostics"] = args.diagnostics
        runs.write_config(out, config)
    model, point, rows = runs.restore(out, lambda: build_model(hps, diagnostics=config.get("diagnostics")))
    if args.steps is not None:
        if point.step < config["target"]:
            raise ValueError(f"{out} holds a run stopped at step {point.step} of {config['target']}: finish it "
                             f"with `sketch-rnn train --out {out}` (no --steps), then train more")
        config.update(target=point.step + args.steps, epoch_steps=min(hps.steps_per_epoch, args.steps))
        runs.write_config(out, config)
    return config, model, point, rows, sketches


def _setup(args):
    """``(config, model, point, rows, sketches)``: the run in ``args.out``, or a new one from the arguments."""
    out = Path(args.out)
    if (out / "config.json").exists():
        return _resume(args, out)
    if args.data is None:
        raise ValueError("a new run needs --data (synthetic, or .npz files)")
    preset, seed = args.preset or "paper", args.seed or 0
    hps = dataclasses.replace(presets.get(preset), **{"conditional": not args.unconditional, **dict(args.set)})
    spec = _data_spec(args.data, args.per_class, seed)
    sketches = runs.load_data(spec, hps.max_seq_len)
    if not sketches.train or not sketches.valid:
        raise ValueError(f"no train or no validation sketches of at most max_seq_len={hps.max_seq_len} points")
    steps = hps.num_steps if args.steps is None else args.steps
    config = {
        "preset": preset,
        "hparams": dataclasses.asdict(hps),
        "scale": data.scale_factor(sketches.train),
        "data": spec,
        "classes": list(sketches.class_names),
        "seed": seed,
        "step": 0,
        "target": steps,
        "epoch_steps": min(hps.steps_per_epoch, steps),
        "diagnostics": args.diagnostics,
    }
    keras.utils.set_random_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    runs.write_config(out, config)
    return config, build_model(hps, diagnostics=args.diagnostics), runs.RestorePoint(0, 0, {}), [], sketches


def train(args):
    with devices.data_parallel(args.distribute) as placement:
        _train(args, placement)


def _train(args, placement):
    """``train`` on the devices of ``placement`` (``devices.data_parallel``), inside its context."""
    new = not (Path(args.out) / "config.json").exists()
    with placement.building():
        config, model, point, rows, sketches = _setup(args)
    out = Path(args.out)
    hps = HParams(**config["hparams"])
    print(_first_line(out, config, point, new, args.steps), flush=True)
    print(f"data: {sketches!r}, scale {config['scale']:.4g}")
    _warn_dropped(sketches, hps.max_seq_len)
    devices.check_split(hps.batch_size, placement.count)
    if placement.count > 1:
        print(f"data parallel on {placement.count} devices: a batch of {hps.batch_size} sketches split across them")
    train_set = data.normalize(sketches.train, config["scale"])
    batches = data.StrokeBatches(train_set, hps.batch_size, hps.max_seq_len, np.random.default_rng(config["seed"]),
                                 augment=hps.augment)
    picked = np.random.default_rng(config["seed"]).permutation(len(sketches.valid))[:VALID_CAP]
    if len(picked) > hps.batch_size:  # whole batches only: one compiled shape
        picked = picked[: len(picked) // hps.batch_size * hps.batch_size]
    else:  # one batch, split across the devices
        picked = picked[: len(picked) // placement.count * placement.count]
    validation = data.arrays(data.normalize([sketches.valid[i] for i in picked], config["scale"]), hps.max_seq_len)
    checkpoints = runs.Checkpoints(out, config, rows, point, args.backup_every)
    log_dir = out / "logs" if args.tensorboard else None
    pictures = runs.EpochPictures(lambda: _pictures(model, config, sketches.valid, sketches.valid_labels, out), log_dir)
    callbacks = [checkpoints, pictures, runs.Pace(config["target"])]
    if log_dir is not None:
        callbacks.insert(2, keras.callbacks.TensorBoard(log_dir))
    step, epoch = point.step, len(rows)
    with checkpoints.stopping_on_sigint():
        for length, count in runs.epochs_left(point.step, point.epoch_start, config["target"], config["epoch_steps"]):
            for epochs in [1] * count if placement.one_epoch_a_fit else [count]:
                model.fit(
                    # Exactly the batches it takes: no tf.data prefetch left pulling at exit.
                    (batch for batch in itertools.islice(batches.from_step(step, config["seed"]), length * epochs)),
                    steps_per_epoch=length,
                    initial_epoch=epoch,
                    epochs=epoch + epochs,
                    validation_data=validation,
                    validation_batch_size=hps.batch_size,
                    shuffle=False,  # the batches are shuffled already
                    callbacks=callbacks,
                    verbose=1 if sys.stdout.isatty() else 2,
                )
                step, epoch = step + length * epochs, epoch + epochs
    files = [out / name for name in ("model.keras", "config.json", "history.csv", "losses.png")]
    files += pictures.written or _pictures(model, config, sketches.valid, sketches.valid_labels, out)
    if log_dir is not None:
        files.append(log_dir)
    print(f"trained to step {step}; wrote:", *files, sep="\n  ")


# --- sample, reconstruct, complete, interpolate --------------------------------------------------


def _load_run(out):
    """``(config, model)`` of a run folder with a finished epoch."""
    if not (out / "model.keras").exists() or not (out / "config.json").exists():
        raise ValueError(f"{out}: no trained model here (model.keras and config.json); run `sketch-rnn train` first")
    return runs.read_config(out), runs.load_model(out)


def _write_sketches(sketches, folder, table, prefixes=None):
    """``folder/NNN.svg`` for each sketch (its first ``prefixes[i]`` points in the prefix colour),
    and ``table(folder)``; prints what it wrote."""
    folder.mkdir(exist_ok=True)
    for i, sketch in enumerate(sketches):
        render.to_svg(sketch, folder / f"{i:03d}.svg", prefix=prefixes[i] if prefixes else 0)
    print(f"wrote {table(folder)} and {len(sketches)} SVGs in {folder}")


def sample(args):
    config, model = _load_run(Path(args.out))
    sketches = sampling.sample(model, args.n, temperature=args.temperature, seed=args.seed, scale=config["scale"])
    _write_sketches(sketches, Path(args.out) / "sample", lambda f: render.grid(sketches, f / "grid.png"))


def _split(args, config):
    sketches = runs.load_data(config["data"], config["hparams"]["max_seq_len"])
    return getattr(sketches, args.split), getattr(sketches, f"{args.split}_labels")


def reconstruct(args):
    config, model = _load_run(Path(args.out))
    sketches, labels = _split(args, config)
    originals = [sketches[i] for i in _spread(labels, args.n)]
    rebuilt = sampling.reconstruct(model, originals, temperature=args.temperature, seed=args.seed,
                                   scale=config["scale"])
    _write_sketches(rebuilt, Path(args.out) / "reconstruct",
                    lambda f: render.pairs(originals, rebuilt, f / "pairs.png"))


def complete(args):
    config, model = _load_run(Path(args.out))
    sketches, labels = _split(args, config)
    kept = [s[: max(1, round(args.keep * len(s)))] for s in (sketches[i] for i in _spread(labels, args.n))]
    completed = sampling.complete(model, kept, temperature=args.temperature, seed=args.seed, scale=config["scale"])
    _write_sketches(completed, Path(args.out) / "complete",
                    lambda f: render.completions(kept, completed, f / "pairs.png"), [len(k) for k in kept])


def interpolate(args):
    config, model = _load_run(Path(args.out))
    sketches, labels = _split(args, config)
    indices = args.pair or _spread(labels, 2)
    if len(indices) < 2 or not all(0 <= i < len(sketches) for i in indices):
        raise ValueError(f"cannot pick sketches {indices} of the {len(sketches)} in the {args.split} split")
    pair = [sketches[i] for i in indices]
    strip = _interpolation(model, pair, args.n, args.temperature, args.seed, config["scale"])
    _write_sketches(strip, Path(args.out) / "interpolate", lambda f: render.strip(strip, f / "strip.png"))


def serve(args):
    try:
        from sketch_rnn import serve as server
    except ImportError as error:
        raise ValueError(f"serve needs the web stack ({error}): pip install 'lossweave[serve]'") from None
    config, model = _load_run(Path(args.out))
    server.serve(model, config, host=args.host, port=args.port, name=args.out)


# --- arguments -----------------------------------------------------------------------------------


def _positive(kind):
    def parse(text):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _fraction(text):
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _hparam(text):
    """``KEY=VALUE`` -> ``(key, value)``, the value parsed as the ``HParams`` field's type."""
    fields = {field.name: field.type for field in dataclasses.fields(HParams)}
    key, equals, value = text.partition("=")
    if not equals or key not in fields:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY one of {', '.join(fields)}; got {text!r}")
    kind = fields[key]
    if kind is bool:
        if value.lower() not in ("true", "false"):
            raise argparse.ArgumentTypeError(f"{key} is true or false, got {value!r}")
        return key, value.lower() == "true"
    try:
        return key, kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{key} must be of type {kind.__name__}, got {value!r}") from None


def _parser():
    parser = argparse.ArgumentParser(prog="sketch-rnn", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("train", help="train a model (or resume one) into --out")
    fit.add_argument("--data", nargs="+", help="'synthetic', or QuickDraw sketch-rnn .npz files (one a class)")
    fit.add_argument("--preset", choices=list(presets.PRESETS), help="hyperparameters (default: paper)")
    fit.add_argument("--steps", type=_positive(int), help="training steps to run (default: the preset's)")
    fit.add_argument("--per-class", type=_positive(int), default=500, help="synthetic sketches a class")
    fit.add_argument("--unconditional", action="store_true", help="decoder only: no encoder, z or KL term")
    fit.add_argument("--set", type=_hparam, action="append", default=[], metavar="KEY=VALUE",
                     help="override a hyperparameter of the preset (sketch_rnn.model.HParams), e.g. recurrent_dropout=0")
    fit.add_argument("--backup-every", type=_positive(int), default=100, metavar="N",
                     help="steps between backups of the training state: a killed run loses at most N (default: 100)")
    fit.add_argument("--seed", type=int, help="random seed of a new run (default: 0)")
    fit.add_argument("--tensorboard", action="store_true",
                     help="write TensorBoard logs (losses, weights, the pictures of every epoch) into OUT/logs")
    fit.add_argument("--diagnostics", type=_positive(int), metavar="N",
                     help="every N steps, log each term's gradient norm and its cosine with the update "
                          "(history.csv, losses.png's third panel); a resumed run keeps it")
    fit.add_argument("--distribute", action="store_true",
                     help="data parallel on every local device (JAX: keras.distribution.DataParallel; "
                          "TensorFlow: tf.distribute.MirroredStrategy); the batch is split across them")
    fit.set_defaults(run=train)

    draw = commands.add_parser("sample", help="draw new sketches into OUT/sample/")
    draw.add_argument("--n", type=_positive(int), default=16, help="how many")
    draw.set_defaults(run=sample)

    rebuild = commands.add_parser("reconstruct", help="encode and decode data sketches into OUT/reconstruct/")
    rebuild.add_argument("--n", type=_positive(int), default=8, help="how many")
    rebuild.set_defaults(run=reconstruct)

    finish = commands.add_parser("complete", help="finish the start of data sketches into OUT/complete/")
    finish.add_argument("--n", type=_positive(int), default=8, help="how many")
    finish.add_argument("--keep", type=_fraction, default=0.5,
                        help="the fraction of each sketch's points kept as its start (default: 0.5)")
    finish.set_defaults(run=complete)

    between = commands.add_parser("interpolate", help="decode codes between two sketches into OUT/interpolate/")
    between.add_argument("--pair", type=int, nargs=2, metavar=("I", "J"),
                         help="indices of the two sketches in the split (default: the first of two classes)")
    between.add_argument("--n", type=_positive(int), default=8, help="sketches decoded between the two")
    between.set_defaults(run=interpolate)

    web = commands.add_parser("serve", help="a page where you draw and the model finishes the drawing, and its API")
    web.add_argument("--out", required=True, help="the run folder")
    web.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0: any free one)")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    web.set_defaults(run=serve)

    for command in (fit, draw, rebuild, finish, between):
        command.add_argument("--out", required=True, help="the run folder")
    for command in (draw, rebuild, finish, between):
        command.add_argument("--seed", type=int, default=0, help="random seed")
        command.add_argument("--temperature", type=_positive(float), default=PICTURE_TEMPERATURE,
                             help="sampling temperature tau")
    for command in (rebuild, finish, between):
        command.add_argument("--split", choices=data.SPLITS, default="test", help="data split to draw from")
    return parser


def _quiet_tensorflow():
    """Keep TensorFlow's C++ log lines (CPU features, oneDNN) off on the other backends.

    Keras imports TensorFlow wherever it is installed, whatever the backend: ``model.save``'s
    serializer checks for ``tf.TensorShape`` and ``keras.utils.set_random_seed`` seeds it. A
    ``TF_CPP_MIN_LOG_LEVEL`` already set is left as it is.
    """
    if keras.backend.backend() != "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    """Run the ``sketch-rnn`` command with ``argv`` (default: the command line).

    A bad argument, a bad data or run-folder file, a file that cannot be written or a folder
    without a model exits with status 2 and one line ``sketch-rnn: error: ...``; Ctrl-C exits with
    status 130 (for ``train``, once its backup is saved, with a line saying how to resume).

    >>> main(["sample", "--out", "/nonexistent"])
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    _quiet_tensorflow()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except runs.Interrupted as stop:
        parser.exit(130, f"{parser.prog}: interrupted at step {stop.step}, backup saved; "
                         f"resume with `sketch-rnn train --out {args.out}`\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{parser.prog}: interrupted\n")
    except (ValueError, OSError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
