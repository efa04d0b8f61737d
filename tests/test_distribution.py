"""Data-parallel training on two devices logs and updates exactly what one device does.

Each engine runs `tests/distributed_run.py` in a fresh process (the devices must be set up before
the backend starts): JAX's `keras.distribution.DataParallel` on 2 virtual CPU devices, and
TensorFlow's `tf.distribute.MirroredStrategy` on 2 logical CPUs. The torch backend of Keras 3.15
has no data parallelism in `fit`, so there is nothing to run on torch.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

SCRIPT = Path(__file__).with_name("distributed_run.py")
STYLES = ("functional", "Subclassed", "sequential", "keras.Sequential")


def _run(engine):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, str(SCRIPT), engine], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert [line.split(" ", 1)[1] for line in result.stdout.splitlines()
            if line.startswith("SAME ")] == list(STYLES)


@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="keras.distribution.DataParallel runs on the JAX backend")
def test_jax_data_parallel_matches_one_device():
    _run("jax")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="tf.distribute.MirroredStrategy belongs to the TensorFlow backend")
def test_mirrored_strategy_matches_one_device():
    _run("tensorflow")
