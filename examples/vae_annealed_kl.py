"""Seed example (c): a VAE whose KL weight is annealed.

Keras 2: the KL term closed over the symbolic `z_mean`, `z_log_var`, and its weight was a
`K.variable` moved by a callback (`K.set_value(beta, ...)` in `on_epoch_begin`). Neither works in
Keras 3. lossweave: tap `z_mean` and `z_log_var`, and give the KL term a schedule of the step; it
is computed inside the compiled train step, logged as `kl` and `kl_weight`, and saved with the model.

Run: `python examples/vae_annealed_kl.py`
"""

import keras
import numpy as np
from keras import ops

import lossweave as lw


@keras.saving.register_keras_serializable(package="lossweave_examples")
class Sampling(keras.layers.Layer):
    """z = mean + exp(log_var / 2) * eps, eps ~ N(0, I)."""

    def __init__(self, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        eps = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def build_model(input_dim=64, latent_dim=4):
    inputs = keras.Input((input_dim,))
    h = keras.layers.Dense(32, activation="relu")(inputs)
    z_mean = keras.layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = keras.layers.Dense(latent_dim, name="z_log_var")(h)
    z = Sampling()([z_mean, z_log_var])
    h = keras.layers.Dense(32, activation="relu")(z)
    reconstruction = keras.layers.Dense(input_dim, activation="sigmoid")(h)
    return lw.Model(inputs, reconstruction, taps={"z_mean": z_mean, "z_log_var": z_log_var})


def objective(anneal_steps=100):
    return lw.Objective({
        "reconstruction": "binary_crossentropy",
        "kl": lw.Term(lw.losses.gaussian_kl,
                      weight=lw.schedules.linear(0.0, 1.0, steps=anneal_steps)),
    })


def make_data(n=1024, input_dim=64, seed=0):
    """Binary images of random bars: a tiny stand-in for MNIST, generated, not downloaded."""
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(input_dim))
    images = np.zeros((n, side, side), dtype="float32")
    rows, cols = rng.integers(0, side, n), rng.integers(0, side, n)
    images[np.arange(n), rows, :] = 1.0
    images[np.arange(n), :, cols] = 1.0
    return images.reshape(n, -1)


def main(epochs=5, n=1024, verbose=2):
    x = make_data(n)
    model = build_model()
    model.compile(optimizer="adam", loss=objective())
    history = model.fit(x, x, batch_size=64, epochs=epochs, verbose=verbose)
    return model, history, x


if __name__ == "__main__":
    main()
