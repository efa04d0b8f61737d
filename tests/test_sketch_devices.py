"""``sketch-rnn train --distribute``: the tiny preset on 2 devices trains as on one.

Each engine runs in a fresh process with 2 devices (JAX: 2 virtual CPU devices; TensorFlow: 2
logical CPUs), trains the same run on one device and on both, and prints both histories. On JAX
the conditional model matches. On TensorFlow each replica draws its own noise for its part of the
batch (the encoder's sampled z), so only a model without random draws can match exactly: the
unconditional one. Keras 3.15 has no data parallelism in ``fit`` on torch; there the flag is an
error that says so.
"""

import csv
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from sketch_rnn import cli

SCRIPT = textwrap.dedent("""
    import os, sys
    engine, folder, *flags = sys.argv[1:]
    if engine == "jax":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    else:
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from sketch_rnn import cli
    for name, more in (("one", []), ("two", ["--distribute"])):
        cli.main(["train", "--data", "synthetic", "--per-class", "40", "--preset", "tiny",
                  "--out", os.path.join(folder, name), *flags, *more])
""")


def _history(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _train_on_one_and_two(engine, tmp_path, *flags):
    env = dict(os.environ, KERAS_BACKEND=engine, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", SCRIPT, engine, str(tmp_path), *flags], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "data parallel on 2 devices" in result.stdout
    one, two = _history(tmp_path / "one" / "history.csv"), _history(tmp_path / "two" / "history.csv")
    assert [row["step"] for row in two] == [row["step"] for row in one] == ["2", "4"]
    assert list(two[0]) == list(one[0])
    for column in one[0]:
        np.testing.assert_allclose([float(row[column]) for row in two],
                                   [float(row[column]) for row in one], rtol=1e-5, err_msg=column)
    return list(one[0])


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution runs on JAX")
def test_jax_data_parallel_trains_as_one_device(tmp_path):
    columns = _train_on_one_and_two("jax", tmp_path)
    assert {"kl", "kl_weight", "offset", "pen", "val_loss"} <= set(columns)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="tf.distribute belongs to the TensorFlow backend")
def test_mirrored_strategy_trains_as_one_device(tmp_path):
    columns = _train_on_one_and_two("tensorflow", tmp_path, "--unconditional")
    assert {"offset", "pen", "val_loss", "lr"} <= set(columns)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch backend's answer")
def test_torch_says_it_has_no_data_parallel_fit(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--data", "synthetic", "--preset", "tiny", "--out", str(tmp_path / "run"),
                  "--distribute"])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "no data parallelism for the torch backend" in error
    assert "KERAS_BACKEND=jax" in error
    assert not (tmp_path / "run").exists()
