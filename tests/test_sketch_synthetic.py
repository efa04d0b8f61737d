"""Tests for sketch_rnn.synthetic: the built-in set of shapes."""

import numpy as np
import pytest

from sketch_rnn import data, synthetic


def test_synthetic_is_deterministic_and_seeded():
    first, again, other = synthetic.synthetic(10, seed=5), synthetic.synthetic(10, seed=5), synthetic.synthetic(10, seed=6)
    for split in data.SPLITS:
        for a, b in zip(getattr(first, split), getattr(again, split)):
            np.testing.assert_array_equal(a, b)
    assert any(a.shape != b.shape or np.any(a != b) for a, b in zip(first.train, other.train))


def test_synthetic_sketches_are_valid():
    shapes = synthetic.synthetic(20, seed=0)
    assert len(shapes.class_names) >= 6
    assert {"circle", "square", "triangle", "star", "spiral", "house"} <= set(shapes.class_names)
    assert (len(shapes.train), len(shapes.valid), len(shapes.test)) == (16 * 6, 2 * 6, 2 * 6)
    for split in data.SPLITS:
        sketches_, labels = getattr(shapes, split), getattr(shapes, f"{split}_labels")
        assert len(labels) == len(sketches_) and set(labels) == set(range(6))
        for s in sketches_:
            assert s.dtype == np.int16 and s.ndim == 2 and s.shape[1] == 3
            assert 3 <= len(s) <= 70 and s[-1, 2] == 1 and set(s[:, 2]) <= {0, 1}
            extent = np.ptp(np.cumsum(s[:, :2], axis=0), axis=0).max()
            assert 30 <= extent <= 250


def test_synthetic_house_has_three_strokes():
    houses = synthetic.synthetic(5, seed=0, classes=["house"]).train
    assert all(h[:, 2].sum() == 3 for h in houses)


def test_synthetic_rejects_unknown_class():
    with pytest.raises(ValueError, match="unknown classes \\['cow'\\]; available: circle"):
        synthetic.synthetic(5, seed=0, classes=["cow"])


def test_max_len_leaves_out_and_counts_the_longer_sketches():
    full, short = synthetic.synthetic(10, seed=0), synthetic.synthetic(10, seed=0, max_len=20)
    for split in data.SPLITS:
        kept = [s for s in getattr(full, split) if len(s) <= 20]
        assert [s.tolist() for s in getattr(short, split)] == [s.tolist() for s in kept]
        assert short.dropped[split] == len(getattr(full, split)) - len(kept) > 0
        labels = getattr(full, f"{split}_labels")[[len(s) <= 20 for s in getattr(full, split)]]
        np.testing.assert_array_equal(getattr(short, f"{split}_labels"), labels)
