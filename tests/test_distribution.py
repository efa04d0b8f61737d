"""Under a distribution strategy the objective equals the single-device one (loss and update)."""

import os
import subprocess
import sys
import textwrap

import keras
import pytest

SCRIPT = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, lossweave as lw
    from keras import ops

    class Subclassed(lw.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(3, activation="relu")
            self.head = keras.layers.Dense(1)

        def call(self, inputs):
            return self.head(lw.tap("hidden", self.hidden(inputs)))

    def functional():
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(3, activation="relu")(inputs)
        return lw.Model(inputs, keras.layers.Dense(1)(hidden), taps={"hidden": hidden})

    def run(strategy, build):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = build()
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss=lw.Objective({
                "mse": "mse",
                "act": lw.Term(lambda hidden: ops.mean(hidden ** 2, axis=-1),
                               weight=lw.schedules.linear(0.0, 1.0, steps=4))}),
                metrics=[lw.metric(lambda hidden: ops.mean(hidden, axis=-1), name="hidden_mean")])
        rng = np.random.default_rng(0)
        x = rng.normal(size=(16, 4)).astype("float32"); y = rng.normal(size=(16, 1)).astype("float32")
        logs = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        return logs, model.get_weights()

    for build in (functional, Subclassed):
        single, w1 = run(tf.distribute.get_strategy(), build)
        mirrored, w2 = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), build)
        for key in ("loss", "mse", "act", "act_weight", "hidden_mean"):
            np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-5, err_msg=key)
        for a, b in zip(w1, w2):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        print("SAME", build.__name__, single["loss"], mirrored["loss"])
""")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="tf.distribute.MirroredStrategy belongs to the TensorFlow backend")
def test_mirrored_strategy_matches_single_device():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("SAME") == 2
