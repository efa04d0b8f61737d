"""The built-in synthetic sketch set: circles, squares, triangles, stars, spirals and houses.

Shapes are drawn in unit coordinates (y up, about [-0.5, 0.5]^2) as lists of polylines, then
jittered, rotated, stretched and scaled to QuickDraw-sized int16 stroke-3 sketches.

>>> synthetic(5, seed=0, classes=["house"]).train[0].dtype
dtype('int16')
"""

import numpy as np

from sketch_rnn.data import sketch_set


def _subdivide(vertices, rng):
    """Polyline through ``vertices`` with 0 or 1 extra point on each straight edge."""
    points = [vertices[0]]
    for a, b in zip(vertices[:-1], vertices[1:]):
        if rng.random() < 0.5:
            points.append(a + (b - a) * rng.uniform(0.35, 0.65))
        points.append(b)
    return np.array(points)


def _closed_polygon(corners, rng):
    """A closed hand-drawn polygon: random start corner and direction, back to the start."""
    corners = np.roll(corners, -rng.integers(len(corners)), axis=0)
    if rng.random() < 0.5:
        corners = corners[::-1]
    return _subdivide(np.concatenate([corners, corners[:1]]), rng)


def _circle(rng):
    n = rng.integers(12, 21)
    start, direction = rng.uniform(0, 2 * np.pi), rng.choice([-1, 1])
    angles = start + direction * np.linspace(0, 2 * np.pi + rng.uniform(0, 0.4), n)
    radius = 0.5 * (1 + rng.normal(0, 0.03, n))
    return [radius[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)]


def _square(rng):
    return [_closed_polygon(np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]), rng)]


def _triangle(rng):
    return [_closed_polygon(np.array([[0.0, 0.5], [0.5, -0.4], [-0.5, -0.4]]), rng)]


def _star(rng):
    angles = np.pi / 2 + np.arange(10) * np.pi / 5
    radius = np.where(np.arange(10) % 2 == 0, 0.5, rng.uniform(0.18, 0.25))
    corners = radius[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return [np.concatenate([corners, corners[:1]])]


def _spiral(rng):
    turns = rng.uniform(2.2, 3.2)
    n = int(turns * rng.integers(9, 12))
    angles = rng.choice([-1, 1]) * np.linspace(0, 2 * np.pi * turns, n)
    radius = np.linspace(0.04, 0.5, n)
    return [radius[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)]


def _house(rng):
    body = _closed_polygon(np.array([[-0.4, -0.5], [0.4, -0.5], [0.4, 0.15], [-0.4, 0.15]]), rng)
    roof = np.array([[-0.5, 0.1], [0.0, 0.55], [0.5, 0.1]])
    door_width = rng.uniform(0.08, 0.14)
    door = np.array([[-door_width, -0.5], [-door_width, -0.15], [door_width, -0.15], [door_width, -0.5]])
    return [body, roof, door]


SHAPES = {
    "circle": (_circle, np.pi),
    "square": (_square, np.pi / 12),
    "triangle": (_triangle, np.pi / 12),
    "star": (_star, np.pi / 10),
    "spiral": (_spiral, np.pi),
    "house": (_house, np.pi / 18),
}
CLASSES = tuple(SHAPES)


def _draw(lines, max_rotation, rng):
    """Jitter, rotate, stretch and scale unit polylines to QuickDraw-sized int16 stroke-3."""
    angle = rng.uniform(-max_rotation, max_rotation)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    stretch = rng.uniform(50, 150) * rng.uniform(0.85, 1.15, size=2) * np.array([1, -1])  # y down
    rows, position = [], None
    for line in lines:
        points = (line + rng.normal(0, 0.015, line.shape)) @ rotation.T * stretch
        points = np.round(points)
        points = points[np.r_[True, np.any(np.diff(points, axis=0) != 0, axis=1)]]
        if position is None:  # the first row is a short move from the origin, as in QuickDraw
            position = points[0] - rng.integers(-8, 9, size=2)
        offsets = np.diff(np.concatenate([position[None], points]), axis=0)
        pen = np.zeros(len(points))
        pen[-1] = 1
        rows.append(np.column_stack([offsets, pen]))
        position = points[-1]
    return np.concatenate(rows).astype(np.int16)


def synthetic(n_per_class, seed, classes=None, max_len=None):
    """A deterministic set of hand-drawn-looking shapes, as a SketchSet of int16 stroke-3 sketches.

    Classes (default all of ``CLASSES``): circle, square, triangle, star, spiral, and house
    (walls, roof and door: three strokes). Each sketch is 50 to 150 units across, jittered,
    stretched and rotated, with at most about 40 points. Each class is split 80/10/10 (at least
    one sketch in valid and test). The same ``seed`` gives the same set. With ``max_len``, the
    sketches of more than ``max_len`` points are left out (``SketchSet.dropped`` counts them).

    >>> data = synthetic(10, seed=0)
    >>> data
    SketchSet(class_names=('circle', 'square', 'triangle', 'star', 'spiral', 'house'), train=48, valid=6, test=6, dropped={'train': 0, 'valid': 0, 'test': 0})
    >>> data.train[0].dtype, data.train_labels[:9]
    (dtype('int16'), array([0, 0, 0, 0, 0, 0, 0, 0, 1], dtype=int32))
    >>> synthetic(10, seed=0, max_len=20).dropped
    {'train': 8, 'valid': 1, 'test': 1}
    """
    classes = CLASSES if classes is None else tuple(classes)
    unknown = [name for name in classes if name not in SHAPES]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; available: {', '.join(CLASSES)}")
    if n_per_class < 3:
        raise ValueError(f"n_per_class={n_per_class}: need at least 3 for train, valid and test")
    rng = np.random.default_rng(seed)
    n_held_out = max(1, round(n_per_class / 10))
    per_class = []
    for name in classes:
        shape, max_rotation = SHAPES[name]
        sketches = [_draw(shape(rng), max_rotation, rng) for _ in range(n_per_class)]
        per_class.append(
            {
                "train": sketches[: n_per_class - 2 * n_held_out],
                "valid": sketches[n_per_class - 2 * n_held_out : n_per_class - n_held_out],
                "test": sketches[n_per_class - n_held_out :],
            }
        )
    return sketch_set(per_class, classes, max_len)
