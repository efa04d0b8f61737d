"""Named hyperparameter sets: ``paper``, ``small``, ``demo`` (a CPU demo) and ``tiny`` (tests).

>>> sorted(PRESETS)
['demo', 'paper', 'small', 'tiny']
>>> get("small").dec_rnn_size
256
>>> SECONDS_PER_STEP["paper"]
2.5
"""

from sketch_rnn.model import HParams

PRESETS = {
    # Ha & Eck (2017) and the reference implementation.
    "paper": HParams(),
    # The small sizes.
    "small": HParams(enc_rnn_size=128, dec_rnn_size=256, z_size=32),
    # About 3-4 minutes on 2 CPU cores (JAX or TensorFlow) on the synthetic set. A higher learning
    # rate, and a KL weight that rises faster than the paper's but stays low (0.17 after 2000
    # steps): the latent is used enough for faithful reconstructions of all six shapes, at the
    # cost of samples from the prior that are less clean.
    "demo": HParams(
        enc_rnn_size=64,
        dec_rnn_size=128,
        z_size=32,
        num_mixture=10,
        batch_size=64,
        max_seq_len=40,
        learning_rate=3e-3,
        recurrent_dropout=0.0,
        kl_weight=0.5,
        kl_weight_start=0.01,
        kl_decay_rate=0.9998,
        augment=False,
        num_steps=2000,
        steps_per_epoch=200,
    ),
    # Seconds, for tests.
    "tiny": HParams(
        enc_rnn_size=8,
        dec_rnn_size=16,
        z_size=4,
        num_mixture=3,
        batch_size=8,
        max_seq_len=12,
        recurrent_dropout=0.0,
        augment=False,
        num_steps=4,
        steps_per_epoch=2,
    ),
}


#: Seconds a training step of each preset takes on the 2-core CPU of ``benchmarks/RESULTS.md``
#: (paper 2.5-3.3 and small 0.64-1.4 by backend, recurrent dropout on; demo: ~2000 steps in
#: 3-4 minutes, validation included), for the estimate ``sketch-rnn train`` prints at its start.
SECONDS_PER_STEP = {"paper": 2.5, "small": 0.9, "demo": 0.1}


def get(name):
    """The preset called ``name``; a ``ValueError`` lists the presets for an unknown one.

    >>> get("huge")
    Traceback (most recent call last):
    ...
    ValueError: unknown preset 'huge'; presets: paper, small, demo, tiny
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None
