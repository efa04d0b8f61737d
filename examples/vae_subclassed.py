"""The keras.io VAE ("Variational AutoEncoder", fchollet) as a subclassed `lw.Model`.

What a user deletes from the keras.io version: the hand-written `train_step` (the `GradientTape`,
the gradient and optimizer lines), the three `keras.metrics.Mean` trackers and the `metrics`
property that lists them. What changes: `class VAE(lw.Model)` instead of `keras.Model`, two
`lw.Tap` layers naming `z_mean` and `z_log_var` inside the encoder, a `call` that returns the
decoding, and the loss as two named terms in `compile`, the KL weight annealed by a schedule.
`fit` then logs `recon`, `kl` and `kl_weight` (and their `val_` forms); `evaluate`, validation
data, callbacks, `predict` and `.keras` saving work as for any Keras model.

Run: `python examples/vae_subclassed.py`
"""

import keras
import numpy as np
from keras import layers, ops

import lossweave as lw


@keras.saving.register_keras_serializable(package="lossweave_examples")
class Sampling(layers.Layer):
    """Uses (z_mean, z_log_var) to sample z, the vector encoding a digit."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1337)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(shape=ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon


def build_encoder(latent_dim, side=28):
    encoder_inputs = keras.Input(shape=(side, side, 1))
    x = layers.Conv2D(8, 3, activation="relu", strides=2, padding="same")(encoder_inputs)
    x = layers.Flatten()(x)
    x = layers.Dense(16, activation="relu")(x)
    z_mean = lw.Tap("z_mean")(layers.Dense(latent_dim, name="z_mean")(x))
    z_log_var = lw.Tap("z_log_var")(layers.Dense(latent_dim, name="z_log_var")(x))
    z = Sampling()([z_mean, z_log_var])
    return keras.Model(encoder_inputs, [z_mean, z_log_var, z], name="encoder")


def build_decoder(latent_dim, side=28):
    latent_inputs = keras.Input(shape=(latent_dim,))
    x = layers.Dense((side // 2) * (side // 2) * 8, activation="relu")(latent_inputs)
    x = layers.Reshape((side // 2, side // 2, 8))(x)
    x = layers.Conv2DTranspose(8, 3, activation="relu", strides=2, padding="same")(x)
    decoder_outputs = layers.Conv2DTranspose(1, 3, activation="sigmoid", padding="same")(x)
    return keras.Model(latent_inputs, decoder_outputs, name="decoder")


@keras.saving.register_keras_serializable(package="lossweave_examples")
class VAE(lw.Model):
    def __init__(self, latent_dim=2, side=28, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.side = latent_dim, side
        self.encoder = build_encoder(latent_dim, side)
        self.decoder = build_decoder(latent_dim, side)

    def call(self, inputs, training=False):
        z_mean, z_log_var, z = self.encoder(inputs, training=training)
        return self.decoder(z, training=training)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "side": self.side}


@keras.saving.register_keras_serializable(package="lossweave_examples")
def reconstruction(y_true, y_pred):
    """Binary cross-entropy summed over the pixels of each image (keras.io's reconstruction loss)."""
    return ops.sum(keras.losses.binary_crossentropy(y_true, y_pred), axis=(1, 2))


def objective(anneal_steps=100):
    return lw.Objective({
        "recon": reconstruction,
        "kl": lw.Term(lw.losses.gaussian_kl,
                      weight=lw.schedules.linear(0.0, 1.0, steps=anneal_steps)),
    })


def make_data(n=512, side=28, seed=0):
    """Binary images of random bars: a tiny stand-in for MNIST, generated, not downloaded."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, side, side), dtype="float32")
    rows, cols = rng.integers(0, side, n), rng.integers(0, side, n)
    images[np.arange(n), rows, :] = 1.0
    images[np.arange(n), :, cols] = 1.0
    return images[..., None]


def main(epochs=5, n=512, side=28, verbose=2):
    x = make_data(n, side)
    vae = VAE(side=side)
    vae.compile(optimizer=keras.optimizers.Adam(), loss=objective())
    history = vae.fit(x, x, epochs=epochs, batch_size=64, validation_split=0.25, verbose=verbose)
    return vae, history, x


if __name__ == "__main__":
    main()
