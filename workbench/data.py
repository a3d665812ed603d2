"""Seeded in-memory data sets: synthetic shapes and scikit-learn's bundled handwritten digits.

Nothing is downloaded. Every generator takes a ``seed`` and returns the same tensors for it.
Two knobs serve the lessons: ``n_per_class`` (how much target data there is) and ``gap``
(how far the images drift from the source domain: colours, background texture, noise).

Example:
    >>> ds = shapes(n_per_class=5, classes=3, seed=0)
    >>> ds.x.shape, ds.classes
    (torch.Size([15, 3, 32, 32]), ('circle', 'square', 'triangle'))
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .numbers import whole_number

SHAPES = ("circle", "square", "triangle", "ring", "plus", "diamond", "hbar", "vbar",
          "cross", "frame", "halfdisk", "tee")
SOURCE_CLASSES = SHAPES[:10]  # the pretraining task
DIGITS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class ImageSet(Dataset):
    """Images ``x`` (N, C, H, W, float32 in [0, 1]), labels ``y`` (N,), and the class names.

    Checked when built, before any model sees them: ``x`` floating point, one integer label per
    image in ``0..nc-1``, class names distinct. A bad label raises a ``ValueError`` naming it.

    Example:
        >>> ImageSet(torch.zeros(2, 3, 8, 8), torch.tensor([0, -1]), ("cat", "dog"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: y[1] = -1 is not a class index: labels must be in 0..1 for the 2 classes; ...
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self):
        _check_tensors(self.x, self.y)
        if self.x.ndim != 4 or len(self.x) != len(self.y):
            raise ValueError(f"x must be (N, C, H, W) with one label per image; got x {tuple(self.x.shape)}, "
                             f"y {tuple(self.y.shape)}")
        object.__setattr__(self, "classes", check_classes(self.classes))
        if self.y.ndim != 1 or not _integer(self.y):
            raise ValueError(f"y must be a 1-D tensor of integer class indices (got dtype {self.y.dtype}, shape "
                             f"{tuple(self.y.shape)}): e.g. y.long()")
        check_labels(self.y, len(self.classes), "y")

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    @property
    def nc(self) -> int:
        return len(self.classes)

    def subset(self, index) -> ImageSet:
        """The rows ``index``, as a set of the same kind."""
        index = torch.as_tensor(index, dtype=torch.long)
        return type(self)(self.x[index], self.y[index], self.classes)


def _check_tensors(x, y) -> None:
    for value, what in ((x, "x"), (y, "y")):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{what} must be a torch.Tensor, got {type(value).__name__}: e.g. torch.as_tensor({what})")
    if not x.is_floating_point():
        raise ValueError(f"x must hold floating-point images in [0, 1] (got dtype {x.dtype}): e.g. x.float() / 255")


def _integer(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def check_classes(classes) -> tuple[str, ...]:
    """The class names as a tuple; a ValueError unless they are distinct strings, at least one."""
    if isinstance(classes, str) or not isinstance(classes, (tuple, list)):
        raise ValueError(f"classes must be a list or tuple of class names, got {classes!r}")
    classes = tuple(classes)
    if not classes or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"classes must be a non-empty list of class names (strings), got {classes!r}")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ValueError(f"classes repeats {repeated}: class names must be distinct, one per label index")
    return classes


def check_labels(labels: torch.Tensor, nc: int, what: str, empty: int | None = None) -> None:
    """Refuse labels outside ``0..nc-1`` (``empty`` also allowed: a padding value), naming the first bad one."""
    valid = (labels >= 0) & (labels < nc)
    if empty is not None:
        valid |= labels == empty
    if not bool(valid.all()):
        bad = torch.nonzero(~valid)[0].tolist()
        where = ", ".join(map(str, bad))
        raise ValueError(f"{what}[{where}] = {labels[tuple(bad)].item():g} is not a class index: labels must be in "
                         f"0..{nc - 1} for the {nc} classes" + (f" (or {empty} for an empty slot)" if empty is not None
                                                                else "") + "; fix the labels or the class names")


def _masks(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of one shape in centred, scaled, rotated coordinates (unit size ~1)."""
    r2, au, av = u * u + v * v, np.abs(u), np.abs(v)
    box = np.maximum(au, av)
    if kind == "circle":
        return r2 <= 0.9
    if kind == "square":
        return box <= 0.75
    if kind == "triangle":
        return (v <= 0.7) & (au <= (v + 0.9) * 0.55)
    if kind == "ring":
        return (r2 <= 1.0) & (r2 >= 0.36)
    if kind == "plus":
        return ((au <= 0.25) & (av <= 0.95)) | ((av <= 0.25) & (au <= 0.95))
    if kind == "diamond":
        return au + av <= 1.0
    if kind == "hbar":
        return (au <= 1.0) & (av <= 0.3)
    if kind == "vbar":
        return (av <= 1.0) & (au <= 0.3)
    if kind == "cross":
        return ((np.abs(u - v) <= 0.35) | (np.abs(u + v) <= 0.35)) & (box <= 0.85)
    if kind == "frame":
        return (box <= 0.9) & (box >= 0.55)
    if kind == "halfdisk":
        return (r2 <= 1.0) & (v >= 0.0)
    if kind == "tee":
        return ((v >= -0.95) & (v <= -0.5) & (au <= 0.95)) | ((au <= 0.25) & (v >= -0.6) & (v <= 0.95))
    raise ValueError(f"unknown shape {kind!r}; choose from {SHAPES}")


def _resolve(classes, names: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
    if classes is None:
        return default
    if isinstance(classes, str):
        raise ValueError(f"classes must be a count or a list of class names, got the string {classes!r}: "
                         f"write [{classes!r}]")
    if not hasattr(classes, "__iter__"):
        count = whole_number(classes, "classes", 1, " (a count) or a list of names")
        if count > len(names):
            raise ValueError(f"classes must be between 1 and {len(names)} (got {count})")
        return names[:count]
    classes = tuple(classes)
    unknown = [c for c in classes if c not in names]
    if unknown or not classes:
        raise ValueError(f"unknown class names {list(unknown) or classes!r} in classes; choose from {names}")
    check_classes(classes)
    return classes


def _check_gap(gap) -> float:
    ok = isinstance(gap, (int, float, np.integer, np.floating)) and not isinstance(gap, bool)
    if not (ok and 0.0 <= gap <= 1.0):
        raise ValueError(f"gap must be a number in [0, 1] (0 = source domain, 1 = far from it); got {gap!r}")
    return float(gap)


def _check_common(n_per_class, size, gap) -> tuple[int, int, float]:
    return whole_number(n_per_class, "n_per_class", 1), whole_number(size, "size", 8, " pixels"), _check_gap(gap)


def _background(rng: np.random.Generator, n: int, size: int, gap: float) -> np.ndarray:
    """Dark plain backgrounds at gap 0; bright, striped, textured ones as the gap grows."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(0.0, 0.25, (n, 3, 1, 1)) * (1 - gap) + rng.uniform(0.3, 0.7, (n, 3, 1, 1)) * gap
    freq = rng.uniform(3, 8, (n, 1, 1, 1))
    angle = rng.uniform(0, np.pi, (n, 1, 1, 1))
    stripes = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    return base + 0.25 * gap * stripes


def _foreground(rng: np.random.Generator, n: int, gap: float) -> np.ndarray:
    """Warm saturated colours at gap 0, drifting to a cold, darker palette as the gap grows."""
    warm = np.stack([rng.uniform(0.7, 1.0, n), rng.uniform(0.4, 1.0, n), rng.uniform(0.0, 0.4, n)], 1)
    cold = np.stack([rng.uniform(0.0, 0.3, n), rng.uniform(0.1, 0.5, n), rng.uniform(0.5, 0.9, n)], 1)
    return (warm * (1 - gap) + cold * gap)[:, :, None, None]


def shapes(n_per_class: int = 100, classes=None, *, size: int = 32, gap: float = 0.0, seed: int = 0) -> ImageSet:
    """Coloured geometric shapes at random position, scale and small rotation.

    Args:
        n_per_class: images per class (the target-size knob).
        classes: class names from ``SHAPES`` or a count (the first ``classes`` names);
            default ``SOURCE_CLASSES`` (10 shapes, the pretraining task).
        size: image side in pixels.
        gap: domain gap in [0, 1]: background texture and brightness, foreground palette, noise.
        seed: the same seed gives the same images.

    Example:
        >>> shapes(2, ["ring", "tee"]).y.tolist()
        [0, 0, 1, 1]
    """
    names = _resolve(classes, SHAPES, SOURCE_CLASSES)
    n_per_class, size, gap = _check_common(n_per_class, size, gap)
    rng = np.random.default_rng(seed)
    n = n_per_class * len(names)
    labels = np.repeat(np.arange(len(names)), n_per_class)
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    scale = rng.uniform(0.35, 0.6, (n, 1, 1))
    cx, cy = rng.uniform(-0.3, 0.3, (2, n, 1, 1))
    theta = rng.uniform(-0.25, 0.25, (n, 1, 1))
    dx, dy = grid[None, None, :] - cx, grid[None, :, None] - cy
    u = (np.cos(theta) * dx + np.sin(theta) * dy) / scale
    v = (-np.sin(theta) * dx + np.cos(theta) * dy) / scale
    mask = np.zeros((n, size, size), dtype=bool)
    for k, name in enumerate(names):
        rows = labels == k
        mask[rows] = _masks(name, u[rows], v[rows])
    image = np.where(mask[:, None], _foreground(rng, n, gap), _background(rng, n, size, gap))
    image = image + rng.normal(0, 0.02 + 0.15 * gap, image.shape)
    return ImageSet(_to_tensor(image), torch.from_numpy(labels), names)


def digits(n_per_class: int | None = None, *, size: int = 32, channels: int = 3, gap: float = 0.0,
           seed: int = 0) -> ImageSet:
    """Real handwritten digits (scikit-learn's bundled 8x8 ``load_digits``), resized to ``size``.

    Args:
        n_per_class: images per digit (at most 174, the smallest class); default all 1,797 images.
        size: image side in pixels (bilinear resize from 8x8).
        channels: 3 (grey repeated, for models pretrained on colour) or 1.
        gap: domain gap as in :func:`shapes`: textured background and noise.
        seed: picks the subset and the noise.

    Example:
        >>> digits(3, size=16).x.shape
        torch.Size([30, 3, 16, 16])
    """
    per_class, size, gap = _check_common(1 if n_per_class is None else n_per_class, size, gap)
    n_per_class = None if n_per_class is None else per_class
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3 (got {channels!r})")
    channels = int(channels)
    images, labels = _load_digits()
    rng = np.random.default_rng(seed)
    if n_per_class is not None:
        smallest = np.bincount(labels).min()
        if n_per_class > smallest:
            raise ValueError(f"n_per_class must be <= {smallest} for digits (got {n_per_class})")
        keep = np.concatenate([rng.permutation(np.flatnonzero(labels == k))[:n_per_class] for k in range(10)])
        images, labels = images[keep], labels[keep]
    x = F.interpolate(torch.from_numpy(images)[:, None], size=(size, size), mode="bilinear", align_corners=False)
    x = x.numpy()
    if gap > 0:
        background = _background(rng, len(x), size, gap).mean(1, keepdims=True)
        x = np.clip(x + (1 - x) * background * gap + rng.normal(0, 0.15 * gap, x.shape), 0, 1)
    x = np.repeat(x, channels, axis=1)
    return ImageSet(_to_tensor(x), torch.from_numpy(labels.astype(np.int64)), DIGITS)


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32) / 16.0, bunch.target


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.clip(image, 0.0, 1.0).astype(np.float32))


def split(data: ImageSet, val_fraction: float = 0.2, *, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Stratified train/validation split: the same fraction of every class goes to validation.

    Detection scenes (targets ``(N, max_objects, 5)``, several classes per image) are split at
    random instead, the same fraction of scenes to validation.

    Example:
        >>> train, val = split(shapes(10, 2), 0.2)
        >>> len(train), len(val)
        (16, 4)
    """
    if not isinstance(data, ImageSet):
        raise ValueError(f"data must be an ImageSet (e.g. from shapes() or digits()), got {type(data).__name__}")
    ok = isinstance(val_fraction, (float, int, np.floating, np.integer)) and not isinstance(val_fraction, bool)
    if not (ok and 0.0 < val_fraction < 1.0):
        raise ValueError(f"val_fraction must be a number between 0 and 1, e.g. 0.2 (got {val_fraction!r})")
    g = torch.Generator().manual_seed(whole_number(seed, "seed", 0))
    if data.y.ndim > 1:  # detection scenes: no single label to stratify by
        order = torch.randperm(len(data), generator=g)
        n_val = int(round(len(data) * val_fraction))
        _check_parts(len(data) - n_val, n_val, len(data), val_fraction, "scenes")
        return data.subset(order[n_val:]), data.subset(order[:n_val])
    train_idx, val_idx = [], []
    for k in range(data.nc):
        rows = torch.nonzero(data.y == k).flatten()
        rows = rows[torch.randperm(len(rows), generator=g)]
        n_val = int(round(len(rows) * val_fraction))
        val_idx.append(rows[:n_val])
        train_idx.append(rows[n_val:])
    n_val = sum(len(v) for v in val_idx)
    _check_parts(len(data) - n_val, n_val, len(data), val_fraction, "images", _smallest_class(data))
    return data.subset(torch.cat(train_idx)), data.subset(torch.cat(val_idx))


def _smallest_class(data: ImageSet) -> int:
    counts = torch.bincount(data.y, minlength=data.nc)
    return int(counts[counts > 0].min()) if bool((counts > 0).any()) else 0


def _check_parts(n_train: int, n_val: int, n: int, fraction: float, what: str, smallest: int | None = None) -> None:
    """Refuse a split that leaves the training or the validation part empty, with fractions that would work."""
    if n_train and n_val:
        return
    per = smallest if smallest is not None else n  # rounding happens per class when stratified
    if per < 2:
        fix = f"use more {what}: a split needs at least 2 per class" if smallest is not None \
            else f"use at least 2 {what}"
    else:
        lo, hi = math.ceil(1000 / per) / 1000, math.floor(1000 - 1000 / per) / 1000  # round(per * f) in 1..per-1
        fix = f"choose val_fraction between {lo:g} and {hi:g}"
        if smallest is not None:
            fix += f" (the smallest class has {per} {what})"
    empty = "validation" if not n_val else "training"
    raise ValueError(f"split(val_fraction={fraction}) of {n} {what} would leave the {empty} part empty: {fix}")
