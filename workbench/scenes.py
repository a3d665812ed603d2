"""Seeded detection scenes: several shapes, or real handwritten digits, placed on one canvas.

Each scene is an image with its objects' classes and boxes. Targets are one padded tensor
``y`` of shape ``(N, max_objects, 5)``, rows ``[class, x1, y1, x2, y2]`` in pixels (``x2``/``y2``
exclusive, so a box covers columns ``x1 .. x2 - 1``), and ``class = -1`` marks an empty slot.
So ``fit`` batches scenes exactly as it batches classification images. The knobs are the
classification ones: ``n`` (how many scenes), ``size`` and ``gap`` (the domain gap).

Example:
    >>> scenes = shape_scenes(4, classes=3, seed=0)
    >>> scenes.x.shape, scenes.y.shape[-1], scenes.classes
    (torch.Size([4, 3, 64, 64]), 5, ('circle', 'square', 'triangle'))
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import (
    DIGITS,
    SHAPES,
    SOURCE_CLASSES,
    ImageSet,
    _background,
    _check_gap,
    _check_tensors,
    _foreground,
    _load_digits,
    _masks,
    _resolve,
    check_classes,
    check_labels,
)
from .numbers import whole_number

EMPTY = -1  # the class of a padding slot in ``y``


class DetectionSet(ImageSet):
    """Scenes ``x`` (N, C, H, W) in [0, 1], padded targets ``y`` (N, M, 5) ``[class, x1, y1, x2, y2]``, class names."""

    def __post_init__(self):
        _check_tensors(self.x, self.y)
        if self.x.ndim != 4 or self.y.ndim != 3 or self.y.shape[-1] != 5 or len(self.x) != len(self.y):
            raise ValueError(f"x must be (N, C, H, W) and y (N, max_objects, 5); got x {tuple(self.x.shape)}, "
                             f"y {tuple(self.y.shape)}")
        object.__setattr__(self, "classes", check_classes(self.classes))
        labels = self.y[..., 0]
        if bool((labels != labels.round()).any()):
            raise ValueError("y[..., 0] must hold whole class indices (or -1 for an empty slot)")
        check_labels(labels, len(self.classes), "y[..., 0]", empty=EMPTY)

    def objects(self, i: int) -> torch.Tensor:
        """The ``(n, 5)`` targets of scene ``i`` without padding."""
        return self.y[i][self.y[i, :, 0] != EMPTY]


def _check(n, size, gap, objects, object_size) -> tuple[int, int, float, tuple[int, int], tuple[float, float]]:
    n = whole_number(n, "n", 1, " scenes")
    size = whole_number(size, "size", 32, " pixels")
    if size % 32:
        raise ValueError(f"size must be a multiple of 32 pixels, e.g. 64 or 96 (the detector's largest stride "
                         f"is 32); got {size!r}")
    gap = _check_gap(gap)
    objects = _pair(objects, "objects")
    lo, hi = (whole_number(v, "objects (min, max)", 1) for v in objects)
    if not 1 <= lo <= hi:
        raise ValueError(f"objects must be (min, max) with 1 <= min <= max; got {objects}")
    smin, smax = _pair(object_size, "object_size")
    numbers = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                  for v in (smin, smax))
    if not numbers or not 0.0 < smin <= smax <= 0.9 or smin * size < 6:
        raise ValueError(f"object_size must be (min, max) fractions of the side with 6 / size <= min <= max <= 0.9; "
                         f"got {object_size}")
    return n, size, gap, (lo, hi), (float(smin), float(smax))


def _pair(value, what: str) -> tuple:
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{what} must be a pair (min, max), got {value!r}")
    return tuple(value)


def _place(rng: np.random.Generator, n: int, size: int, objects, object_size, tries: int = 30) -> list[list]:
    """Per scene, non-overlapping squares ``(x, y, side)`` in pixels (a square that does not fit is dropped)."""
    scenes = []
    for _ in range(n):
        placed = []
        for _ in range(rng.integers(objects[0], objects[1] + 1)):
            for _ in range(tries):
                side = rng.uniform(*object_size) * size
                x, y = rng.uniform(0, size - side, 2)
                if all(x + side + 1 <= px or px + ps + 1 <= x or y + side + 1 <= py or py + ps + 1 <= y
                       for px, py, ps in placed):
                    placed.append((x, y, side))
                    break
        scenes.append(placed)
    return scenes


def _frames(squares: np.ndarray, size: int, rng: np.random.Generator, max_rotation: float):
    """Per object, a ``P x P`` pixel patch around it: its canvas origin and its pixel centres in the object's
    rotated frame (unit = half its side), ``u`` and ``v`` of shape (K, P, P)."""
    patch = int(np.ceil(squares[:, 2].max(initial=1.0))) + 3
    origin = np.floor(squares[:, :2]).astype(np.int64) - 1
    centre = squares[:, :2] + squares[:, 2:3] / 2 - origin  # in patch pixels
    half = (squares[:, 2] / 2)[:, None, None]
    theta = rng.uniform(-max_rotation, max_rotation, len(squares)).astype(np.float32)[:, None, None]
    grid = np.arange(patch, dtype=np.float32) + 0.5
    dx = (grid[None, None, :] - centre[:, 0, None, None]) / half
    dy = (grid[None, :, None] - centre[:, 1, None, None]) / half
    return origin, np.cos(theta) * dx + np.sin(theta) * dy, -np.sin(theta) * dx + np.cos(theta) * dy


def _shape_alpha(names, labels, u, v) -> np.ndarray:
    alpha = np.zeros(u.shape, dtype=np.float32)
    for k, name in enumerate(names):
        rows = labels == k
        if rows.any():
            alpha[rows] = _masks(name, u[rows], v[rows])
    return alpha


def _digit_alpha(labels, u, v, rng) -> np.ndarray:
    """Real 8x8 digits, one picked at random per object, sampled into its patch (bilinear)."""
    images, targets = _load_digits()
    pick = np.array([rng.choice(np.flatnonzero(targets == k)) for k in labels], dtype=np.int64)
    grid = torch.from_numpy(np.stack([u, v], -1).astype(np.float32))  # [-1, 1] spans the digit's 8x8 frame
    sampled = F.grid_sample(torch.from_numpy(images[pick])[:, None], grid, align_corners=False, padding_mode="zeros")
    return sampled[:, 0].numpy()


def _tight_boxes(alpha: np.ndarray, origin: np.ndarray, size: int, threshold: float = 0.35) -> np.ndarray:
    """``[x1, y1, x2, y2]`` on the canvas around each patch's pixels with alpha above ``threshold``; zeros when none."""
    on = alpha > threshold
    cols, rows = on.any(1), on.any(2)
    patch = alpha.shape[-1]
    x1, y1 = cols.argmax(1), rows.argmax(1)
    x2, y2 = patch - cols[:, ::-1].argmax(1), patch - rows[:, ::-1].argmax(1)
    boxes = np.clip(np.stack([x1, y1, x2, y2], 1) + np.tile(origin, 2), 0, size)
    return boxes * cols.any(1)[:, None]


def _paste(values: torch.Tensor, owner: np.ndarray, origin: np.ndarray, n: int, size: int) -> torch.Tensor:
    """Sum (K, C, P, P) patches into (n, C, size, size) canvases at their origins (pixels off the canvas dropped)."""
    c, patch = values.shape[1], values.shape[-1]
    ys = torch.from_numpy(origin[:, 1])[:, None, None] + torch.arange(patch)[None, :, None]
    xs = torch.from_numpy(origin[:, 0])[:, None, None] + torch.arange(patch)[None, None, :]
    pixel = torch.from_numpy(owner)[:, None, None] * size * size + ys * size + xs
    off = (ys < 0) | (ys >= size) | (xs < 0) | (xs >= size)
    pixel = pixel.masked_fill(off, n * size * size).flatten()  # one spare slot collects what falls off
    canvas = torch.zeros(c, n * size * size + 1)
    canvas.index_add_(1, pixel, values.transpose(0, 1).reshape(c, -1))
    return canvas[:, :-1].view(c, n, size, size).transpose(0, 1)


def _scenes(kind: str, names, n, size, gap, objects, object_size, seed) -> DetectionSet:
    n, size, gap, objects, object_size = _check(n, size, gap, objects, object_size)
    rng = np.random.default_rng(seed)
    placed = _place(rng, n, size, objects, object_size)
    owner = np.repeat(np.arange(n), [len(p) for p in placed])
    squares = np.array([b for p in placed for b in p], dtype=np.float32).reshape(-1, 3)
    labels = rng.integers(0, len(names), len(squares))
    if kind == "shapes":
        origin, u, v = _frames(squares, size, rng, max_rotation=0.25)
        alpha, colour = _shape_alpha(names, labels, u, v), _foreground(rng, len(squares), gap)
    else:
        origin, u, v = _frames(squares, size, rng, max_rotation=0.15)
        alpha, colour = _digit_alpha(labels, u, v, rng), np.ones((len(squares), 3, 1, 1))
    boxes = _tight_boxes(alpha, origin, size)
    alpha_t = torch.from_numpy(alpha)[:, None]
    layers = torch.cat([alpha_t, alpha_t * torch.from_numpy(colour.astype(np.float32))], 1)
    cover, paint = _paste(layers, owner, origin, n, size).split([1, 3], 1)
    background = torch.from_numpy(_background(rng, n, size, gap).astype(np.float32))
    if kind == "digits":  # grey, as data.digits
        background = background.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    noise = torch.from_numpy(rng.standard_normal((n, 3, size, size), dtype=np.float32))
    image = background * (1 - cover.clamp(0, 1)) + paint + noise * (0.02 + 0.15 * gap)
    return DetectionSet(image.clamp_(0, 1), _targets(n, owner, labels, boxes, objects[1]), tuple(names))


def _targets(n: int, owner: np.ndarray, labels: np.ndarray, boxes: np.ndarray, max_objects: int) -> torch.Tensor:
    y = torch.zeros(n, max_objects, 5)
    y[:, :, 0] = EMPTY
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    owner, rows = owner[valid], np.concatenate([labels[valid, None], boxes[valid]], 1)
    slot = np.arange(len(owner)) - np.searchsorted(owner, owner)  # position of each object within its scene
    y[owner, slot] = torch.from_numpy(rows.astype(np.float32))
    return y


def shape_scenes(n: int = 500, classes: int | Sequence[str] | None = None, *, size: int = 64,
                 objects: tuple[int, int] = (1, 3), object_size: tuple[float, float] = (0.25, 0.45), gap: float = 0.0,
                 seed: int = 0) -> DetectionSet:
    """Scenes of coloured shapes: ``objects`` per scene, non-overlapping, at random position, size and tilt.

    Args:
        n: number of scenes (the target-size knob).
        classes: class names from ``SHAPES`` or a count; default the 10 ``SOURCE_CLASSES``.
        size: canvas side in pixels, a multiple of 32 (the detector's largest stride).
        objects: (min, max) objects per scene; ``y`` has ``max`` slots.
        object_size: (min, max) side of an object as a fraction of the canvas side.
        gap: domain gap in [0, 1], as in :func:`workbench.data.shapes`.
        seed: the same seed gives the same scenes.

    Example:
        >>> scenes = shape_scenes(2, classes=["ring", "tee"], objects=(2, 2), seed=1)
        >>> scenes.objects(0).shape
        torch.Size([2, 5])
    """
    return _scenes("shapes", _resolve(classes, SHAPES, SOURCE_CLASSES), n, size, gap, objects, object_size, seed)


def digit_scenes(n: int = 500, *, size: int = 64, objects: tuple[int, int] = (1, 3),
                 object_size: tuple[float, float] = (0.25, 0.45), gap: float = 0.0, seed: int = 0) -> DetectionSet:
    """Scenes of real handwritten digits (scikit-learn's ``load_digits``), classes ``"0"`` .. ``"9"``.

    The knobs are those of :func:`shape_scenes`; each object is a randomly picked 8x8 digit
    scaled up to its size, grey on the background, its box tight around its ink.

    Example:
        >>> digit_scenes(3, seed=0).classes[:3]
        ('0', '1', '2')
    """
    return _scenes("digits", DIGITS, n, size, gap, objects, object_size, seed)
