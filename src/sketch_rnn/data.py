"""Sketch data: stroke-3 and stroke-5 formats, QuickDraw ``.npz`` files, batches (the synthetic set: ``sketch_rnn.synthetic``).

A **stroke-3** sketch is an ``(n, 3)`` array of rows ``(dx, dy, pen_lifted)``: the offset from the
previous point (the first row is the offset from the origin) and ``pen_lifted = 1`` when the pen
leaves the paper *after* this point, so every stroke ends on a row with ``pen_lifted = 1``. The y
axis grows downward, as on a screen and in QuickDraw.

A **stroke-5** sketch (Ha & Eck 2017, the reference ``utils.to_big_strokes``) is a
``(max_len + 1, 5)`` array of rows ``(dx, dy, p1, p2, p3)``: ``p1`` the pen stays down after
this point, ``p2`` it is lifted, ``p3`` the sketch has ended. Rows after the sketch are
``(0, 0, 0, 0, 1)``, so there is always at least one.

Training pairs follow the reference ``DataLoader.pad_batch``: for a batch of ``B`` sketches

- ``x``, shape ``(B, max_len + 1, 5)``: row 0 is the start token ``(0, 0, 1, 0, 0)``, rows
  ``1..max_len`` are the stroke-5 sketch. The model slices it: the encoder reads ``x[:, 1:]``,
  the decoder is fed ``x[:, :-1]`` (teacher forcing).
- ``y = x[:, 1:]``, shape ``(B, max_len, 5)``: the stroke-5 rows the decoder must predict. Rows
  with ``y[..., 4] == 1`` are padding after the end of the sketch (a sketch of exactly
  ``max_len`` points has none).

Offsets are normalised by one scale, the standard deviation of all training offsets
(:func:`scale_factor`, :func:`normalize`), before batching; augmentation acts on normalised data.
"""

import contextlib
import dataclasses
import io
import itertools
import math
import pickle
import pickletools
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

START_TOKEN = np.array([0, 0, 1, 0, 0], dtype=np.float32)
SPLITS = ("train", "valid", "test")


# --- stroke-3 <-> stroke-5 ---------------------------------------------------------------------


def to_stroke5(strokes, max_len):
    """Stroke-3 ``(n, 3)`` -> stroke-5 ``(max_len + 1, 5)`` float32, padded with ``(0, 0, 0, 0, 1)``.

    >>> to_stroke5(np.array([[1, 2, 0], [3, 4, 1]]), max_len=3)
    array([[1., 2., 1., 0., 0.],
           [3., 4., 0., 1., 0.],
           [0., 0., 0., 0., 1.],
           [0., 0., 0., 0., 1.]], dtype=float32)
    """
    n = len(strokes)
    if n > max_len:
        raise ValueError(f"sketch has {n} points, more than max_len={max_len}")
    result = np.zeros((max_len + 1, 5), dtype=np.float32)
    result[:n, :2] = strokes[:, :2]
    result[:n, 3] = strokes[:, 2]
    result[:n, 2] = 1 - result[:n, 3]
    result[n:, 4] = 1
    return result


def to_stroke3(stroke5):
    """Stroke-5 (without the start token) -> stroke-3 float32, up to the first end-of-sketch row.

    The pen state of a row is its largest of ``p1, p2, p3`` (one-hot rows read as they are). The
    last point is made pen-up, so a sketch cut off by ``max_len`` still ends its stroke.

    >>> to_stroke3(np.array([[1, 2, 1, 0, 0], [3, 4, 1, 0, 0], [0, 0, 0, 0, 1]]))
    array([[1., 2., 0.],
           [3., 4., 1.]], dtype=float32)
    """
    pen = np.argmax(stroke5[:, 2:5], axis=1)
    ended = np.flatnonzero(pen == 2)
    n = ended[0] if len(ended) else len(stroke5)
    result = np.zeros((n, 3), dtype=np.float32)
    result[:, :2] = stroke5[:n, :2]
    result[:, 2] = pen[:n] == 1
    if n:
        result[-1, 2] = 1
    return result


def strokes_to_lines(strokes):
    """Stroke-3 -> list of polylines, each a ``(k, 2)`` float64 array of absolute coordinates.

    A trailing stroke whose pen is never lifted is kept as the last polyline.

    >>> strokes_to_lines(np.array([[1, 1, 0], [2, 0, 1], [0, 3, 0], [1, 0, 1]]))
    [array([[1., 1.],
           [3., 1.]]), array([[3., 4.],
           [4., 4.]])]
    """
    points = np.cumsum(np.asarray(strokes[:, :2], dtype=np.float64), axis=0)
    ends = np.flatnonzero(strokes[:, 2] == 1) + 1
    return [line for line in np.split(points, ends) if len(line)]


# --- normalisation and augmentation ------------------------------------------------------------


def scale_factor(sketches):
    """Standard deviation of all ``dx`` and ``dy`` offsets of ``sketches`` together.

    As the reference ``calculate_normalizing_scale_factor``: compute it on the training split (after
    any ``max_len`` filtering) and divide every split by it with :func:`normalize`.

    >>> round(scale_factor([np.array([[3, 4, 1]]), np.array([[-3, -4, 1]])]), 4)
    3.5355
    """
    offsets = np.concatenate([np.asarray(s[:, :2], dtype=np.float64).ravel() for s in sketches])
    scale = float(np.std(offsets))
    if not scale > 0:
        raise ValueError(f"offsets have standard deviation {scale}; cannot normalise by it")
    return scale


def normalize(sketches, scale):
    """Divide the offsets of every sketch by ``scale``; returns a list of float32 stroke-3 arrays.

    >>> normalize([np.array([[3, -6, 1]])], 3.0)
    [array([[ 1., -2.,  1.]], dtype=float32)]
    """
    result = []
    for s in sketches:
        s = np.array(s, dtype=np.float32)
        s[:, :2] /= scale
        result.append(s)
    return result


def random_scale(strokes, rng, factor=0.15):
    """Stretch x and y by independent random factors in ``[1 - factor, 1 + factor]``; float32.

    >>> random_scale(np.array([[10, 10, 1]]), np.random.default_rng(0)).round(2)
    array([[10.41,  9.31,  1.  ]], dtype=float32)
    """
    result = np.array(strokes, dtype=np.float32)
    result[:, :2] *= rng.uniform(1 - factor, 1 + factor, size=2).astype(np.float32)
    return result


def augment_strokes(strokes, rng, prob=0.1):
    """Randomly drop points inside strokes, as the reference ``augment_strokes``; float32.

    A pen-down point that is at least the fourth of its stroke is dropped with probability
    ``prob``; its offset is added to the previous kept point, so the points after it and the
    end of every stroke stay where they were.

    >>> s = np.array([[1, 0, 0]] * 5 + [[1, 0, 1]])
    >>> augment_strokes(s, np.random.default_rng(1), prob=0.5)
    array([[1., 0., 0.],
           [1., 0., 0.],
           [1., 0., 0.],
           [2., 0., 0.],
           [1., 0., 1.]], dtype=float32)
    """
    pen = strokes[:, 2]
    index = np.arange(len(strokes))
    stroke_starts = np.flatnonzero(np.r_[1, pen[:-1]] == 1)
    position_in_stroke = index - stroke_starts[np.searchsorted(stroke_starts, index, "right") - 1]
    drop = (pen == 0) & (position_in_stroke > 2) & (rng.random(len(strokes)) < prob)
    kept = np.flatnonzero(~drop)
    result = np.empty((len(kept), 3), dtype=np.float32)
    result[:, :2] = np.add.reduceat(np.asarray(strokes[:, :2], dtype=np.float32), kept, axis=0)
    result[:, 2] = pen[kept]
    return result


# --- training pairs ----------------------------------------------------------------------------


def arrays(sketches, max_len):
    """Training pairs ``(x, y)`` for all ``sketches``: float32, see the module docstring.

    >>> x, y = arrays([np.array([[1, 2, 1]])], max_len=2)
    >>> x
    array([[[0., 0., 1., 0., 0.],
            [1., 2., 0., 1., 0.],
            [0., 0., 0., 0., 1.]]], dtype=float32)
    >>> y.shape
    (1, 2, 5)
    """
    stroke5 = np.stack([to_stroke5(s, max_len) for s in sketches])
    start = np.broadcast_to(START_TOKEN, (len(sketches), 1, 5))
    x = np.concatenate([start, stroke5[:, :-1]], axis=1)
    return x, x[:, 1:]


class StrokeBatches:
    """Shuffled, optionally augmented batches ``(x, y)`` of stroke-3 sketches, as :func:`arrays`.

    One iteration is one epoch of ``len(batches) = len(sketches) // batch_size`` full batches in a
    new random order (the last partial batch is left out, so every batch has the same shape). With
    ``augment=True`` every sketch of every batch is stretched by :func:`random_scale` and thinned
    by :func:`augment_strokes` (the reference's training augmentation).

    ``keras.Model.fit`` takes a Python generator, not an iterable: pass :meth:`forever`, as in
    ``model.fit(batches.forever(), steps_per_epoch=len(batches), epochs=..., shuffle=False,
    validation_data=arrays(valid, max_len))`` (the batches are shuffled already).

    >>> sketches = [np.array([[1, 2, 0], [3, 4, 1]])] * 5
    >>> batches = StrokeBatches(sketches, batch_size=2, max_len=3, rng=np.random.default_rng(0))
    >>> len(batches), [x.shape for x, y in batches], next(iter(batches))[1].shape
    (2, [(2, 4, 5), (2, 4, 5)], (2, 3, 5))
    """

    def __init__(self, sketches, batch_size, max_len, rng, augment=False):
        if len(sketches) < batch_size:
            raise ValueError(f"{len(sketches)} sketches make no batch of {batch_size}")
        for i, s in enumerate(sketches):
            if len(s) > max_len:
                raise ValueError(
                    f"sketch {i} has {len(s)} points, more than max_len={max_len}; "
                    "filter with load_npz(..., max_len=...)"
                )
        self.sketches = list(sketches)
        self.batch_size = batch_size
        self.max_len = max_len
        self.rng = rng
        self.augment = augment

    def __len__(self):
        return len(self.sketches) // self.batch_size

    def __iter__(self):
        order = self.rng.permutation(len(self.sketches))
        for b in range(len(self)):
            yield self._batch(order, b, self.rng)

    def _batch(self, order, b, rng):
        """Batch ``b`` of the pass over the sketches in ``order``, augmented with ``rng``."""
        batch = [self.sketches[i] for i in order[b * self.batch_size : (b + 1) * self.batch_size]]
        if self.augment:
            batch = [augment_strokes(random_scale(s, rng), rng) for s in batch]
        return arrays(batch, self.max_len)

    def from_step(self, step: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Endless batches for the training steps ``step, step + 1, ...``, each a function of ``seed``
        and its step only (``self.rng`` is not used), so that a run resumed at any step trains on
        the batches it would have had.

        Step ``s`` takes batch ``s % len(self)`` of pass ``s // len(self)`` over the sketches,
        shuffled by ``np.random.default_rng([seed, pass])``; its augmentation draws from
        ``np.random.default_rng([seed, pass, batch])``.

        >>> batches = StrokeBatches([np.array([[i, 0, 1]]) for i in range(4)], 1, 2, np.random.default_rng(0))
        >>> first = [int(x[0, 1, 0]) for x, _ in itertools.islice(batches.from_step(0, seed=0), 6)]
        >>> resumed = [int(x[0, 1, 0]) for x, _ in itertools.islice(batches.from_step(3, seed=0), 3)]
        >>> first, resumed == first[3:]
        ([2, 0, 1, 3, 3, 0], True)
        """
        for s in itertools.count(step):
            pass_, b = divmod(s, len(self))
            if b == 0 or s == step:
                order = np.random.default_rng([seed, pass_]).permutation(len(self.sketches))
            yield self._batch(order, b, np.random.default_rng([seed, pass_, b]))

    def forever(self):
        """Endless generator of batches, epoch after epoch, for ``keras.Model.fit``.

        >>> batches = StrokeBatches([np.array([[1, 2, 1]])], 1, 2, np.random.default_rng(0))
        >>> stream = batches.forever()
        >>> [next(stream)[0].shape for _ in range(3)]
        [(1, 3, 5), (1, 3, 5), (1, 3, 5)]
        """
        while True:
            yield from self


# --- sketch sets -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class SketchSet:
    """Stroke-3 sketches in train/valid/test splits, with a class label per sketch.

    ``<split>_labels[i]`` indexes ``class_names``; ``dropped[split]`` counts the sketches that
    a loader left out for being longer than its ``max_len`` (:func:`sketch_set`).

    >>> from sketch_rnn.synthetic import synthetic
    >>> synthetic(5, seed=0, classes=["circle"])
    SketchSet(class_names=('circle',), train=3, valid=1, test=1, dropped={'train': 0, 'valid': 0, 'test': 0})
    """

    train: list
    valid: list
    test: list
    train_labels: np.ndarray
    valid_labels: np.ndarray
    test_labels: np.ndarray
    class_names: tuple
    dropped: dict

    def __repr__(self):
        sizes = ", ".join(f"{split}={len(getattr(self, split))}" for split in SPLITS)
        return f"SketchSet(class_names={self.class_names}, {sizes}, dropped={self.dropped})"


def sketch_set(per_class, class_names, max_len=None):
    """A SketchSet from ``per_class[label][split] = list of sketches``; with ``max_len``, without
    the sketches of more than ``max_len`` points, counted by split in ``SketchSet.dropped``.
    Both loaders (:func:`load_npz`, :func:`sketch_rnn.synthetic.synthetic`) filter here.

    >>> short, long = np.zeros((2, 3)), np.zeros((5, 3))
    >>> sketch_set([{"train": [short, long], "valid": [short], "test": [long]}], ["cat"], max_len=4)
    SketchSet(class_names=('cat',), train=1, valid=1, test=0, dropped={'train': 1, 'valid': 0, 'test': 1})
    """
    fields, dropped = {}, dict.fromkeys(SPLITS, 0)
    for split in SPLITS:
        kept = [[s for s in splits[split] if max_len is None or len(s) <= max_len] for splits in per_class]
        dropped[split] = sum(len(splits[split]) for splits in per_class) - sum(map(len, kept))
        fields[split] = [s for sketches in kept for s in sketches]
        fields[f"{split}_labels"] = np.concatenate(
            [np.full(len(sketches), label, dtype=np.int32) for label, sketches in enumerate(kept)]
        )
    return SketchSet(**fields, class_names=tuple(class_names), dropped=dropped)


class SketchFileError(ValueError):
    """A sketch ``.npz`` file that is not in the QuickDraw sketch-rnn format, or is damaged.

    >>> str(SketchFileError("cat.npz", "missing key 'test'"))
    "cat.npz: missing key 'test'"
    """

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


# --- reading .npz files without running their pickles -------------------------------------------
# numpy stores object arrays as pickles (Python 2 ones, in the published QuickDraw files), and
# unpickling runs whatever functions a pickle names. Here a pickle may name only numpy's
# ``_reconstruct``, ``ndarray`` and ``dtype`` (under ``numpy.core`` or ``numpy._core``) and the
# ``_codecs.encode`` that Python 3 protocol-2 pickles use for bytes, and each name gives a
# stand-in below, never numpy itself. Any other name (``os.system``...) is refused, so nothing a
# file names is ever called. Arrays are then built from checked shapes, dtypes and data: numpy's
# own ``ndarray.__setstate__`` crashes the interpreter on an object array whose list is shorter
# than its shape.


class _Array:
    """Stands for a pickled ndarray: ``__setstate__`` receives numpy's array state."""

    array = None

    def __setstate__(self, state):
        self.array = _build_array(state)


class _DType:
    """Stands for a pickled ``numpy.dtype(code, align, copy)`` and its ``__setstate__``."""

    def __init__(self, code, align=False, copy=True):
        self.code, self.state = code, None

    def __setstate__(self, state):
        self.state = state

    def build(self):
        """The numpy dtype: a number, string or object type, in the pickled byte order."""
        code = self.code
        if not isinstance(code, str) or not re.fullmatch(r"[biufcSUO][0-9]{1,4}", code):
            raise ValueError(f"dtype {code!r} is not a number, string or object dtype")
        dtype = np.dtype(code)
        if self.state is not None:
            if not isinstance(self.state, tuple) or len(self.state) < 5 or self.state[2:5] != (None,) * 3:
                raise ValueError(f"dtype {code!r} has a state numpy does not write")
            if self.state[1] in ("<", ">"):
                dtype = dtype.newbyteorder(self.state[1])
        return dtype


def _reconstruct(cls, shape, typecode):
    """Stands for numpy's ``_reconstruct``: an empty :class:`_Array` for ``__setstate__`` to fill."""
    if cls is not _Array:
        raise ValueError(f"_reconstruct of {cls!r}, not of numpy.ndarray")
    return _Array()


def _latin1_bytes(text, encoding):
    """Stands for ``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes: latin1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError(f"_codecs.encode to {encoding!r}, not of text to latin1")
    return text.encode("latin1")


_PICKLE_NAMES = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1 (and Python 2) files
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2
    ("numpy", "ndarray"): _Array,
    ("numpy", "dtype"): _DType,
    ("_codecs", "encode"): _latin1_bytes,
}


def _unwrap(item):
    """``item``, or the ndarray it stands for if it is an :class:`_Array`."""
    if not isinstance(item, _Array):
        return item
    if item.array is None:
        raise ValueError("an array without its data")
    return item.array


def _from_bytes(raw, dtype, shape, fortran_order):
    """A writable ndarray of ``shape`` from exactly the bytes it needs."""
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise ValueError(f"{len(raw)} bytes for {count} items of {dtype} (shape {shape})")
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape, order="F" if fortran_order else "C").copy()


def _build_array(state):
    """An ndarray from numpy's pickled state ``(1, shape, dtype, fortran_order, data)``, checked:
    ``data`` holds exactly the items ``shape`` asks for."""
    if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
        raise ValueError("an array state numpy does not write")
    _, shape, dtype, fortran_order, raw = state
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"array shape {shape!r}")
    if not isinstance(dtype, _DType) or not isinstance(fortran_order, bool):
        raise ValueError("an array state numpy does not write")
    dtype = dtype.build()
    if not dtype.hasobject:
        # A Python 2 str arrives as text, decoded as latin1 by the unpickler: encode it back.
        return _from_bytes(raw.encode("latin1") if isinstance(raw, str) else raw, dtype, shape, fortran_order)
    if not isinstance(raw, list) or len(raw) != math.prod(shape):
        raise ValueError(f"an object array of shape {shape} without its {math.prod(shape)} items")
    array = np.empty(len(raw), dtype=object)
    for i, item in enumerate(raw):
        array[i] = _unwrap(item)
    return array.reshape(shape, order="F" if fortran_order else "C")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays through the stand-ins; any other name raises SketchFileError."""

    def __init__(self, file, path, where):
        super().__init__(file, encoding="latin1")  # Python 2 str -> str, taken back to bytes above
        self.path, self.where = path, where

    def find_class(self, module, name):
        try:
            return _PICKLE_NAMES[module, name]
        except KeyError:
            shown = f"{module}.{name}" if f"{module}{name}".isprintable() else repr(f"{module}.{name}")
            problem = (f"{self.where} refers to {shown}, which no numpy array needs: refused "
                       "(nothing from the file was run; a sketch file holds only arrays)")
            raise SketchFileError(self.path, problem) from None


#: Pickle opcodes numpy never writes: protocol 5's out-of-band buffers (the C unpickler allocates
#: the length BYTEARRAY8 claims before reading it), persistent ids and the extension registry.
_REFUSED_OPCODES = {"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER", "PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4"}


def _unpickle(raw, path, where):
    """The object pickled in ``raw``, through :class:`_ArraysOnlyUnpickler`, once ``pickletools``
    has read every opcode and checked every length against the bytes there are."""
    for opcode, _, position in pickletools.genops(raw):
        if opcode.name in _REFUSED_OPCODES:
            raise ValueError(f"pickle opcode {opcode.name} at byte {position}, which numpy never writes")
    return _ArraysOnlyUnpickler(io.BytesIO(raw), path, where).load()


@contextlib.contextmanager
def _damage_reported(path, what):
    """Any failure to decode ``what`` becomes a SketchFileError naming ``path``: on damaged bytes
    the zip, npy and pickle readers raise a dozen types (BadZipFile, zlib.error, EOFError,
    UnpicklingError, ValueError, MemoryError, ...)."""
    try:
        yield
    except SketchFileError:
        raise
    except Exception as error:
        message = " ".join(str(error).split())[:200]
        raise SketchFileError(path, f"{what} is corrupt ({type(error).__name__}: {message})") from error


def _read_npy(path, zip_file, split):
    """The array of the ``<split>.npy`` member, read without numpy's unpickling."""
    where = f"split {split!r}"
    with _damage_reported(path, where):
        stream = io.BytesIO(zip_file.read(f"{split}.npy"))
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise SketchFileError(path, f"{where} is an .npy file of version {version[0]}.{version[1]}, not 1.0 or 2.0")
        if any(n < 0 for n in shape):
            raise ValueError(f"array shape {shape}")
        if not dtype.hasobject:
            return _from_bytes(stream.read(), dtype, shape, fortran_order)
        array = _unwrap(_unpickle(stream.read(), path, where))
        if not isinstance(array, np.ndarray) or array.shape != shape:
            raise ValueError(f"the pickle holds no array of the header's shape {shape}")
        return array


def _check_sketch(path, where, sketch):
    """Raise SketchFileError unless ``sketch`` is a non-empty finite (n, 3) stroke-3 array."""
    if not isinstance(sketch, np.ndarray) or sketch.ndim != 2 or sketch.shape[1] != 3:
        shape = getattr(sketch, "shape", type(sketch).__name__)
        raise SketchFileError(path, f"{where} is not a 2-D (n, 3) stroke-3 array (got {shape})")
    if sketch.dtype.kind not in "iuf":
        raise SketchFileError(path, f"{where} has dtype {sketch.dtype}, not an integer or float dtype")
    if len(sketch) == 0:
        raise SketchFileError(path, f"{where} is an empty sketch (0 points)")
    if not np.isfinite(sketch).all():
        raise SketchFileError(path, f"{where} has non-finite values")
    if not np.isin(sketch[:, 2], (0, 1)).all():
        raise SketchFileError(path, f"{where} has pen states other than 0 and 1")


def _read_npz(path):
    """The three splits of one sketch-rnn ``.npz`` file, checked, as lists of arrays."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with _damage_reported(path, "its zip directory"):
        if not zipfile.is_zipfile(path):
            raise SketchFileError(path, "not an .npz (zip) file, or a truncated one")
        zip_file = zipfile.ZipFile(path)
    with zip_file:
        names = zip_file.namelist()
        missing = [split for split in SPLITS if f"{split}.npy" not in names]
        if missing:
            found = ", ".join(repr(name.removesuffix(".npy")) for name in names) or "none"
            raise SketchFileError(path, f"missing key {missing[0]!r} (found: {found})")
        splits = {}
        for split in SPLITS:
            array = _read_npy(path, zip_file, split)
            if array.ndim == 0:
                raise SketchFileError(path, f"split {split!r} is not an array of sketches")
            if len(array) == 0:
                raise SketchFileError(path, f"split {split!r} is empty")
            for i, sketch in enumerate(array):
                _check_sketch(path, f"{split}[{i}]", sketch)
            splits[split] = list(array)
    return splits


def load_npz(paths, max_len=None):
    """Load QuickDraw sketch-rnn ``.npz`` files (one path or a list) into one SketchSet.

    Each file is one class, named by its file stem; its ``train``/``valid``/``test`` splits are
    concatenated with the other files' in the order given. With ``max_len``, sketches of more
    than ``max_len`` points are dropped and counted in ``SketchSet.dropped`` (per split).
    A file that is not in the format raises :class:`SketchFileError` (a ``ValueError``) naming the
    file and the problem: a damaged file, or one whose pickles (the format pickles its object
    arrays; Python 2 ones too) name anything but numpy arrays. Nothing a file names is ever run.

    >>> import os, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> split = np.empty(2, dtype=object)
    >>> split[:] = [np.array([[1, 2, 1]], np.int16), np.array([[1, 2, 0], [3, 4, 1]], np.int16)]
    >>> np.savez(os.path.join(folder.name, "cat.npz"), train=split, valid=split, test=split)
    >>> load_npz(os.path.join(folder.name, "cat.npz"), max_len=1)
    SketchSet(class_names=('cat',), train=1, valid=1, test=1, dropped={'train': 1, 'valid': 1, 'test': 1})
    >>> folder.cleanup()
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise ValueError("load_npz needs at least one path")
    return sketch_set([_read_npz(path) for path in paths], [p.stem for p in paths], max_len)
