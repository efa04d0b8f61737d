"""Run folders of ``sketch-rnn train``: config, history, backups, and the rules for resuming.

A run folder holds, every file written atomically (:func:`sketch_rnn.render.atomic_path`; a
failure to write one, a full disk or a missing permission, is a :class:`RunFolderError` naming it):

- ``config.json``: the run (preset, hyperparameters, data, scale, classes, ``seed``), the step it
  trains to (``target``), its epoch length (``epoch_steps``) and the step of its last finished
  epoch (``step``); written when a run starts or is given more steps, and after every epoch.
- ``history.csv``: a row per finished epoch, by step; ``losses.png`` draws it.
- ``model.keras``: the model after the last finished epoch, for ``sample``, ``reconstruct`` and
  ``interpolate``.
- ``backup/``: the training state every ``backup_every`` steps, after every epoch and on Ctrl-C:
  ``model-0.keras`` and ``model-1.keras`` in turn (weights, optimizer, the step counter) and
  ``state.json``, written last, naming the newer one with its step, the step its epoch began at
  and that epoch's running means. A crash at any moment leaves a whole backup. (Keras writes a
  ``.keras`` file's weights in memory first: a full disk fails in Python's file writes, where a
  ``.weights.h5`` file's h5py crashes the interpreter at exit.)

A run resumes from its backup with the history rows up to the start of the epoch in progress and,
with ``StrokeBatches.from_step``, the batches it would have had: its history is the history of a
run that was never stopped.

>>> epochs_left(step=150, epoch_start=100, target=1000, epoch_steps=400)
[(350, 1), (400, 1), (100, 1)]
"""

import contextlib
import csv
import dataclasses
import io
import itertools
import json
import math
import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np

from sketch_rnn import data, render, synthetic
from sketch_rnn.model import HParams

BACKUP = "backup"


class RunFolderError(ValueError):
    """A file of a run folder that cannot be read (edited, cut short) or written (disk full).

    >>> str(RunFolderError("runs/demo/config.json", "is not valid JSON"))
    'runs/demo/config.json: is not valid JSON'
    """

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class Interrupted(Exception):
    """Training stopped by Ctrl-C, with the backup of ``step`` saved.

    >>> Interrupted(7).step
    7
    """

    def __init__(self, step):
        super().__init__(f"interrupted at step {step}")
        self.step = step


def _one_line(error):
    return f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"


_EDITED = "it was edited or cut short: put back a good copy, or train into a new --out"


def _step_of(model):
    return int(keras.ops.convert_to_numpy(model.step))


# --- config.json ---------------------------------------------------------------------------------


def _is(value, kind):
    """``isinstance`` for JSON values: a bool is no number, an int is a float."""
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


_CONFIG_FIELDS = {"preset": str, "hparams": dict, "scale": float, "data": dict, "classes": list, "step": int}
_HPARAM_TYPES = {field.name: field.type for field in dataclasses.fields(HParams)}


def _config_problem(config):
    """What is wrong with a parsed ``config.json``, or None."""
    if not isinstance(config, dict):
        return "holds no JSON object"
    for key, kind in _CONFIG_FIELDS.items():
        if not _is(config.get(key), kind):
            return f"{key!r} is missing or not of type {kind.__name__}"
    for key, value in config["hparams"].items():
        if key not in _HPARAM_TYPES:
            return f"hparams {key!r} is not a field of sketch_rnn.model.HParams"
        if not _is(value, _HPARAM_TYPES[key]):
            return f"hparams {key!r} is not of type {_HPARAM_TYPES[key].__name__}"
    spec = config["data"]
    synthetic = spec.get("source") == "synthetic" and _is(spec.get("per_class"), int) and _is(spec.get("seed"), int)
    if not synthetic and not (spec.get("source") == "npz" and _is(spec.get("paths"), list)):
        return f"'data' is not a synthetic or an npz data spec: {spec}"
    for key in ("step", "seed", "target", "epoch_steps"):
        if not _is(config[key], int) or config[key] < 0:
            return f"{key!r} is not a non-negative integer"
    if config["epoch_steps"] == 0 or not config["scale"] > 0 or not math.isfinite(config["scale"]):
        return "'epoch_steps' or 'scale' is not positive"
    return None


def read_config(out: str | Path) -> dict:
    """The checked ``config.json`` of the run folder ``out``.

    Runs saved before ``seed``, ``target`` and ``epoch_steps`` were recorded read as seed 0,
    finished at their ``step``, with the preset's epoch length.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = (out / "config.json").write_text('{"preset": "tiny", "hparams": {')
    >>> read_config(out)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sketch_rnn.runs.RunFolderError: /.../config.json: is not valid JSON (JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 32 (char 31)); it was edited or cut short: put back a good copy, or train into a new --out
    """
    path = Path(out) / "config.json"
    try:
        config = json.loads(path.read_bytes())
    except ValueError as error:
        raise RunFolderError(path, f"is not valid JSON ({_one_line(error)}); {_EDITED}") from None
    if isinstance(config, dict) and _is(config.get("hparams"), dict):
        epoch_steps = config["hparams"].get("steps_per_epoch", HParams.steps_per_epoch)
        config = {"seed": 0, "target": config.get("step"), "epoch_steps": epoch_steps, **config}
    problem = _config_problem(config)
    if problem:
        raise RunFolderError(path, f"{problem}; {_EDITED}")
    return config


def write_config(out: str | Path, config: dict) -> None:
    """Write ``config`` as ``out/config.json``, atomically.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> write_config(out, {"step": 4})
    >>> json.loads((out / "config.json").read_text())
    {'step': 4}
    """
    with _writing(Path(out) / "config.json") as temporary:
        temporary.write_text(json.dumps(config, indent=2))


def load_data(spec: dict, max_len: int | None = None) -> data.SketchSet:
    """The sketch set of a run's data spec (``config.json``'s ``data``): its ``.npz`` files or the
    synthetic set, without sketches of more than ``max_len`` points if given.

    >>> load_data({"source": "synthetic", "per_class": 10, "seed": 0}, max_len=30).dropped["train"] > 0
    True
    """
    if spec["source"] == "npz":
        return data.load_npz(spec["paths"], max_len=max_len)
    return synthetic.synthetic(spec["per_class"], seed=spec["seed"], max_len=max_len)


# --- history.csv and losses.png ------------------------------------------------------------------


def read_history(path: str | Path) -> list[dict]:
    """The rows of a ``history.csv``: numbers by column, ``step`` and ``epoch`` integers, steps rising.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "history.csv"
    >>> _ = path.write_text("step,epoch,loss\\n2,1,3.5\\n4,2,")
    >>> read_history(path)
    [{'step': 2, 'epoch': 1, 'loss': 3.5}, {'step': 4, 'epoch': 2}]
    >>> _ = path.write_text("step,epoch,loss\\n2,1,3.5\\n4,2")
    >>> read_history(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sketch_rnn.runs.RunFolderError: /.../history.csv: line 3 has not the header's 3 fields; it was edited or cut short: put back a good copy, or train into a new --out
    """
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        if not {"step", "epoch"} <= set(reader.fieldnames or ()):
            raise RunFolderError(path, f"has no header with 'step' and 'epoch'; {_EDITED}")
        rows = []
        for row in reader:
            line = reader.line_num
            if None in row or None in row.values():
                raise RunFolderError(path, f"line {line} has not the header's {len(reader.fieldnames)} fields; {_EDITED}")
            try:
                parsed = {key: float(value) for key, value in row.items() if value != ""}
                parsed["step"], parsed["epoch"] = int(row["step"]), int(row["epoch"])
            except (KeyError, ValueError) as error:
                raise RunFolderError(path, f"line {line} holds no number where one belongs ({error}); {_EDITED}") from None
            if rows and parsed["step"] <= rows[-1]["step"]:
                raise RunFolderError(path, f"line {line}: step {parsed['step']} after step {rows[-1]['step']}; {_EDITED}")
            rows.append(parsed)
    return rows


def write_history(rows: list[dict], path: str | Path) -> None:
    """Write ``rows`` (dicts) as a CSV file with a column per key, atomically.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "history.csv"
    >>> write_history([{"step": 2, "epoch": 1, "loss": 3.5}, {"step": 4, "epoch": 2, "kl": 0.2}], path)
    >>> print(path.read_text().replace("\\r", ""), end="")
    step,epoch,loss,kl
    2,1,3.5,
    4,2,,0.2
    """
    fields = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    with _writing(path) as temporary:
        temporary.write_text(text.getvalue())


def plot_history(rows: list[dict], path: str | Path) -> None:
    """The loss (the weighted sum of the terms, in black) and every term unweighted (train solid,
    validation dashed), and the KL weight and learning rate, against the step, as a PNG file; a
    point an epoch, marked, so that a run of one epoch shows too. Rows with gradient diagnostics
    (``train --diagnostics``) add a third panel: each term's gradient norm, and its cosine with
    the update on the right-hand axis.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "losses.png"
    >>> plot_history([{"step": 2, "loss": 3.5, "val_loss": 3.6, "kl_weight": 0.01}], path)
    >>> path.read_bytes()[:4]
    b'\\x89PNG'
    """
    from matplotlib.figure import Figure

    diagnosed = [name for name in ("offset", "pen", "kl") if f"{name}_grad_norm" in rows[0]]
    figure = Figure(figsize=(15 if diagnosed else 10, 4), dpi=100)
    terms, weights, *gradients = figure.subplots(1, 3 if diagnosed else 2)
    steps = [row["step"] for row in rows]
    for name in ("loss", "offset", "pen", "kl"):
        if name in rows[0]:
            style = {"color": "black", "label": "loss (weighted sum)"} if name == "loss" else {"label": name}
            (line,) = terms.plot(steps, [row[name] for row in rows], ".-", **style)
            if f"val_{name}" in rows[0]:
                terms.plot(steps, [row.get(f"val_{name}", math.nan) for row in rows], "x--",
                           color=line.get_color(), label=f"val_{name}")
    terms.set(xlabel="step", title="loss (the weighted sum) and its terms (unweighted)")
    terms.legend(fontsize=8)
    for name in ("kl_weight", "lr"):
        if name in rows[0]:
            weights.plot(steps, [row[name] for row in rows], ".-", label=name)
    weights.set(xlabel="step", yscale="log", title="schedules")
    weights.legend(fontsize=8)
    if diagnosed:
        norms = gradients[0]
        cosines = norms.twinx()
        for name in diagnosed:
            (line,) = norms.plot(steps, [row[f"{name}_grad_norm"] for row in rows], ".-",
                                 label=f"{name} gradient norm")
            cosines.plot(steps, [row[f"{name}_grad_cos"] for row in rows], "x:", color=line.get_color(),
                         label=f"{name} cosine with the update")
        norms.set(xlabel="step", ylabel="norm of weight x term gradient", title="gradients of the terms")
        cosines.set(ylabel="cosine with the update", ylim=(-1.05, 1.05))
        norms.legend(fontsize=8, loc="upper left")
        cosines.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    with _writing(path) as temporary:
        figure.savefig(temporary, format="png")


# --- writing -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _writing(path):
    """:func:`render.atomic_path`, with a failure to write (a full disk, a missing permission)
    reported as a RunFolderError naming ``path``; the file it was to replace is kept."""
    try:
        with render.atomic_path(path) as temporary:
            yield temporary
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else _one_line(error)
        raise RunFolderError(path, f"cannot be written ({reason})") from error


# --- backups -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RestorePoint:
    """Where a run stands: its ``step``, the step its epoch in progress began at, and that epoch's
    running means (``metrics``: the model's metric variables by path; empty at an epoch's start).

    >>> RestorePoint(0, 0, {})
    RestorePoint(step=0, epoch_start=0, metrics={})
    """

    step: int
    epoch_start: int
    metrics: dict


def _read_state(path):
    try:
        state = json.loads(path.read_bytes())
    except ValueError as error:
        raise RunFolderError(path, f"is not valid JSON ({_one_line(error)}); {_EDITED}") from None
    if not (isinstance(state, dict) and state.get("slot") in (0, 1) and isinstance(state.get("metrics"), dict)
            and all(_is(state.get(key), int) for key in ("step", "epoch_start"))):
        raise RunFolderError(path, f"is not a backup state (step, epoch_start, slot, metrics); {_EDITED}")
    return state


def _history_until(out, epoch_start):
    """The rows of ``out/history.csv`` up to ``epoch_start``, which must have one (if not 0)."""
    path = out / "history.csv"
    rows = [row for row in read_history(path) if row["step"] <= epoch_start] if path.exists() else []
    if epoch_start and (not rows or rows[-1]["step"] != epoch_start):
        raise RunFolderError(path, f"has no row for step {epoch_start}, where the epoch in progress began; {_EDITED}")
    return rows


def restore(out: str | Path, build: Callable[[], keras.Model]) -> tuple[keras.Model, RestorePoint, list[dict]]:
    """``(model, point, rows)``: the run in ``out`` where its backup left it, with its history.

    ``build()`` gives the run's compiled model; the backup's weights are loaded into it. A folder
    without a backup restarts from ``build()`` at step 0, or, if it holds a ``model.keras`` (runs
    saved before backups existed), goes on from that model at the step it holds.

    >>> import tempfile
    >>> restore(tempfile.mkdtemp(), build=lambda: "a new model")
    ('a new model', RestorePoint(step=0, epoch_start=0, metrics={}), [])
    """
    out = Path(out)
    state_path = out / BACKUP / "state.json"
    if state_path.exists():
        state = _read_state(state_path)
        rows = _history_until(out, state["epoch_start"])
        model = build()
        backup = out / BACKUP / f"model-{state['slot']}.keras"
        try:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(backup)
        except Exception as error:  # zipfile, h5py and Keras raise OSError, ValueError, KeyError... on a bad file
            raise RunFolderError(backup, f"cannot be loaded ({_one_line(error)}); {_EDITED}") from error
        if _step_of(model) != state["step"]:
            raise RunFolderError(backup, f"holds step {_step_of(model)}, but {state_path} says {state['step']}; {_EDITED}")
        return model, RestorePoint(state["step"], state["epoch_start"], state["metrics"]), rows
    if (out / "model.keras").exists():
        model = load_model(out)
        step = _step_of(model)
        return model, RestorePoint(step, step, {}), _history_until(out, step)
    return build(), RestorePoint(0, 0, {}), []


def load_model(out: str | Path) -> keras.Model:
    """``out/model.keras``, loaded (Keras's ``safe_mode``: no lambdas), or a RunFolderError naming it.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = (out / "model.keras").write_bytes(b"PK cut short")
    >>> load_model(out)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sketch_rnn.runs.RunFolderError: /.../model.keras: cannot be loaded (...)
    """
    path = Path(out) / "model.keras"
    try:
        return keras.models.load_model(path)
    except Exception as error:  # a damaged zip or h5 file raises anything from BadZipFile to KeyError
        raise RunFolderError(path, f"cannot be loaded ({_one_line(error)})") from error


# --- training ------------------------------------------------------------------------------------


def epochs_left(step: int, epoch_start: int, target: int, epoch_steps: int) -> list[tuple[int, int]]:
    """``[(length, count), ...]``: the epochs from ``step`` to ``target``, grouped, for one ``fit`` a
    group. Epochs end every ``epoch_steps`` steps after ``epoch_start`` (where the epoch in
    progress began) and at ``target``.

    >>> epochs_left(0, 0, 1000, 400), epochs_left(1000, 1000, 1000, 400)
    ([(400, 2), (200, 1)], [])
    """
    ends = range(epoch_start + epoch_steps, target + epoch_steps, epoch_steps)
    ends = [min(end, target) for end in ends if min(end, target) > step]
    lengths = np.diff([step, *ends]).tolist()
    return [(length, len(list(group))) for length, group in itertools.groupby(lengths)]


def duration(seconds: float) -> str:
    """``seconds`` in words, to two significant digits: seconds, minutes, hours or days.

    >>> duration(42), duration(200), duration(2.5 * 10_000_000)
    ('42 s', '3.3 min', '290 days')
    """
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{float(f'{seconds / size:.2g}'):g} {unit}"
    return f"{float(f'{seconds:.2g}'):g} s"


class Pace(keras.callbacks.Callback):
    """After every epoch, one line: the step; the seconds a training step took (the median of the
    epoch's steps, each from its batch's begin to its end, the callbacks of that end included);
    where the epoch's time went; and the time left to ``target`` at the epoch's pace (its first
    step, which compiles, left out).

    The epoch's time is split into its steps, the time between them (fetching a batch where
    ``fit`` does that between steps, as on JAX and torch), validation, and the rest (the epoch's
    start, and its end: saving, pictures, any callback before this one). ``clock`` is for tests.

    >>> ticks = iter([0, 1, 3, 3.5, 5, 5, 6, 9])  # the clock's readings, hook by hook
    >>> pace = Pace(target=10, clock=lambda: next(ticks))
    >>> pace.on_epoch_begin(0); pace.on_train_batch_begin(0); pace.on_train_batch_end(0)
    >>> pace.on_train_batch_begin(1); pace.on_train_batch_end(1)
    >>> pace.on_test_begin(); pace.on_test_end()
    >>> pace.line(step=2)
    'step 2 of 10: 1.5 s a step; the epoch took 9 s: 3.5 s in steps, 0.5 s between them, 1 s validating, 4 s at its start and end; about 56 s to go'
    """

    def __init__(self, target: int, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.target, self.clock = target, clock

    def on_epoch_begin(self, epoch, logs=None):
        self.begun, self.steps, self.between, self.validating, self.ended = self.clock(), [], 0.0, 0.0, None

    def on_train_batch_begin(self, batch, logs=None):
        self.batch_begun = self.clock()
        if self.ended is not None:
            self.between += self.batch_begun - self.ended

    def on_train_batch_end(self, batch, logs=None):
        self.ended = self.clock()
        self.steps.append(self.ended - self.batch_begun)

    def on_test_begin(self, logs=None):
        self.test_begun = self.clock()

    def on_test_end(self, logs=None):
        self.validating += self.clock() - self.test_begun

    def on_epoch_end(self, epoch, logs=None):
        if len(self.steps) > 1:
            print(self.line(_step_of(self.model)), flush=True)

    def line(self, step: int) -> str:
        """The line for an epoch that ended now at ``step`` (two steps or more)."""
        took = self.clock() - self.begun
        rate = (took - self.steps[0]) / (len(self.steps) - 1)
        parts = {"in steps": sum(self.steps), "between them": self.between, "validating": self.validating}
        parts["at its start and end"] = took - sum(parts.values())
        split = ", ".join(f"{duration(seconds)} {what}" for what, seconds in parts.items())
        return (f"step {step} of {self.target}: {duration(statistics.median(self.steps[1:]))} a step; the epoch "
                f"took {duration(took)}: {split}; about {duration(rate * (self.target - step))} to go")


class Checkpoints(keras.callbacks.Callback):
    """Saves a run into ``out`` while it trains from ``point``.

    Every ``backup_every`` steps (counted from step 0) a backup; after each epoch its history row
    (``step``, ``epoch``, the logs, ``lr``) appended to ``rows``, ``history.csv``, a backup, then
    ``model.keras``, ``config.json`` (with ``step``) and ``losses.png``. The first epoch begins
    with ``point.metrics``, so the row of an epoch that was resumed averages all of its steps.
    Inside :meth:`stopping_on_sigint`, Ctrl-C saves a backup at the end of the step and raises
    :class:`Interrupted`.

    >>> import tempfile
    >>> checkpoints = Checkpoints(tempfile.mkdtemp(), {}, [], RestorePoint(0, 0, {}), backup_every=100)
    >>> with checkpoints.stopping_on_sigint():
    ...     signal.raise_signal(signal.SIGINT)  # as Ctrl-C: no KeyboardInterrupt, a request to stop
    >>> checkpoints.interrupted
    True
    """

    def __init__(self, out: str | Path, config: dict, rows: list[dict], point: RestorePoint, backup_every: int):
        super().__init__()
        self.out, self.config, self.rows, self.backup_every = Path(out), config, rows, backup_every
        self.step, self.epoch_start, self.metrics = point.step, point.epoch_start, point.metrics
        state = self.out / BACKUP / "state.json"
        self.slot = _read_state(state)["slot"] if state.exists() else 1
        self.saved = point.step if state.exists() else None  # the step of the newest backup
        self.interrupted = False

    @contextlib.contextmanager
    def stopping_on_sigint(self) -> Iterator[None]:
        """While it runs, a first Ctrl-C stops training after a backup; a second stops it at once."""

        def request_stop(signum, frame):
            self.interrupted = True
            signal.signal(signal.SIGINT, previous)

        previous = signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def on_epoch_begin(self, epoch, logs=None):
        if not self.metrics:
            return
        variables = {variable.path: variable for variable in self.model.metrics_variables}
        if variables.keys() == self.metrics.keys():
            for path, value in self.metrics.items():
                variables[path].assign(np.asarray(value, dtype=variables[path].dtype))
        else:
            print(f"note: the backup's running means do not fit this model's metrics; the row of "
                  f"this epoch averages its steps from {self.step} only")
        self.metrics = {}

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        last = batch + 1 == self.params["steps"]  # on_epoch_end saves a backup after validation
        if (self.interrupted or self.step % self.backup_every == 0) and not last:
            with self._keeping_backup():
                self._backup()
            if self.interrupted:
                raise Interrupted(self.step)

    def on_epoch_end(self, epoch, logs=None):
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.rows.append({"step": self.step, "epoch": epoch + 1, **logs, "lr": rate})
        with self._keeping_backup():
            write_history(self.rows, self.out / "history.csv")
            self.epoch_start = self.step
            self._backup()
            with _writing(self.out / "model.keras") as temporary:
                self.model.save(temporary)
            self.config["step"] = self.step
            write_config(self.out, self.config)
            plot_history(self.rows, self.out / "losses.png")
        if self.interrupted:
            raise Interrupted(self.step)

    @contextlib.contextmanager
    def _keeping_backup(self):
        """A RunFolderError raised inside says which backup is kept and how to go on from it."""
        try:
            yield
        except RunFolderError as error:
            kept = "no backup is saved yet" if self.saved is None else f"the backup of step {self.saved} is kept"
            then = f"free some space (or fix the permissions) and resume with `sketch-rnn train --out {self.out}`"
            raise RunFolderError(error.path, f"{error.problem}; {kept}: {then}") from error

    def _backup(self):
        """The weights into the slot not in use, then ``state.json`` naming it."""
        model, slot = self.model, 1 - self.slot
        metrics = {}
        if self.step > self.epoch_start:
            metrics = {v.path: keras.ops.convert_to_numpy(v).tolist() for v in model.metrics_variables}
        state = {"step": self.step, "epoch_start": self.epoch_start, "slot": slot, "metrics": metrics}
        (self.out / BACKUP).mkdir(exist_ok=True)
        with _writing(self.out / BACKUP / f"model-{slot}.keras") as temporary:
            model.save(temporary)
        with _writing(self.out / BACKUP / "state.json") as temporary:
            temporary.write_text(json.dumps(state))
        self.slot, self.saved = slot, self.step


class EpochPictures(keras.callbacks.Callback):
    """After every epoch, ``draw()`` (which redraws the run's pictures and returns their paths);
    with ``log_dir``, each picture also goes to TensorBoard as an image named after its file
    (``samples``, ``reconstructions``...), at the epoch's number, in ``log_dir/pictures``.

    ``written`` holds the paths of the last drawing. TensorBoard's images are written with
    ``tf.summary.image``, so ``log_dir`` needs TensorFlow importable (any backend).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> pictures = EpochPictures(lambda: [render.grid([np.array([[1.0, 1.0, 1.0]])], folder / "samples.png")])
    >>> pictures.on_epoch_end(0)
    >>> [path.name for path in pictures.written]
    ['samples.png']
    """

    def __init__(self, draw: Callable[[], list[Path]], log_dir: str | Path | None = None):
        super().__init__()
        self.draw, self.written, self.writer = draw, [], None
        if log_dir is not None:
            import tensorflow as tf  # tf.summary writes TensorBoard's event files, on any backend

            self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "pictures"))

    def on_epoch_end(self, epoch, logs=None):
        self.written = self.draw()
        if self.writer is not None:
            import tensorflow as tf
            from matplotlib.image import imread

            with self.writer.as_default():
                for path in self.written:
                    tf.summary.image(Path(path).stem, imread(path)[None, ..., :3], step=epoch + 1)
            self.writer.flush()
