"""Tests for sketch_rnn.data: formats, normalisation, augmentation, batches, .npz files."""

import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sketch_rnn import data, synthetic

SHEEP = Path(__file__).resolve().parents[2] / "shared" / "data" / "aaron_sheep.npz"


def sketch(*rows):
    return np.array(rows, dtype=np.int16)


def object_array(sketches):
    array = np.empty(len(sketches), dtype=object)
    array[:] = sketches
    return array


def write_npz(path, **splits):
    np.savez(path, **{name: object_array(sketches) for name, sketches in splits.items()})
    return path


SQUARE = sketch([0, 0, 0], [10, 0, 0], [0, 10, 0], [-10, 0, 0], [0, -10, 1])
DOT_THEN_LINE = sketch([5, 5, 1], [3, 0, 0], [3, 1, 1])


# --- stroke-3 <-> stroke-5 ---------------------------------------------------------------------


def test_stroke5_layout():
    stroke5 = data.to_stroke5(DOT_THEN_LINE, max_len=5)
    assert stroke5.shape == (6, 5) and stroke5.dtype == np.float32
    np.testing.assert_array_equal(stroke5[:3, 2:], [[0, 1, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(stroke5[3:], [[0, 0, 0, 0, 1]] * 3)
    np.testing.assert_array_equal(stroke5.sum(axis=1)[3:], 1)


def test_round_trip_at_max_len():
    np.testing.assert_array_equal(data.to_stroke3(data.to_stroke5(SQUARE, max_len=5)), SQUARE)


def test_to_stroke5_rejects_long_sketch():
    with pytest.raises(ValueError, match="5 points, more than max_len=4"):
        data.to_stroke5(SQUARE, max_len=4)


def test_to_stroke3_stops_at_end_and_lifts_last_pen():
    stroke5 = np.array([[1, 1, 1, 0, 0], [2, 2, 1, 0, 0], [0, 0, 0, 0, 1], [9, 9, 1, 0, 0]])
    np.testing.assert_array_equal(data.to_stroke3(stroke5), [[1, 1, 0], [2, 2, 1]])
    assert data.to_stroke3(np.array([[0, 0, 0, 0, 1]])).shape == (0, 3)


@st.composite
def sketches(draw, max_points=30):
    n = draw(st.integers(1, max_points))
    offset = st.tuples(st.integers(-200, 200), st.integers(-200, 200))
    offsets = draw(st.lists(offset, min_size=n, max_size=n))
    pens = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    pens[-1] = 1
    return np.array([[dx, dy, p] for (dx, dy), p in zip(offsets, pens)], dtype=np.int16)


@settings(max_examples=50, deadline=None)
@given(strokes=sketches(), extra=st.integers(0, 5))
def test_round_trip_property(strokes, extra):
    stroke5 = data.to_stroke5(strokes, max_len=len(strokes) + extra)
    np.testing.assert_array_equal(data.to_stroke3(stroke5), strokes)
    np.testing.assert_array_equal(stroke5[:, 2:].sum(axis=1), 1)


def test_strokes_to_lines_one_line_per_stroke():
    lines = data.strokes_to_lines(DOT_THEN_LINE)
    assert [line.tolist() for line in lines] == [[[5, 5]], [[8, 5], [11, 6]]]


# --- normalisation and augmentation ------------------------------------------------------------


def test_scale_factor_is_std_of_all_offsets():
    sketches_ = synthetic.synthetic(5, seed=3).train
    offsets = np.concatenate([s[:, :2].astype(np.float64).ravel() for s in sketches_])
    assert data.scale_factor(sketches_) == pytest.approx(np.std(offsets))
    normalized = data.normalize(sketches_, data.scale_factor(sketches_))
    assert data.scale_factor(normalized) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_array_equal(normalized[0][:, 2], sketches_[0][:, 2])


def test_scale_factor_refuses_zero_spread():
    with pytest.raises(ValueError, match="standard deviation 0"):
        data.scale_factor([sketch([0, 0, 1])])


def test_random_scale_range_and_seed():
    strokes = np.tile(sketch([10, -10, 0]), (4, 1))
    scaled = data.random_scale(strokes, np.random.default_rng(7), factor=0.15)
    ratios = scaled[0, :2] / strokes[0, :2]
    assert np.all((ratios >= 0.85) & (ratios <= 1.15))
    np.testing.assert_array_equal(scaled[:, 2], strokes[:, 2])
    np.testing.assert_array_equal(scaled, data.random_scale(strokes, np.random.default_rng(7)))


def reference_augment_strokes(strokes, prob, uniforms):
    """The reference sketch-rnn utils.augment_strokes, with its random draws given."""
    result = []
    prev_stroke = [0, 0, 1]
    count = 0
    stroke = [0, 0, 1]
    for i in range(len(strokes)):
        candidate = [strokes[i][0], strokes[i][1], strokes[i][2]]
        if candidate[2] == 1 or prev_stroke[2] == 1:
            count = 0
        else:
            count += 1
        if candidate[2] == 0 and prev_stroke[2] == 0 and count > 2 and uniforms[i] < prob:
            stroke[0] += candidate[0]
            stroke[1] += candidate[1]
        else:
            stroke = list(candidate)
            prev_stroke = list(stroke)
            result.append(stroke)
    return np.array(result)


@settings(max_examples=50, deadline=None)
@given(strokes=sketches(max_points=60), seed=st.integers(0, 2**32 - 1), prob=st.sampled_from([0.1, 0.5, 1.0]))
def test_augment_strokes_matches_reference(strokes, seed, prob):
    augmented = data.augment_strokes(strokes, np.random.default_rng(seed), prob)
    expected = reference_augment_strokes(strokes, prob, np.random.default_rng(seed).random(len(strokes)))
    np.testing.assert_array_equal(augmented, expected)


def test_augment_strokes_keeps_stroke_ends_and_is_seeded():
    strokes = synthetic.synthetic(3, seed=0, classes=["spiral"]).train[0]
    augmented = data.augment_strokes(strokes, np.random.default_rng(0), prob=0.5)
    assert augmented.shape[1] == 3 and len(augmented) < len(strokes)
    assert augmented[-1, 2] == 1 and augmented[:, 2].sum() == strokes[:, 2].sum()
    np.testing.assert_array_equal(augmented[:, :2].sum(axis=0), strokes[:, :2].sum(axis=0))
    np.testing.assert_array_equal(augmented, data.augment_strokes(strokes, np.random.default_rng(0), 0.5))


# --- batches -----------------------------------------------------------------------------------


def test_arrays_start_token_and_shift():
    x, y = data.arrays([SQUARE, DOT_THEN_LINE], max_len=6)
    assert x.shape == (2, 7, 5) and y.shape == (2, 6, 5)
    assert x.dtype == y.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0], [[0, 0, 1, 0, 0]] * 2)
    np.testing.assert_array_equal(x[:, 1:], y)
    np.testing.assert_array_equal(y[1], data.to_stroke5(DOT_THEN_LINE, 6)[:6])


def test_batches_shapes_epoch_and_seed():
    sketches_ = data.normalize(synthetic.synthetic(10, seed=1).train, 20.0)
    batches = data.StrokeBatches(sketches_, 16, max_len=40, rng=np.random.default_rng(0), augment=True)
    epoch = list(batches)
    assert len(batches) == len(epoch) == len(sketches_) // 16
    for x, y in epoch:
        assert x.shape == (16, 41, 5) and y.shape == (16, 40, 5)
        assert x.dtype == y.dtype == np.float32
        np.testing.assert_array_equal(x[:, 0], np.broadcast_to(data.START_TOKEN, (16, 5)))
        np.testing.assert_array_equal(x[:, 1:], y)
    again = list(data.StrokeBatches(sketches_, 16, 40, np.random.default_rng(0), augment=True))
    np.testing.assert_array_equal(epoch[0][0], again[0][0])


def test_batches_without_augmentation_hold_the_sketches():
    sketches_ = [SQUARE, DOT_THEN_LINE, sketch([1, 2, 1])]
    ((x, y),) = data.StrokeBatches(sketches_, 3, 5, np.random.default_rng(0))
    decoded = sorted(data.to_stroke3(row).tolist() for row in y)
    assert decoded == sorted(s.astype(np.float32).tolist() for s in sketches_)


def test_batches_forever_runs_past_an_epoch():
    batches = data.StrokeBatches([SQUARE] * 5, 2, 5, np.random.default_rng(0))
    stream = batches.forever()
    assert all(next(stream)[0].shape == (2, 6, 5) for _ in range(5))


def test_batches_reject_long_sketch_and_small_set():
    with pytest.raises(ValueError, match="sketch 1 has 5 points, more than max_len=4"):
        data.StrokeBatches([DOT_THEN_LINE, SQUARE], 1, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="2 sketches make no batch of 3"):
        data.StrokeBatches([SQUARE] * 2, 3, 5, np.random.default_rng(0))


# --- .npz files --------------------------------------------------------------------------------


def test_load_npz_real_format(tmp_path):
    path = write_npz(tmp_path / "cat.npz", train=[SQUARE, DOT_THEN_LINE], valid=[SQUARE], test=[SQUARE])
    loaded = data.load_npz(path)
    assert loaded.class_names == ("cat",)
    assert [len(loaded.train), len(loaded.valid), len(loaded.test)] == [2, 1, 1]
    np.testing.assert_array_equal(loaded.train[1], DOT_THEN_LINE)
    assert loaded.train[0].dtype == np.int16
    np.testing.assert_array_equal(loaded.train_labels, [0, 0])
    assert loaded.dropped == {"train": 0, "valid": 0, "test": 0}


def test_load_npz_several_classes_and_max_len(tmp_path):
    cat = write_npz(tmp_path / "cat.npz", train=[SQUARE, DOT_THEN_LINE], valid=[SQUARE], test=[SQUARE])
    dog = write_npz(tmp_path / "dog.npz", train=[DOT_THEN_LINE] * 3, valid=[DOT_THEN_LINE], test=[SQUARE])
    loaded = data.load_npz([str(cat), dog], max_len=3)
    assert loaded.class_names == ("cat", "dog")
    np.testing.assert_array_equal(loaded.train_labels, [0, 1, 1, 1])
    np.testing.assert_array_equal(loaded.valid_labels, [1])
    assert len(loaded.test) == 0
    assert loaded.dropped == {"train": 1, "valid": 1, "test": 2}


def corrupt_npz_bytes(path):
    """A real-format file whose 'test' member has its pickled contents overwritten."""
    good = write_npz(path, train=[SQUARE], valid=[SQUARE], test=[SQUARE] * 20)
    raw = bytearray(good.read_bytes())
    start = raw.index(b"test.npy") + 200
    raw[start : start + 40] = b"\xfd" * 40
    return bytes(raw)


def flip_central_directory(raw):
    raw = bytearray(raw)
    raw[raw.index(b"PK\x01\x02") + 1] ^= 0xFF
    return bytes(raw)


BAD_FILES = {
    "missing key 'test'": lambda p: write_npz(p, train=[SQUARE], valid=[SQUARE]),
    r"train\[1\] is not a 2-D \(n, 3\) stroke-3 array \(got \(5, 2\)\)": lambda p: write_npz(
        p, train=[SQUARE, SQUARE[:, :2]], valid=[SQUARE], test=[SQUARE]
    ),
    r"valid\[0\] is not a 2-D \(n, 3\)": lambda p: write_npz(
        p, train=[SQUARE], valid=[np.arange(3)], test=[SQUARE]
    ),
    r"test\[0\] has dtype <U1, not an integer or float dtype": lambda p: write_npz(
        p, train=[SQUARE], valid=[SQUARE], test=[np.full((2, 3), "a")]
    ),
    "split 'valid' is empty": lambda p: write_npz(p, train=[SQUARE], valid=[], test=[SQUARE]),
    r"train\[0\] is an empty sketch": lambda p: write_npz(
        p, train=[np.zeros((0, 3), np.int16), SQUARE], valid=[SQUARE], test=[SQUARE]
    ),
    r"train\[0\] has non-finite values": lambda p: write_npz(
        p, train=[np.array([[np.nan, 0, 1]])], valid=[SQUARE], test=[SQUARE]
    ),
    r"test\[0\] has pen states other than 0 and 1": lambda p: write_npz(
        p, train=[SQUARE], valid=[SQUARE], test=[sketch([1, 1, 2])]
    ),
    r"not an \.npz \(zip\) file": lambda p: p.write_bytes(b"this is not a zip file"),
    "split 'train' is not an array of sketches": lambda p: np.savez(p, train=3, valid=[], test=[]),
    "split 'test' is corrupt": lambda p: p.write_bytes(corrupt_npz_bytes(p)),
    r"its zip directory is corrupt \(BadZipFile: Bad magic number for central directory\)": lambda p: p.write_bytes(
        flip_central_directory(write_npz(p, train=[SQUARE], valid=[SQUARE], test=[SQUARE]).read_bytes())
    ),
}


@pytest.mark.parametrize("problem", list(BAD_FILES))
def test_load_npz_bad_files_name_file_and_problem(tmp_path, problem):
    path = tmp_path / "bad.npz"
    BAD_FILES[problem](path)
    with pytest.raises(data.SketchFileError, match=problem) as error:
        data.load_npz([write_npz(tmp_path / "good.npz", train=[SQUARE], valid=[SQUARE], test=[SQUARE]), path])
    assert str(error.value).startswith(f"{path}: ")
    assert isinstance(error.value, ValueError)


def test_load_npz_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        data.load_npz(tmp_path / "nothing.npz")


@pytest.mark.skipif(not SHEEP.is_file(), reason=f"real data file {SHEEP} is absent")
def test_load_real_sheep_file():
    sheep = data.load_npz(SHEEP)
    assert (len(sheep.train), len(sheep.valid), len(sheep.test)) == (7400, 300, 300)
    assert sheep.class_names == ("aaron_sheep",)
    assert max(map(len, sheep.train)) <= 250 and sheep.train[0].dtype == np.int16



class RunsCode:
    """Pickles as a call of os.system: what a malicious sketch file holds."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_load_npz_refuses_a_pickle_that_runs_code(tmp_path):
    pwned = tmp_path / "PWNED"
    path = write_npz(tmp_path / "evil.npz", train=[SQUARE, RunsCode(f"touch {pwned}")], valid=[SQUARE], test=[SQUARE])
    with pytest.raises(data.SketchFileError, match=r"split 'train' refers to posix\.system, .*: refused") as error:
        data.load_npz(path)
    assert str(error.value).startswith(f"{path}: ")
    assert not pwned.exists()


class Python2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), as numpy under Python 2 wrote
    the published QuickDraw files: they load only with ``encoding='latin1'``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def python2_pickle(array):
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(array)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def npz_of_pickles(path, **pickles):
    """An .npz whose members are object-array headers of ``(pickle, length)`` followed by the pickle."""
    with zipfile.ZipFile(path, "w") as zip_file:
        for split, (pickled, length) in pickles.items():
            member = io.BytesIO()
            np.lib.format.write_array_header_1_0(member, {"descr": "|O", "fortran_order": False, "shape": (length,)})
            zip_file.writestr(f"{split}.npy", member.getvalue() + pickled)
    return path


NEGATIVE = sketch([-1, -300, 0], [255, -129, 1])  # int16 bytes >= 0x80: not ASCII


@pytest.mark.parametrize("dumps", [python2_pickle, lambda a: pickle.dumps(a, protocol=2)], ids=["python2", "protocol2"])
def test_load_npz_reads_python2_style_pickles(tmp_path, dumps):
    splits = {"train": [NEGATIVE, SQUARE], "valid": [SQUARE], "test": [NEGATIVE.astype(np.float32)]}
    pickled = {split: (dumps(object_array(sketches)), len(sketches)) for split, sketches in splits.items()}
    loaded = data.load_npz(npz_of_pickles(tmp_path / "cat.npz", **pickled))
    for split, sketches in splits.items():
        for got, expected in zip(getattr(loaded, split), sketches, strict=True):
            assert got.dtype == expected.dtype and got.flags.writeable
            np.testing.assert_array_equal(got, expected)


def test_python2_pickles_need_latin1():
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(python2_pickle(object_array([NEGATIVE])))  # encoding='ASCII', as np.load's default


class ForgedArray:
    """Pickles as numpy's _reconstruct with a chosen ``__setstate__`` state."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return np.empty(0).__reduce__()[0], (np.ndarray, (0,), b"b"), self.state


@pytest.mark.parametrize("state, problem", [
    # numpy's own unpickling crashes the interpreter (SIGSEGV) on this one.
    ((1, (5,), np.dtype(object), False, [SQUARE, SQUARE]), r"an object array of shape \(5,\) without its 5 items"),
    ((1, (2, 3), np.dtype(np.int16), False, b"\0" * 4), r"4 bytes for 6 items of int16"),
    ((1, (2,), np.dtype([("a", "i2")]), False, b"\0" * 4), r"dtype .* is not a number, string or object dtype"),
])
def test_load_npz_refuses_forged_array_states(tmp_path, state, problem):
    pickled = pickle.dumps(object_array([ForgedArray(state)]), protocol=4)
    path = npz_of_pickles(tmp_path / "bad.npz", train=(pickled, 1), valid=(pickled, 1), test=(pickled, 1))
    with pytest.raises(data.SketchFileError, match=rf"split 'train' is corrupt \(ValueError: {problem}"):
        data.load_npz(path)


def npz_bytes(savez=np.savez, **splits):
    buffer = io.BytesIO()
    savez(buffer, **{name: object_array(sketches) for name, sketches in splits.items()})
    return buffer.getvalue()


SMALL = {"train": [SQUARE, DOT_THEN_LINE, NEGATIVE], "valid": [SQUARE], "test": [DOT_THEN_LINE]}
SMALL_FILES = [npz_bytes(**SMALL), npz_bytes(np.savez_compressed, **SMALL)]
with io.BytesIO() as _buffer:
    npz_of_pickles(_buffer, **{split: (python2_pickle(object_array(s)), len(s)) for split, s in SMALL.items()})
    SMALL_FILES.append(_buffer.getvalue())


@st.composite
def damaged(draw, raw):
    """``raw`` with some bytes flipped, a range zeroed, or its end cut off."""
    raw = bytearray(raw)
    kind = draw(st.sampled_from(["flip", "zero", "truncate"]))
    if kind == "flip":
        for i in draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4)):
            raw[i] ^= draw(st.integers(1, 255))
    elif kind == "zero":
        start = draw(st.integers(0, len(raw) - 1))
        end = draw(st.integers(start + 1, min(len(raw), start + 64)))
        raw[start:end] = bytes(end - start)
    else:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    return bytes(raw)


@st.composite
def damaged_files(draw):
    """A small valid file damaged as a whole (mostly caught by the zip's CRCs), or in one member
    zipped again with a good CRC (caught by the npy and pickle readers)."""
    raw = draw(st.sampled_from(SMALL_FILES))
    target = draw(st.sampled_from(["file", *(f"{split}.npy" for split in data.SPLITS)]))
    if target == "file":
        return draw(damaged(raw))
    with zipfile.ZipFile(io.BytesIO(raw)) as zip_file:
        members = {name: zip_file.read(name) for name in zip_file.namelist()}
    members[target] = draw(damaged(members[target]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zip_file:
        for name, member in members.items():
            zip_file.writestr(name, member)
    return buffer.getvalue()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=damaged_files())
def test_load_npz_damaged_file_loads_valid_sketches_or_names_the_file(tmp_path, raw):
    path = tmp_path / "cat.npz"
    path.write_bytes(raw)
    try:
        loaded = data.load_npz(path)
    except data.SketchFileError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
        return
    for split in data.SPLITS:
        for s in getattr(loaded, split):
            assert s.ndim == 2 and s.shape[1] == 3 and len(s) and np.isfinite(s).all()
            assert set(np.unique(s[:, 2])) <= {0, 1}
