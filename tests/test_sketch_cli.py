"""The sketch-rnn command: train, resume, sample, reconstruct, interpolate, and clear errors."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest
from matplotlib.image import imread

import lossweave as lw
from sketch_rnn import cli, data, recurrent, render, runs
from sketch_rnn.cli import main
from sketch_rnn.model import HParams, kl_weight

TRAIN = ["train", "--data", "synthetic", "--per-class", "20", "--preset", "tiny"]


def png_shape(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path).shape


def history(out):
    with open(out / "history.csv", newline="") as file:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(file)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A folder trained with the tiny preset: 4 steps in epochs of 2."""
    out = tmp_path_factory.mktemp("run")
    main(TRAIN + ["--out", str(out)])
    return out


def test_train_writes_model_config_history_and_pictures(run, capsys):
    for name in ("losses.png", "samples.png", "reconstructions.png", "interpolation.png"):
        assert len(png_shape(run / name)) == 3
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == "tiny" and config["step"] == 4 and config["scale"] > 0
    assert config["classes"] == ["circle", "square", "triangle", "star", "spiral", "house"]
    assert config["data"] == {"source": "synthetic", "per_class": 20, "seed": 0}
    rows = history(run)
    assert [row["step"] for row in rows] == [2, 4]
    assert {"loss", "offset", "pen", "kl", "kl_weight", "lr", "val_offset", "val_pen", "val_kl"} <= set(rows[0])
    model = keras.models.load_model(run / "model.keras")
    assert int(keras.ops.convert_to_numpy(model.step.value)) == 4


def test_resume_continues_step_count_and_kl_schedule(run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    main(["train", "--out", str(out), "--steps", "4"])
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{out}: resuming its finished run for --steps 4 more, starting at step 4 of 8: 4 steps")
    lines = (out / "history.csv").read_text().splitlines()[1:]
    assert [line.split(",")[:2] for line in lines] == [["2", "1"], ["4", "2"], ["6", "3"], ["8", "4"]]
    rows = history(out)
    assert [row["step"] for row in rows] == [2, 4, 6, 8]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    schedule = kl_weight(HParams(**json.loads((out / "config.json").read_text())["hparams"]))
    for row in rows:  # an epoch's kl_weight is the mean over its two steps
        expected = np.mean([float(schedule(row["step"] - 2)), float(schedule(row["step"] - 1))])
        np.testing.assert_allclose(row["kl_weight"], expected, rtol=1e-5)
    model = keras.models.load_model(out / "model.keras")
    assert int(keras.ops.convert_to_numpy(model.step.value)) == 8


def test_a_finished_run_says_so_on_its_first_line_and_trains_nothing(run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    main(["train", "--out", str(out)])
    output = capsys.readouterr()
    assert output.out.splitlines()[0] == (
        f"{out}: holds a run finished at step 4, starting at step 4 of 4: nothing to train, its pictures are "
        "redrawn (--steps N trains N more steps; another --out starts a new run)")
    assert len(history(out)) == 2
    # The synthetic set has sketches longer than the tiny preset's 12 points.
    assert re.search(r"warning: \d+ sketches \(\d+ train, \d+ valid, \d+ test\) have more than max_seq_len=12 "
                     r"points and are left out; a new run with --set max_seq_len=N", output.err)


def test_a_new_run_states_its_step_budget_and_how_long_it_takes():
    config = {"preset": "paper", "target": 10_000_000}
    assert cli._first_line("runs/x", config, runs.RestorePoint(0, 0, {}), new=True, more=None) == (
        "runs/x: a new 'paper' run, starting at step 0 of 10,000,000: 10,000,000 steps, about 290 days at "
        "~2.5 s a step (the paper preset on the 2-core CPU of benchmarks/RESULTS.md) "
        "(the preset's num_steps; --steps N for another budget)")


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="TensorFlow's own logs are kept on its backend")
def test_tensorflow_log_lines_are_kept_off_on_other_backends():
    script = "from sketch_rnn import cli\ncli._quiet_tensorflow()\nimport tensorflow"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "cpu_feature_guard" not in done.stderr and "absl" not in done.stderr, done.stderr


def test_a_stopped_run_is_finished_before_it_is_given_more_steps(run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "target": 10}))  # as if stopped at step 4 of 10
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(out), "--steps", "5"])
    assert exit_info.value.code == 2
    assert f"stopped at step 4 of 10: finish it with `sketch-rnn train --out {out}` (no --steps)" in capsys.readouterr().err


def test_resume_refuses_another_preset(run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(run), "--preset", "demo"])
    assert exit_info.value.code == 2
    assert "'tiny' run" in capsys.readouterr().err


def test_pictures_are_redrawn_after_every_epoch_and_go_to_tensorboard(tmp_path, monkeypatch):
    out, seen = tmp_path / "run", []
    pace_end = runs.Pace.on_epoch_end

    def after_the_pictures(self, epoch, logs=None):  # Pace's callback runs after EpochPictures'
        # Pictures are written atomically (a new file replacing the old): each drawing a new inode.
        seen.append({name: (out / name).stat().st_ino for name in ("samples.png", "reconstructions.png")})
        pace_end(self, epoch, logs)

    monkeypatch.setattr(runs.Pace, "on_epoch_end", after_the_pictures)
    main(TRAIN + ["--tensorboard", "--out", str(out)])
    assert len(seen) == 2  # epochs 1 and 2 of 2: the pictures exist after epoch 1
    assert all(seen[0][name] != seen[1][name] for name in seen[0])  # and are drawn again after epoch 2
    assert seen[1] == {name: (out / name).stat().st_ino for name in seen[1]}  # not drawn again at the end

    import tensorflow as tf  # TensorBoard's event files, read on any backend

    def tags(folder):
        found = {}
        for events in (out / "logs" / folder).glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(events)):
                for value in event.summary.value:
                    found.setdefault(value.tag, set()).add(event.step)
        return found

    assert {"epoch_loss", "epoch_kl", "epoch_offset", "epoch_pen"} <= set(tags("train"))
    assert {"epoch_loss", "epoch_kl"} <= set(tags("validation"))
    pictures = tags("pictures")
    assert {tag: steps for tag, steps in pictures.items()} == {
        "samples": {1, 2}, "reconstructions": {1, 2}, "interpolation": {1, 2}}


def test_sample_writes_a_grid_and_svgs(run):
    main(["sample", "--out", str(run), "--n", "3", "--temperature", "0.4"])
    assert len(png_shape(run / "sample" / "grid.png")) == 3
    svgs = sorted((run / "sample").glob("*.svg"))
    assert [p.name for p in svgs] == ["000.svg", "001.svg", "002.svg"]
    assert svgs[0].read_text().startswith("<svg")


def test_reconstruct_writes_pairs(run):
    main(["reconstruct", "--out", str(run), "--n", "2", "--split", "valid"])
    assert len(png_shape(run / "reconstruct" / "pairs.png")) == 3
    assert len(list((run / "reconstruct").glob("*.svg"))) == 2


def test_complete_writes_pairs_of_kept_parts_and_completions(run):
    main(["complete", "--out", str(run), "--n", "3", "--keep", "0.4", "--split", "valid"])
    assert len(png_shape(run / "complete" / "pairs.png")) == 3
    svgs = sorted((run / "complete").glob("*.svg"))
    assert len(svgs) == 3 and all(render.PREFIX_COLOUR in svg.read_text() for svg in svgs)


def test_interpolate_writes_a_strip(run):
    main(["interpolate", "--out", str(run), "--n", "4", "--pair", "0", "1"])
    assert len(png_shape(run / "interpolate" / "strip.png")) == 3
    assert len(list((run / "interpolate").glob("*.svg"))) == 6  # the two sketches and 4 between


def test_diagnostics_log_gradient_norms_and_cosines_and_draw_a_third_panel(run, tmp_path):
    out = tmp_path / "run"
    main(TRAIN + ["--diagnostics", "1", "--out", str(out)])
    rows = history(out)
    grads = {f"{term}_grad_{what}" for term in ("offset", "pen", "kl") for what in ("norm", "cos")}
    assert grads <= set(rows[0])
    assert not [name for name in rows[0] if name.startswith("val_") and "_grad_" in name]
    for row in rows:
        assert all(np.isfinite(row[name]) for name in grads)
        assert row["offset_grad_norm"] > 0 and row["pen_grad_norm"] > 0
        assert all(-1.0 <= row[f"{term}_grad_cos"] <= 1.0 for term in ("offset", "pen", "kl"))
    assert json.loads((out / "config.json").read_text())["diagnostics"] == 1
    height, width, _ = png_shape(out / "losses.png")
    assert width == 1.5 * png_shape(run / "losses.png")[1]  # three panels where there are two


def test_unconditional_run_trains_and_samples_but_has_no_encoder(tmp_path, capsys):
    out = tmp_path / "run"
    main(TRAIN + ["--unconditional", "--out", str(out)])
    output = capsys.readouterr().out
    assert output.startswith(f"{out}: a new 'tiny' run, starting at step 0 of 4: 4 steps (the preset's num_steps")
    assert re.search(r"^step 4 of 4: [0-9.e-]+ (s|min) a step; the epoch took .* validating, .*; about 0 s to go$",
                     output, re.MULTILINE)
    assert json.loads((out / "config.json").read_text())["hparams"]["conditional"] is False
    rows = history(out)
    assert {"offset", "pen", "val_offset"} <= set(rows[0]) and "kl" not in rows[0]
    assert all(np.isfinite(row["loss"]) for row in rows)
    assert (out / "samples.png").exists() and not (out / "reconstructions.png").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["reconstruct", "--out", str(out)])
    assert exit_info.value.code == 2
    assert "needs a conditional model" in capsys.readouterr().err


@pytest.mark.parametrize("dec_model, enc_model, cell", [
    ("layer_norm", "layer_norm", recurrent.LayerNormLSTMCell),
    ("hyper", "lstm", recurrent.HyperLSTMCell),
])
def test_each_decoder_cell_trains_saves_loads_and_samples(tmp_path, capsys, dec_model, enc_model, cell):
    out = tmp_path / "run"
    main(TRAIN + ["--steps", "2", "--set", f"dec_model={dec_model}", "--set", f"enc_model={enc_model}",
                  "--set", "recurrent_dropout=0.1", "--set", "hyper_num_units=8", "--set", "hyper_embedding_size=4",
                  "--out", str(out)])
    assert all(np.isfinite(row["loss"]) and np.isfinite(row["val_offset"]) for row in history(out))
    model = keras.models.load_model(out / "model.keras")
    assert type(model.get_layer("decoder").cell) is cell
    assert model.get_layer("decoder").cell.recurrent_dropout == 0.1
    assert model.get_layer("encoder").cell == enc_model
    if cell is recurrent.HyperLSTMCell:
        assert model.get_layer("decoder").cell.state_size == [16, 16, 8, 8]
    main(["sample", "--out", str(out), "--n", "2"])
    assert len(list((out / "sample").glob("*.svg"))) == 2


def test_an_unknown_cell_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(TRAIN + ["--set", "dec_model=gru", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "dec_model must be one of lstm, layer_norm, hyper; got 'gru'" in capsys.readouterr().err


def test_set_overrides_hyperparameters_of_a_new_run_only(run, tmp_path, capsys):
    out = tmp_path / "run"
    main(TRAIN + ["--set", "recurrent_dropout=0.25", "--set", "augment=true", "--out", str(out)])
    hparams = json.loads((out / "config.json").read_text())["hparams"]
    assert (hparams["recurrent_dropout"], hparams["augment"]) == (0.25, True)
    assert keras.models.load_model(out / "model.keras").get_layer("decoder").recurrent_dropout == 0.25
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(run), "--set", "z_size=8"])
    assert exit_info.value.code == 2
    assert "hyperparameters are fixed" in capsys.readouterr().err


def runs_code_npz(path, command):
    """An .npz whose 'train' split pickles a call of os.system(command)."""

    class RunsCode:
        def __reduce__(self):
            return os.system, (command,)

    splits = {split: np.empty(1, dtype=object) for split in data.SPLITS}
    splits["train"][0] = RunsCode()
    np.savez(path, **splits)


def flipped_zip_directory(path):
    splits = {split: np.empty(1, dtype=object) for split in data.SPLITS}
    for split in splits.values():
        split[0] = np.array([[1, 2, 1]], np.int16)
    np.savez(path, **splits)
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"PK\x01\x02") + 1] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("write, problem", [
    (lambda path, pwned: path.write_bytes(b"not a zip file"), "not an .npz (zip) file"),
    (lambda path, pwned: runs_code_npz(path, f"touch {pwned}"), "split 'train' refers to posix.system"),
    (lambda path, pwned: flipped_zip_directory(path), "its zip directory is corrupt (BadZipFile: Bad magic number"),
], ids=["not a zip", "runs code", "damaged"])
def test_a_bad_npz_file_is_one_error_line_and_runs_nothing(tmp_path, capsys, write, problem):
    bad, pwned = tmp_path / "cat.npz", tmp_path / "PWNED"
    write(bad, pwned)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(bad), "--preset", "tiny", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sketch-rnn: error: {bad}: {problem}") and err.count("\n") == 1
    assert not pwned.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, edit, argv, problem", [
    ("config.json", lambda text: text[: len(text) // 2], ["sample"], "is not valid JSON"),
    ("config.json", lambda text: text.replace('"scale"', '"scal"'), ["train", "--steps", "2"], "'scale' is missing"),
    ("history.csv", lambda text: text.rsplit(",", 2)[0], ["train", "--steps", "2"], "line 3 has not the header's"),
], ids=["config cut short", "config edited", "history cut short"])
def test_an_edited_run_folder_file_is_one_error_line_naming_it(run, tmp_path, capsys, name, edit, argv, problem):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    (out / name).write_text(edit((out / name).read_text()))
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sketch-rnn: error: {out / name}: {problem}") and err.count("\n") == 1


# --- stopped runs ---------------------------------------------------------------------------------

STOPPABLE = TRAIN + ["--set", "steps_per_epoch=6", "--steps", "18", "--backup-every", "4"]
THROTTLE = "data.arrays = lambda *args, fast=data.arrays: (time.sleep(0.05), fast(*args))[1]"


def slow_arrays(*args, fast=data.arrays):
    """At most a batch every 50 ms, so that a tiny run can be stopped half-way."""
    time.sleep(0.05)
    return fast(*args)


def backup_state(out):
    path = out / "backup" / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def wait_for(condition, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_killed_then_interrupted_run_resumes_to_its_target_with_an_unbroken_history(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    # SIGKILL once the first backup inside an epoch is on disk (epochs end at steps 6, 12, 18).
    script = f"import sys, time\nfrom sketch_rnn import cli, data\n{THROTTLE}\ncli.main(sys.argv[1:])"
    with open(tmp_path / "child.log", "w") as log:
        child = subprocess.Popen([sys.executable, "-c", script, *STOPPABLE, "--out", str(out)], stdout=log, stderr=log)
        wait_for(lambda: child.poll() is not None or (backup_state(out) or {}).get("step", 6) % 6)
        child.kill()
        assert child.wait() == -signal.SIGKILL, (tmp_path / "child.log").read_text()
    killed = backup_state(out)
    assert killed["step"] % 4 == 0 and killed["step"] < 18

    # Resumed with no arguments, then Ctrl-C after its next backup: a backup at once, status 130.
    monkeypatch.setattr(data, "arrays", slow_arrays)
    ctrl_c = threading.Thread(target=lambda: (wait_for(lambda: backup_state(out)["step"] > killed["step"]),
                                              os.kill(os.getpid(), signal.SIGINT)))
    ctrl_c.start()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(out)])
    ctrl_c.join()
    interrupted = backup_state(out)
    output = capsys.readouterr()
    assert exit_info.value.code == 130 and f"starting at step {killed['step']} of 18" in output.out.splitlines()[0]
    assert output.err.endswith(f"sketch-rnn: interrupted at step {interrupted['step']}, backup saved; "
                               f"resume with `sketch-rnn train --out {out}`\n")

    # Resumed again: on to step 18, a history row every 6 steps, the schedules continued.
    monkeypatch.undo()
    main(["train", "--out", str(out)])
    assert f"starting at step {interrupted['step']} of 18" in capsys.readouterr().out.splitlines()[0]
    rows = history(out)
    assert [row["step"] for row in rows] == [6, 12, 18] and [row["epoch"] for row in rows] == [1, 2, 3]
    hps = HParams(**json.loads((out / "config.json").read_text())["hparams"])
    learning_rate = lw.schedules.exponential_approach(hps.learning_rate, hps.min_learning_rate, decay=hps.decay_rate)
    for row in rows:  # an epoch's kl_weight is the mean over its steps, those before a stop included
        expected = np.mean([float(kl_weight(hps)(step)) for step in range(int(row["step"]) - 6, int(row["step"]))])
        np.testing.assert_allclose(row["kl_weight"], expected, rtol=1e-5)
        np.testing.assert_allclose(row["lr"], float(learning_rate(row["step"])), rtol=1e-5)
    model = keras.models.load_model(out / "model.keras")
    assert int(keras.ops.convert_to_numpy(model.step.value)) == 18 == backup_state(out)["step"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "missing.npz", "--out", "{tmp}"], "missing.npz: no such file"),
    (["train", "--out", "{tmp}"], "a new run needs --data"),
    (["sample", "--out", "{tmp}"], "no trained model here"),
    (["train", "--data", "synthetic", "--preset", "huge", "--out", "{tmp}"], "invalid choice: 'huge'"),
    (["sample", "--out", "{tmp}", "--temperature", "0"], "must be > 0"),
    (["complete", "--out", "{tmp}", "--keep", "1.5"], "must be in (0, 1], got 1.5"),
    (["train", "--data", "synthetic", "--set", "zsize=8", "--out", "{tmp}"], "KEY one of enc_rnn_size"),
    (["train", "--data", "synthetic", "--set", "z_size=eight", "--out", "{tmp}"], "z_size must be of type int"),
    (["train", "--data", "synthetic", "--set", "augment=1", "--out", "{tmp}"], "augment is true or false"),
    (["interpolate", "--out", "{run}", "--pair", "0", "999"], "cannot pick sketches [0, 999]"),
])
def test_bad_arguments_exit_with_status_2(argv, message, run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([arg.format(tmp=tmp_path, run=run) for arg in argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
