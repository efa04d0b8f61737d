"""sketch-rnn model and sampling: training, the KL schedule, sampling, interpolation, saving."""

import dataclasses

import keras
import numpy as np
import pytest

import lossweave

from sketch_rnn import data, presets, sampling, synthetic
from sketch_rnn.model import SketchEncoder, build_model, kl_weight

TINY = presets.get("tiny")  # enc 8, dec 16, z 4, M 3, max_seq_len 12, batch 8


def sketches(max_len=TINY.max_seq_len):
    full = synthetic.synthetic(20, seed=0)
    return [s for s in full.train if len(s) <= max_len]


def batches(hps=TINY, seed=0):
    train = sketches(hps.max_seq_len)
    scale = data.scale_factor(train)
    stream = data.StrokeBatches(data.normalize(train, scale), hps.batch_size, hps.max_seq_len,
                                np.random.default_rng(seed))
    return stream.forever()


@pytest.fixture(scope="module")
def trained():
    """A tiny model after 40 steps, one step an epoch, and its history: one compile for the module."""
    hps = dataclasses.replace(TINY, learning_rate=1e-2)
    model = build_model(hps)
    history = model.fit(batches(hps), steps_per_epoch=1, epochs=40, shuffle=False, verbose=0).history
    return hps, model, history


def test_training_lowers_reconstruction_loss(trained):
    _, _, history = trained
    assert {"loss", "offset", "pen", "kl", "kl_weight"} <= set(history)
    reconstruction = np.add(history["offset"], history["pen"])
    assert reconstruction[-8:].mean() < reconstruction[:8].mean() - 0.3


def test_kl_weight_follows_its_schedule_every_step(trained):
    hps, model, history = trained
    expected = [float(kl_weight(hps)(step)) for step in range(40)]
    np.testing.assert_allclose(history["kl_weight"], expected, rtol=1e-5)
    assert int(keras.ops.convert_to_numpy(model.step.value)) == 40


def test_encoder_reads_each_sketch_to_its_end_like_a_masked_bidirectional_lstm():
    x, _ = data.arrays(sketches()[:4], max_len=TINY.max_seq_len)
    sketch = x[:, 1:]
    encoder = SketchEncoder(5)
    encoded = keras.ops.convert_to_numpy(encoder(sketch))
    masked = keras.layers.Bidirectional(keras.layers.LSTM(5))
    masked.build(sketch.shape)
    masked.set_weights(encoder.get_weights())
    expected = keras.ops.convert_to_numpy(masked(sketch, mask=sketch[..., 4] != 1))
    np.testing.assert_allclose(encoded, expected, rtol=1e-5, atol=1e-6)
    assert (sketch[..., 4] == 1).any()  # some padding was skipped


def test_mixed_bfloat16_runs_the_recurrent_layers_in_bfloat16_and_the_loss_in_float32(tmp_path):
    hps = dataclasses.replace(TINY, precision="mixed_bfloat16", learning_rate=1e-2)
    model = build_model(hps)
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers}
    assert {policies[name] for name in ("encoder", "init_state", "decoder")} == {"mixed_bfloat16"}
    assert {policies[name] for name in ("z_mean", "z_log_var", "mdn_head")} == {"float32"}
    assert model.get_layer("encoder").forward_lstm.dtype_policy.name == "mixed_bfloat16"
    assert {w.dtype for w in model.weights} <= {"float32", "int32"}  # float32 weights
    history = model.fit(batches(hps), steps_per_epoch=1, epochs=12, shuffle=False, verbose=0).history
    reconstruction = np.add(history["offset"], history["pen"])
    assert np.isfinite(reconstruction).all() and reconstruction[-3:].mean() < reconstruction[:3].mean()
    model.save(tmp_path / "bf16.keras")
    loaded = keras.models.load_model(tmp_path / "bf16.keras")
    assert loaded.get_layer("decoder").dtype_policy.name == "mixed_bfloat16"
    drawn = sampling.sample(loaded, n=2, seed=0)
    assert all(s.dtype == np.float32 and np.isfinite(s).all() and s[-1, 2] == 1 for s in drawn)


def test_unconditional_model_has_no_encoder_and_samples():
    model = build_model(dataclasses.replace(TINY, conditional=False))
    assert model.tap_names == ()
    for sketch in sampling.sample(model, n=3, seed=0):
        assert np.isfinite(sketch).all() and sketch[-1, 2] == 1
    with pytest.raises(ValueError, match="unconditional"):
        sampling.encode(model, sketches()[:1])


def test_samples_are_finite_stroke3_ending_with_pen_up_in_data_units(trained):
    _, model, _ = trained
    small = sampling.sample(model, n=5, temperature=0.5, seed=3)
    large = sampling.sample(model, n=5, temperature=0.5, seed=3, scale=10.0)
    assert len(small) == 5
    for s, l in zip(small, large):
        assert s.dtype == np.float32 and s.ndim == 2 and s.shape[1] == 3
        assert 1 <= len(s) <= TINY.max_seq_len and s[-1, 2] == 1 and np.isfinite(s).all()
        assert set(np.unique(s[:, 2])) <= {0.0, 1.0}
        np.testing.assert_allclose(l[:, :2], 10.0 * s[:, :2], rtol=1e-5)


def test_sampling_is_seeded_and_temperature_changes_samples(trained):
    _, model, _ = trained
    z = np.random.default_rng(0).standard_normal((4, TINY.z_size)).astype("float32")
    first = sampling.decode(model, z=z, temperature=0.7, seed=1)
    again = sampling.decode(model, z=z, temperature=0.7, seed=1)
    hotter = sampling.decode(model, z=z, temperature=1.5, seed=1)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(a.shape != h.shape or not np.allclose(a, h) for a, h in zip(first, hotter))
    with pytest.raises(ValueError, match="temperature"):
        sampling.decode(model, z=z, temperature=0.0)


def test_interpolation_endpoints_are_the_encodings(trained):
    _, model, _ = trained
    first, second = sketches()[0], sketches()[-1]
    codes, strip = sampling.interpolate(model, first, second, steps=5, scale=30.0)
    encoded = sampling.encode(model, [first, second], scale=30.0)
    np.testing.assert_allclose(codes[0], encoded[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(codes[-1], encoded[1], rtol=1e-5, atol=1e-6)
    assert codes.shape == (5, TINY.z_size) and len(strip) == 5


def test_completions_start_with_the_prefix_exactly_and_end_pen_up(trained):
    _, model, _ = trained
    full = sketches()[:4]
    prefixes = [s[: len(s) // 2].astype("float32") for s in full] + [np.zeros((0, 3), "float32"), full[0]]
    done = sampling.complete(model, prefixes, temperature=0.5, seed=2, scale=30.0)
    assert len(done) == len(prefixes)
    for prefix, sketch in zip(prefixes, done):
        np.testing.assert_array_equal(sketch[: len(prefix)], prefix)
        assert sketch.dtype == np.float32 and sketch[-1, 2] == 1 and np.isfinite(sketch).all()
        assert len(prefix) < len(sketch) <= TINY.max_seq_len or (len(prefix) == len(sketch) and prefix[-1, 2] == 1)
    again = sampling.complete(model, prefixes, temperature=0.5, seed=2, scale=30.0)
    assert all(np.array_equal(a, b) for a, b in zip(done, again))
    z = np.zeros((2, TINY.z_size), "float32")
    assert len(sampling.complete(model, prefixes[:2], z=z, seed=0)) == 2


def test_completion_goes_on_from_the_decoder_state_the_prefix_leads_to(trained):
    _, model, _ = trained
    prefixes = [s[:5] for s in sketches()[:8]]
    # Teacher forcing: the output at row n of x[:, :-1] (row 0 the start token) predicts point n.
    x, _ = data.arrays(data.normalize(prefixes, 30.0), TINY.max_seq_len)
    params = lossweave.losses.split_mdn_params(model.predict_on_batch(x)[:, 5], TINY.num_mixture)
    params = {name: keras.ops.convert_to_numpy(value) for name, value in params.items()}
    k = np.argmax(params["pi_logits"], axis=1)[:, None]
    expected = np.concatenate([np.take_along_axis(params[name], k, axis=1) for name in ("mu_x", "mu_y")], axis=1)
    goes_on = np.argmax(params["pen_logits"], axis=1) != 2  # the others end at once
    assert goes_on.any()
    done = sampling.complete(model, prefixes, temperature=1e-10, seed=0, scale=30.0)
    drawn = np.stack([sketch[5, :2] / 30.0 for sketch, on in zip(done, goes_on) if on])
    np.testing.assert_allclose(drawn, expected[goes_on], rtol=1e-3, atol=1e-3)


def test_complete_refuses_a_prefix_longer_than_the_model_and_a_bare_array(trained):
    _, model, _ = trained
    with pytest.raises(ValueError, match="prefix 0 has 13 points, more than the model's max_seq_len=12"):
        sampling.complete(model, [np.zeros((13, 3), "float32")])
    with pytest.raises(ValueError, match="wrap a single prefix in a list"):
        sampling.complete(model, sketches()[0])


def test_unconditional_model_completes_too():
    model = build_model(dataclasses.replace(TINY, conditional=False))
    prefix = sketches()[0][:3]
    [done] = sampling.complete(model, [prefix], seed=0)
    np.testing.assert_array_equal(done[:3], prefix)


def test_slerp_keeps_the_norm_between_codes_of_equal_norm():
    rng = np.random.default_rng(0)
    z0, z1 = rng.standard_normal((2, 16))
    z1 *= np.linalg.norm(z0) / np.linalg.norm(z1)
    middle = sampling.slerp(z0, z1, 0.5)
    np.testing.assert_allclose(np.linalg.norm(middle), np.linalg.norm(z0), rtol=1e-9)
    assert np.linalg.norm((z0 + z1) / 2) < np.linalg.norm(middle)  # linear interpolation shrinks
    np.testing.assert_allclose(sampling.slerp(z0, 2 * z0, 0.5), 1.5 * z0)  # parallel: linear


def test_save_load_round_trip(trained, tmp_path):
    _, model, _ = trained
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    x, _ = next(batches(seed=1))
    before, after = (keras.ops.convert_to_numpy(m(x)) for m in (model, loaded))
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    assert int(keras.ops.convert_to_numpy(loaded.step.value)) == 40
