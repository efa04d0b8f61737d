"""Run folders: checked config and history, backups, resuming mid-epoch, failures to write."""

import errno
import json
import re

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lossweave as lw
from sketch_rnn import runs

X = np.linspace(-1, 1, 24, dtype="float32").reshape(8, 3)
Y = X.sum(axis=1, keepdims=True) ** 2


def tiny_model():
    inputs = keras.Input((3,))
    model = lw.Model(inputs, keras.layers.Dense(1, kernel_initializer="ones")(inputs))
    rate = lw.schedules.exponential_approach(0.05, 0.01, decay=0.8)
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="mse")
    return model


def checkpoints(out, point=runs.RestorePoint(0, 0, {}), rows=None, backup_every=3):
    return runs.Checkpoints(out, {"step": point.step}, [] if rows is None else rows, point, backup_every)


class Killed(Exception):
    pass


class StopAfter(keras.callbacks.Callback):
    """Raises Killed at the end of training step ``step`` (counted from 1)."""

    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            raise Killed


def fit(model, callbacks, steps=4, epochs=1, start=0):
    """Batches of 2 in order, as a sketch-rnn run's are a function of the step."""
    batches = ((X[2 * (s % 4) : 2 * (s % 4) + 2], Y[2 * (s % 4) : 2 * (s % 4) + 2]) for s in range(start, 100))
    model.fit(batches, steps_per_epoch=steps, epochs=epochs, callbacks=callbacks, shuffle=False, verbose=0)


def state(out):
    return json.loads((out / "backup" / "state.json").read_text())


def values(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


def test_a_run_resumed_mid_epoch_writes_the_history_of_a_run_never_stopped(tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    straight = tiny_model()
    fit(straight, [checkpoints(reference)])
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(Killed):
        fit(tiny_model(), [checkpoints(out), StopAfter(3)])  # killed after the backup of step 3
    assert state(out)["step"] == 3 and state(out)["epoch_start"] == 0 and state(out)["metrics"]

    model, point, rows = runs.restore(out, tiny_model)
    assert (point.step, point.epoch_start, rows) == (3, 0, [])
    assert runs.epochs_left(point.step, point.epoch_start, target=4, epoch_steps=4) == [(1, 1)]
    fit(model, [checkpoints(out, point, rows)], steps=1, start=3)

    for run in (reference, out):
        assert int(keras.ops.convert_to_numpy(keras.models.load_model(run / "model.keras").step.value)) == 4
        assert state(run) == {"step": 4, "epoch_start": 4, "slot": state(run)["slot"], "metrics": {}}
    expected, resumed = runs.read_history(reference / "history.csv"), runs.read_history(out / "history.csv")
    assert [row["step"] for row in resumed] == [4] and resumed[0].keys() == expected[0].keys()
    for key in expected[0]:
        np.testing.assert_allclose(resumed[0][key], expected[0][key], rtol=1e-6, err_msg=key)
    for a, b in zip(values(straight.weights + straight.optimizer.variables), values(model.weights + model.optimizer.variables)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_pace_prints_the_seconds_a_step_and_the_time_left_after_each_epoch(capsys):
    fit(tiny_model(), [runs.Pace(target=8)], steps=4)
    number = r"[0-9.e-]+ (s|min)"
    assert re.fullmatch(
        rf"step 4 of 8: {number} a step; the epoch took {number}: {number} in steps, {number} between them, "
        rf"{number} validating, {number} at its start and end; about {number} to go\n",
        capsys.readouterr().out,
    )


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


class Spends(keras.callbacks.Callback):
    """Moves ``clock`` on in fit's hooks: 0.5 s before each step, 2 s in its end, 3 s a validation
    batch, 100 s at the epoch's end (before Pace's hooks, as Checkpoints and EpochPictures are)."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def on_train_batch_begin(self, batch, logs=None):
        self.clock.now += 0.5

    def on_train_batch_end(self, batch, logs=None):
        self.clock.now += 2

    def on_test_batch_end(self, batch, logs=None):
        self.clock.now += 3

    def on_epoch_end(self, epoch, logs=None):
        self.clock.now += 100


def test_pace_splits_the_epoch_into_steps_the_time_between_them_validation_and_its_end(capsys):
    clock = Clock()
    batches = ((X[:2], Y[:2]) for _ in range(4))
    tiny_model().fit(batches, steps_per_epoch=4, epochs=1, validation_data=(X, Y), validation_batch_size=4,
                     callbacks=[Spends(clock), runs.Pace(target=10, clock=clock)], shuffle=False, verbose=0)
    # 4 steps of 2 s, 3 gaps of 0.5 s (the first 0.5 s is the epoch's start), 2 validation batches,
    # 116 s in all (two significant digits); 6 steps to go at (116 - 2) / 3 s a step.
    assert capsys.readouterr().out == (
        "step 4 of 10: 2 s a step; the epoch took 120 s: 8 s in steps, 1.5 s between them, 6 s validating, "
        "100 s at its start and end; about 3.8 min to go\n"
    )


def test_backups_alternate_between_two_weight_files(tmp_path):
    fit(tiny_model(), [checkpoints(tmp_path, backup_every=1)], steps=2, epochs=2)
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == ["model-0.keras", "model-1.keras", "state.json"]
    assert state(tmp_path)["step"] == 4
    assert [row["step"] for row in runs.read_history(tmp_path / "history.csv")] == [2, 4]
    assert json.loads((tmp_path / "config.json").read_text())["step"] == 4


def test_a_failed_write_names_the_file_and_keeps_the_previous_backup(tmp_path, monkeypatch):
    save = keras.Model.save
    calls = []

    def disk_full_on_second_call(model, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return save(model, path, *args, **kwargs)

    monkeypatch.setattr(lw.Model, "save", disk_full_on_second_call)
    with pytest.raises(runs.RunFolderError) as error:
        fit(tiny_model(), [checkpoints(tmp_path, backup_every=1)])
    weights = tmp_path / "backup" / "model-1.keras"
    assert str(error.value).startswith(f"{weights}: cannot be written (No space left on device); the backup of step 1 is kept")
    assert f"resume with `sketch-rnn train --out {tmp_path}`" in str(error.value)
    assert state(tmp_path)["step"] == 1 and state(tmp_path)["slot"] == 0
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == ["model-0.keras", "state.json"]
    monkeypatch.undo()
    assert runs.restore(tmp_path, tiny_model)[1].step == 1


def test_a_folder_with_only_a_model_goes_on_from_its_step(tmp_path):
    model = tiny_model()
    fit(model, [], steps=3)
    model.save(tmp_path / "model.keras")
    (tmp_path / "history.csv").write_text("step,epoch,loss\n3,1,0.5\n")
    restored, point, rows = runs.restore(tmp_path, tiny_model)
    assert (point.step, point.epoch_start, [row["step"] for row in rows]) == (3, 3, [3])


def test_history_must_reach_the_start_of_the_epoch_in_progress(tmp_path):
    fit(tiny_model(), [checkpoints(tmp_path)], steps=2, epochs=2)
    (tmp_path / "history.csv").write_text("step,epoch,loss\n2,1,0.5\n")  # the row of step 4 cut off
    with pytest.raises(runs.RunFolderError, match="history.csv: has no row for step 4, where the epoch in progress"):
        runs.restore(tmp_path, tiny_model)


@given(step=st.integers(0, 50), epoch_start=st.integers(0, 50), target=st.integers(0, 100), epoch_steps=st.integers(1, 20))
def test_epochs_left_ends_every_epoch_steps_and_at_the_target(step, epoch_start, target, epoch_steps):
    epoch_start = min(epoch_start, step)
    lengths = [length for length, count in runs.epochs_left(step, epoch_start, target, epoch_steps) for _ in range(count)]
    assert sum(lengths) == max(target - step, 0)
    ends = np.cumsum([step, *lengths])[1:]
    assert all((end - epoch_start) % epoch_steps == 0 for end in ends[:-1])
    assert all(0 < length <= epoch_steps for length in lengths)
    assert not lengths or ends[-1] == target


GOOD_CONFIG = {
    "preset": "tiny", "hparams": {"z_size": 4}, "scale": 30.0, "classes": ["cat"], "step": 4,
    "data": {"source": "synthetic", "per_class": 20, "seed": 0}, "seed": 0, "target": 8, "epoch_steps": 2,
}


@pytest.mark.parametrize("text, problem", [
    (json.dumps(GOOD_CONFIG)[:60], r"is not valid JSON \(JSONDecodeError: "),
    ("[1, 2]", "holds no JSON object"),
    (json.dumps({**GOOD_CONFIG, "scale": "big"}), "'scale' is missing or not of type float"),
    (json.dumps({**GOOD_CONFIG, "hparams": {"z_size": "eight"}}), "hparams 'z_size' is not of type int"),
    (json.dumps({**GOOD_CONFIG, "hparams": {"zsize": 8}}), "hparams 'zsize' is not a field of sketch_rnn.model.HParams"),
    (json.dumps({**GOOD_CONFIG, "data": {"source": "web"}}), "'data' is not a synthetic or an npz data spec"),
    (json.dumps({**GOOD_CONFIG, "target": -1}), "'target' is not a non-negative integer"),
], ids=["cut short", "no object", "scale", "hparam type", "hparam name", "data", "target"])
def test_an_edited_config_names_the_file_and_the_problem(tmp_path, text, problem):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(runs.RunFolderError, match=f"^{re.escape(str(tmp_path / 'config.json'))}: {problem}") as error:
        runs.read_config(tmp_path)
    assert str(error.value).endswith("it was edited or cut short: put back a good copy, or train into a new --out")


def test_a_config_from_before_backups_reads_as_a_finished_run(tmp_path):
    old = {key: GOOD_CONFIG[key] for key in ("preset", "hparams", "scale", "data", "classes", "step")}
    (tmp_path / "config.json").write_text(json.dumps(old))
    config = runs.read_config(tmp_path)
    assert (config["seed"], config["target"], config["epoch_steps"]) == (0, 4, 500)


@pytest.mark.parametrize("text, problem", [
    ("step,epoch,loss\n2,1,0.5\n4,2", "line 3 has not the header's 3 fields"),
    ("step,epoch,loss\n2,1,0.5,7\n", "line 2 has not the header's 3 fields"),
    ("step,epoch,loss\n2,1,half\n", "line 2 holds no number where one belongs"),
    ("step,epoch,loss\n2,1,0.5\n2,1,0.5\n", "line 3: step 2 after step 2"),
    ("ste", "has no header with 'step' and 'epoch'"),
    ("", "has no header with 'step' and 'epoch'"),
], ids=["cut short", "extra field", "not a number", "repeated step", "header cut short", "empty"])
def test_an_edited_history_names_the_file_and_the_line(tmp_path, text, problem):
    path = tmp_path / "history.csv"
    path.write_text(text)
    with pytest.raises(runs.RunFolderError, match=f"^{re.escape(str(path))}: {problem}"):
        runs.read_history(path)
