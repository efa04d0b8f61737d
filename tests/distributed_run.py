"""Trains the same models on one device and on two, and prints what differs (run as a script).

``python tests/distributed_run.py jax`` (2 virtual CPU devices, ``keras.distribution.DataParallel``)
or ``tensorflow`` (2 logical CPUs, ``tf.distribute.MirroredStrategy``). For a functional, a
subclassed and a Sequential ``lw.Model`` with a tap, a scheduled term and an ``lw.metric`` of every
aggregation, it compares ``fit``'s history, ``evaluate``, the step counter and the final weights, and
checks that ``predict`` returns the declared outputs only. Prints ``SAME <style>`` for each style
that matches and exits with status 1 on the first difference. ``tests/test_distribution.py`` runs it.
"""

import os
import sys

RTOL = 1e-5


def _setup(engine):
    """Two devices for `engine`: `(one_device_scope, two_device_scope, copies)` where
    `copies(variable)` counts the devices holding the variable."""
    if engine == "jax":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        os.environ["KERAS_BACKEND"] = "jax"
        import contextlib

        import jax
        import keras

        assert len(jax.devices()) == 2, jax.devices()

        @contextlib.contextmanager
        def data_parallel():
            keras.distribution.set_distribution(keras.distribution.DataParallel())
            try:
                yield
            finally:
                keras.distribution.set_distribution(None)

        return (contextlib.nullcontext, data_parallel,
                lambda variable: len(variable.value.sharding.device_set))
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    return (lambda: tf.distribute.get_strategy().scope(), mirrored.scope,
            lambda variable: len(getattr(variable.value, "values", [variable.value])))


def main(engine):
    one_device, two_devices, copies = _setup(engine)
    import keras
    import numpy as np
    from keras import ops

    import lossweave as lw

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

    def sequential():
        return lw.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                              lw.Tap("hidden"), keras.layers.Dense(1)])

    def error_metrics():
        """`lw.metric`s a plain `keras.Model` can compute (of `y_true` and `y_pred` only)."""
        error = lambda y_true, y_pred: ops.abs(y_true - y_pred)  # noqa: E731
        return [
            lw.metric(error, name="m_masked_mean", aggregation="masked_mean"),
            lw.metric(lambda y_pred: (y_pred, ops.ones_like(y_pred)), name="m_ratio",
                      aggregation="ratio"),
            lw.metric(error, name="m_sum", aggregation="sum"),
            lw.metric(error, name="m_max", aggregation="max"),
            lw.metric(lambda y_pred: y_pred, name="m_min", aggregation="min"),
        ]

    def metrics():
        hidden_mean = lambda hidden: ops.mean(hidden, axis=-1)  # noqa: E731
        return [lw.metric(hidden_mean, name="m_mean"), *error_metrics(),
                lw.metric(hidden_mean, name="m_last", aggregation="last")]

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype("float32")
    y = (3.0 * rng.normal(size=(30, 1))).astype("float32")
    x_val, y_val = x[:16] * 2.0, y[:16] - 1.0

    def run(scope, build):
        with scope():
            keras.utils.set_random_seed(0)
            model = build()
            model.compile(
                optimizer=keras.optimizers.SGD(0.05),
                loss=lw.Objective({
                    "mse": "mse",
                    "act": lw.Term(lambda hidden: ops.mean(hidden**2, axis=-1),
                                   weight=lw.schedules.linear(0.0, 1.0, steps=6)),
                }),
                metrics=metrics(),
            )
            history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0,
                                validation_data=(x_val, y_val)).history
            evaluation = model.evaluate(x_val, y_val, batch_size=8, verbose=0, return_dict=True)
            predictions = model.predict(x_val, batch_size=8, verbose=0)
        return {
            "history": history,
            "evaluation": evaluation,
            "step": int(ops.convert_to_numpy(model.step)),
            "copies": copies(model.trainable_variables[0]),
            "weights": model.get_weights(),
            "predictions": predictions,
        }

    for build in (functional, Subclassed, sequential):
        single, parallel = run(one_device, build), run(two_devices, build)
        assert sorted(parallel["history"]) == sorted(single["history"]), (
            sorted(parallel["history"]), sorted(single["history"]))
        for key, values in single["history"].items():
            np.testing.assert_allclose(parallel["history"][key], values, rtol=RTOL, atol=1e-6,
                                       err_msg=f"{build.__name__}: history {key}")
        for key, value in single["evaluation"].items():
            np.testing.assert_allclose(parallel["evaluation"][key], value, rtol=RTOL, atol=1e-6,
                                       err_msg=f"{build.__name__}: evaluate {key}")
        assert (single["copies"], parallel["copies"]) == (1, 2), (single["copies"], parallel["copies"])
        assert parallel["step"] == single["step"] == 12, (parallel["step"], single["step"])
        for a, b in zip(parallel["weights"], single["weights"], strict=True):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-6, err_msg=build.__name__)
        for result in (single, parallel):
            assert isinstance(result["predictions"], np.ndarray), type(result["predictions"])
            assert result["predictions"].shape == (16, 1), result["predictions"].shape
        np.testing.assert_allclose(parallel["predictions"], single["predictions"], rtol=RTOL,
                                   atol=1e-6)
        print("SAME", build.__name__, flush=True)

    def plain_keras_evaluation(scope):
        with scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
            model.compile(loss="mse", metrics=error_metrics())
            return model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)

    single, parallel = plain_keras_evaluation(one_device), plain_keras_evaluation(two_devices)
    for key, value in single.items():
        np.testing.assert_allclose(parallel[key], value, rtol=RTOL, atol=1e-6,
                                   err_msg=f"keras.Sequential: evaluate {key}")
    print("SAME keras.Sequential", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
