"""The sketch-rnn command: train, resume, sample, reconstruct, interpolate, and clear errors."""

import csv
import json
import shutil

import keras
import numpy as np
import pytest
from matplotlib.image import imread

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


def test_resume_continues_step_count_and_kl_schedule(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    main(["train", "--out", str(out), "--steps", "4"])
    rows = history(out)
    assert [row["step"] for row in rows] == [2, 4, 6, 8]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    schedule = kl_weight(HParams(**json.loads((out / "config.json").read_text())["hparams"]))
    for row in rows:  # an epoch's kl_weight is the mean over its two steps
        expected = np.mean([float(schedule(row["step"] - 2)), float(schedule(row["step"] - 1))])
        np.testing.assert_allclose(row["kl_weight"], expected, rtol=1e-5)
    model = keras.models.load_model(out / "model.keras")
    assert int(keras.ops.convert_to_numpy(model.step.value)) == 8


def test_resume_refuses_another_preset(run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(run), "--preset", "demo"])
    assert exit_info.value.code == 2
    assert "'tiny' run" in capsys.readouterr().err


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


def test_interpolate_writes_a_strip(run):
    main(["interpolate", "--out", str(run), "--n", "4", "--pair", "0", "1"])
    assert len(png_shape(run / "interpolate" / "strip.png")) == 3
    assert len(list((run / "interpolate").glob("*.svg"))) == 6  # the two sketches and 4 between


def test_unconditional_run_trains_and_samples_but_has_no_encoder(tmp_path, capsys):
    out = tmp_path / "run"
    main(TRAIN + ["--unconditional", "--out", str(out)])
    assert json.loads((out / "config.json").read_text())["hparams"]["conditional"] is False
    rows = history(out)
    assert {"offset", "pen", "val_offset"} <= set(rows[0]) and "kl" not in rows[0]
    assert all(np.isfinite(row["loss"]) for row in rows)
    assert (out / "samples.png").exists() and not (out / "reconstructions.png").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["reconstruct", "--out", str(out)])
    assert exit_info.value.code == 2
    assert "needs a conditional model" in capsys.readouterr().err


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


def test_a_bad_npz_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "cat.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(bad), "--preset", "tiny", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sketch-rnn: error: ") and str(bad) in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "missing.npz", "--out", "{tmp}"], "missing.npz: no such file"),
    (["train", "--out", "{tmp}"], "a new run needs --data"),
    (["sample", "--out", "{tmp}"], "no trained model here"),
    (["train", "--data", "synthetic", "--preset", "huge", "--out", "{tmp}"], "invalid choice: 'huge'"),
    (["sample", "--out", "{tmp}", "--temperature", "0"], "must be > 0"),
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
