"""Draw stroke-3 sketches: SVG text, PNG images, and tables of sketches (grids, pairs, strips).

Each sketch is fitted, centred, into a square with a 10% margin; y grows downward, as in the data.
Strokes are black; the first points of a completed sketch (the part it was primed with) are drawn
in ``PREFIX_COLOUR``. A stroke of one point (a sketch of one point, say) is drawn as a dot.
PNG goes through matplotlib's object-oriented API (``matplotlib.figure.Figure``, rendered by Agg),
so pyplot and the global backend are never touched. Every file is written atomically: to a
temporary file in the same folder, then moved over the target with ``os.replace``.
"""

import contextlib
import io
import os
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from sketch_rnn.data import strokes_to_lines

MARGIN = 0.1
TITLE_HEIGHT = 0.15  # of a cell, above the sketch, when a table has titles
STROKE_COLOUR = "#000000"
PREFIX_COLOUR = "#d62728"  # matplotlib's tab:red


def _fit_box(lines):
    """``(x0, y0, side)``: the square, centred on the sketch, that holds it with a margin."""
    if not lines:
        return 0.0, 0.0, 1.0
    points = np.concatenate(lines)
    low, high = points.min(axis=0), points.max(axis=0)
    extent = float((high - low).max())
    side = extent * (1 + 2 * MARGIN) if extent > 0 else 1.0
    x0, y0 = (low + high) / 2 - side / 2
    return float(x0), float(y0), side


def _coloured_lines(strokes, prefix=0):
    """``[(line, colour), ...]``: the polylines of a sketch, those of its first ``prefix`` points in
    ``PREFIX_COLOUR``; a stroke that goes on past the prefix is split there, the segment from the
    last point of the prefix to the next in ``STROKE_COLOUR``.

    >>> [(line[:, 0].tolist(), colour) for line, colour in _coloured_lines(np.array([[1, 0, 0], [1, 0, 0], [1, 0, 1]]), 2)]
    [([1.0, 2.0], '#d62728'), ([2.0, 3.0], '#000000')]
    """
    lines, start, coloured = strokes_to_lines(strokes), 0, []
    for line in lines:
        end = start + len(line)
        if start < prefix:
            coloured.append((line[: prefix - start], PREFIX_COLOUR))
        if end > prefix:
            coloured.append((line[max(prefix - 1 - start, 0) :], STROKE_COLOUR))
        start = end
    return coloured


def _fsync(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path`` (same suffixes: ``.weights.h5`` stays whole) to
    write to; on success it is flushed to disk and replaces ``path`` with ``os.replace``, on
    failure it is removed: a reader never sees a half-written file, even after a power cut.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "note.txt"
    >>> with atomic_path(target) as temporary:
    ...     _ = temporary.write_text("hello")
    >>> target.read_text()
    'hello'
    """
    path = Path(path)
    suffix = "".join(path.suffixes)
    prefix = f".{path.name.removesuffix(suffix)}."
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    os.close(descriptor)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o644)
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    _fsync(path.parent)  # the rename itself


def write_atomic(path, data):
    """Write ``data`` (bytes) to ``path`` through :func:`atomic_path`. Returns the path.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "note.txt"
    >>> write_atomic(target, b"hello").read_bytes()
    b'hello'
    """
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


# --- SVG ---------------------------------------------------------------------------------------


def _svg_sketch(strokes, size, stroke_width, attributes, prefix=0):
    """An ``<svg>`` element of ``size`` pixels drawing one sketch, one polyline per stroke (a stroke
    of one point is a zero-length polyline, which round caps draw as a dot)."""
    x0, y0, side = _fit_box(strokes_to_lines(strokes))
    polylines = "".join(
        f'<polyline stroke="{colour}" points="'
        + " ".join(f"{x:g},{y:g}" for x, y in (line if len(line) > 1 else [line[0], line[0]]))
        + '"/>\n'
        for line, colour in _coloured_lines(strokes, prefix)
    )
    return (
        f'<svg {attributes}width="{size:g}" height="{size:g}" viewBox="{x0:g} {y0:g} {side:g} {side:g}">\n'
        f'<g fill="none" stroke-width="{stroke_width * side / size:g}" '
        'stroke-linecap="round" stroke-linejoin="round">\n'
        f"{polylines}</g>\n</svg>\n"
    )


def to_svg(strokes, path=None, size=256, stroke_width=2.0, prefix=0):
    """SVG text of one sketch, ``size`` pixels square, strokes ``stroke_width`` pixels wide, its
    first ``prefix`` points in ``PREFIX_COLOUR``.

    Written to ``path`` too when one is given.

    >>> print(to_svg(np.array([[0, 0, 0], [10, 0, 0], [0, 10, 1]]), size=64), end="")
    <svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="-1 -1 12 12">
    <g fill="none" stroke-width="0.375" stroke-linecap="round" stroke-linejoin="round">
    <polyline stroke="#000000" points="0,0 10,0 10,10"/>
    </g>
    </svg>
    """
    text = _svg_sketch(strokes, size, stroke_width, 'xmlns="http://www.w3.org/2000/svg" ', prefix)
    if path is not None:
        write_atomic(path, text.encode())
    return text


def _svg_table(rows, titles, cell_size, prefixes):
    """SVG text of a table of sketches: one nested ``<svg>`` per cell, titles above them."""
    title_height = TITLE_HEIGHT * cell_size if titles else 0
    row_height = cell_size + title_height
    width, height = max(map(len, rows)) * cell_size, len(rows) * row_height
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:g}" height="{height:g}" '
        f'viewBox="0 0 {width:g} {height:g}">\n<rect width="100%" height="100%" fill="white"/>\n'
    ]
    for r, row in enumerate(rows):
        for c, strokes in enumerate(row):
            x, y = c * cell_size, r * row_height
            if titles:
                parts.append(
                    f'<text x="{x + cell_size / 2:g}" y="{y + 0.75 * title_height:g}" '
                    f'font-size="{0.6 * title_height:g}" font-family="sans-serif" '
                    f'text-anchor="middle">{escape(str(titles[r][c]))}</text>\n'
                )
            parts.append(_svg_sketch(strokes, cell_size, 2.0, f'x="{x:g}" y="{y + title_height:g}" ',
                                     prefixes[r][c] if prefixes else 0))
    parts.append("</svg>\n")
    return "".join(parts)


# --- PNG ---------------------------------------------------------------------------------------


def _png_table(rows, titles, cell_size, prefixes=None, stroke_width=2.0):
    """PNG bytes of a table of sketches, ``cell_size`` pixels a cell (plus titles above)."""
    from matplotlib.figure import Figure

    title_height = TITLE_HEIGHT if titles else 0
    nrows, ncols = len(rows), max(map(len, rows))
    # One inch a cell at dpi = cell_size makes the pixel size exact.
    figure = Figure(figsize=(ncols, nrows * (1 + title_height)), dpi=cell_size, facecolor="white")
    for r, row in enumerate(rows):
        for c, strokes in enumerate(row):
            rect = [c / ncols, 1 - (r + 1) / nrows, 1 / ncols, 1 / (1 + title_height) / nrows]
            axes = figure.add_axes(rect)
            axes.set_axis_off()
            x0, y0, side = _fit_box(strokes_to_lines(strokes))
            axes.set_xlim(x0, x0 + side)
            axes.set_ylim(y0 + side, y0)
            width = stroke_width * 72 / cell_size  # points
            for line, colour in _coloured_lines(strokes, prefixes[r][c] if prefixes else 0):
                axes.plot(*line.T, color=colour, linewidth=width, solid_capstyle="round", solid_joinstyle="round",
                          marker="o" if len(line) == 1 else None, markersize=4 * width, markeredgewidth=0)
            if titles:
                axes.set_title(str(titles[r][c]), fontsize=6.5, pad=2)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=cell_size, facecolor="white")
    return buffer.getvalue()


def to_png(strokes, path, size=256, stroke_width=2.0):
    """Write one sketch as a ``size`` x ``size`` PNG to ``path``; returns the path.

    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> to_png(np.array([[0, 0, 0], [10, 0, 0], [0, 10, 1]]), Path(folder.name) / "l.png", size=32).name
    'l.png'
    >>> folder.cleanup()
    """
    return write_atomic(path, _png_table([[strokes]], None, size, stroke_width=stroke_width))


# --- tables ------------------------------------------------------------------------------------


def _write_table(rows, path, titles=None, cell_size=128, prefixes=None):
    """Write a table of sketches to ``path`` as PNG or SVG, chosen by its extension; ``prefixes``,
    a table of point counts, colours the first points of each sketch."""
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        return write_atomic(path, _png_table(rows, titles, cell_size, prefixes))
    if suffix == ".svg":
        return write_atomic(path, _svg_table(rows, titles, cell_size, prefixes).encode())
    raise ValueError(f"{path}: cannot tell the image format; use a .png or .svg file name")


def grid(sketches, path, ncols=8, titles=None, cell_size=128):
    """Write ``sketches`` in rows of ``ncols`` to a ``.png`` or ``.svg`` file; returns the path.

    ``titles``, one per sketch, are written above the sketches.

    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> sketch = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 1]])
    >>> grid([sketch] * 3, Path(folder.name) / "g.svg", ncols=2, titles=["a", "b", "c"]).name
    'g.svg'
    >>> folder.cleanup()
    """
    if not sketches:
        raise ValueError("grid needs at least one sketch")
    if titles is not None and len(titles) != len(sketches):
        raise ValueError(f"{len(titles)} titles for {len(sketches)} sketches")
    def rows(items):
        return [list(items[i : i + ncols]) for i in range(0, len(items), ncols)]

    return _write_table(rows(sketches), path, None if titles is None else rows(titles), cell_size)


def pairs(originals, reconstructions, path, cell_size=128, titles=("original", "reconstruction")):
    """Write originals (top row) above their reconstructions (bottom row), each cell titled with
    its row's title; returns the path.

    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> sketch = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 1]])
    >>> pairs([sketch] * 2, [sketch] * 2, Path(folder.name) / "p.png").name
    'p.png'
    >>> folder.cleanup()
    """
    if not originals or len(originals) != len(reconstructions):
        raise ValueError(f"{len(originals)} originals for {len(reconstructions)} reconstructions")
    rows = [list(originals), list(reconstructions)]
    return _write_table(rows, path, [[title] * len(originals) for title in titles], cell_size)


def completions(prefixes, completed, path, cell_size=128):
    """Write prefixes (top row, titled "kept") above the sketches completed from them (bottom row,
    "completed"), each prefix in ``PREFIX_COLOUR``; returns the path.

    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> sketch = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 1]])
    >>> completions([sketch[:2]] * 2, [sketch] * 2, Path(folder.name) / "c.svg").name
    'c.svg'
    >>> folder.cleanup()
    """
    if not prefixes or len(prefixes) != len(completed):
        raise ValueError(f"{len(prefixes)} prefixes for {len(completed)} completed sketches")
    n = len(prefixes)
    lengths = [len(p) for p in prefixes]
    return _write_table([list(prefixes), list(completed)], path, [["kept"] * n, ["completed"] * n], cell_size,
                        [lengths, lengths])


def strip(sketches, path, cell_size=128):
    """Write ``sketches`` in one row (an interpolation, say); returns the path.

    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> sketch = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 1]])
    >>> strip([sketch] * 4, Path(folder.name) / "s.png").name
    's.png'
    >>> folder.cleanup()
    """
    if not sketches:
        raise ValueError("strip needs at least one sketch")
    return _write_table([list(sketches)], path, None, cell_size)
