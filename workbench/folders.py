"""Data sets from folders on disk: YOLO detection folders and class folders, read and written.

A YOLO folder is Ultralytics' detection format: ``data.yaml`` (``path``, ``train: images/train``,
``val: images/val``, ``names``), images under ``images/<split>/`` and one text file per image
under ``labels/<split>/`` with a ``class cx cy w h`` line per object, normalised to 0..1 (an
empty file: no objects). A class folder is ``<split>/<class>/<image>``, classes sorted by
folder name as torchvision's ImageFolder and Ultralytics number them.

Loading reads only images (decoded by Pillow, EXIF rotation applied, converted to RGB), text
files and YAML (``yaml.safe_load``: no tag can run code), and writes nothing. Detection images
are letterboxed to ``size`` as Ultralytics' data set does (aspect kept, grey 114 padding, boxes
scaled and shifted); class images are resized to ``size`` x ``size``. Every problem is an error that
names the file and the fix. An image without a label file is an error by default (Ultralytics
takes it as background silently); ``missing_labels="background"`` accepts it as an image with
no objects. The writers (:mod:`workbench.folder_writers`, re-exported here) make both kinds of
folder from the workbench's own data, so a lesson needs no download.

Example:
    >>> import tempfile
    >>> from workbench import data, scenes
    >>> train, val = data.split(scenes.shape_scenes(8, classes=2, seed=0), 0.25)
    >>> root = Path(tempfile.mkdtemp())
    >>> write_yolo_folder({"train": train, "val": val}, root / "shapes").name
    'data.yaml'
    >>> loaded = load_yolo_folder(root / "shapes", "val", size=96)
    >>> loaded.x.shape, loaded.classes
    (torch.Size([2, 3, 96, 96]), ('circle', 'square'))
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, ImageOps, UnidentifiedImageError

from .data import ImageSet, check_classes
from .folder_writers import write_class_folder, write_yolo_folder
from .numbers import whole_number
from .scenes import EMPTY, DetectionSet

__all__ = ["BOX_TOLERANCE", "IMAGE_SUFFIXES", "PAD_VALUE", "load_class_folder", "load_yolo_folder",
           "write_class_folder", "write_yolo_folder"]

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
PAD_VALUE = 114  # the grey Ultralytics pads letterboxed images with
BOX_TOLERANCE = 0.01  # how far (as a fraction of the side) a box may stick out of its image before it is an error
MISSING_LABELS = ("error", "background")


def load_yolo_folder(path, split: str = "train", *, size: int = 64, missing_labels: str = "error") -> DetectionSet:
    """One split of a YOLO detection folder as a :class:`~workbench.scenes.DetectionSet`, letterboxed to ``size``.

    Args:
        path: the folder holding ``data.yaml``, or the YAML file itself. A relative ``path:``
            inside it is taken from the YAML file's folder.
        split: the YAML key naming the images, ``"train"``, ``"val"`` or ``"test"``.
        size: side of the square images, a multiple of 32 (the detector's largest stride).
        missing_labels: ``"error"`` (default) refuses an image without a label file;
            ``"background"`` takes it as an image with no objects, as Ultralytics does.

    The images are held in memory as float32: ``N x 3 x size x size x 4`` bytes (1,000 images at
    640 take 4.9 GB; at 64, 49 MB).

    Example:
        >>> import tempfile
        >>> from workbench import scenes
        >>> folder = write_yolo_folder(scenes.shape_scenes(3, classes=2), Path(tempfile.mkdtemp()) / "d")
        >>> load_yolo_folder(folder, size=64).objects(0).shape[1]
        5
    """
    size = _side(size, multiple=32)
    if missing_labels not in MISSING_LABELS:
        raise ValueError(f"missing_labels must be one of {MISSING_LABELS}, got {missing_labels!r}")
    yaml_file = _yaml_file(path)
    spec = _read_yaml(yaml_file)
    names = _yaml_names(spec, yaml_file)
    image_dir = _image_dir(spec, split, yaml_file)
    label_dir = _label_dir(image_dir, yaml_file)
    xs, targets = [], []
    for image_file in _image_files(image_dir, f"the {split!r} images of {yaml_file}",
                                   f"add images, or remove {split!r} from {yaml_file.name}"):
        image = _open_image(image_file)
        label_file = label_dir / image_file.relative_to(image_dir).with_suffix(".txt")
        x, boxes = _letterbox(image, _read_labels(label_file, image_file, names, missing_labels), size)
        xs.append(x)
        targets.append(boxes)
    return DetectionSet(torch.stack(xs), _padded(targets), names)


def load_class_folder(path, split: str = "train", *, size: int = 32) -> ImageSet:
    """One split of a class folder (``<split>/<class>/<image>``) as an :class:`~workbench.data.ImageSet`.

    Classes are the split's sub-folders sorted by name; every other split beside it must have the
    same ones, so a label means the same class in ``train`` and ``val``. Images are resized to
    ``size`` x ``size`` (aspect not kept); files that are not images are skipped.

    Example:
        >>> import tempfile
        >>> from workbench import data
        >>> folder = write_class_folder(data.shapes(2, classes=2, size=16), Path(tempfile.mkdtemp()) / "c")
        >>> loaded = load_class_folder(folder, size=16)
        >>> loaded.classes, loaded.y.tolist()
        (('circle', 'square'), [0, 0, 1, 1])
    """
    size = _side(size, multiple=1)
    root = _existing_folder(path, "path")
    split_dir = _split_folder(root, split)
    classes = _class_names(split_dir)
    _check_sibling_splits(root, split, classes)
    xs, ys = [], []
    for k, name in enumerate(classes):
        for image_file in _image_files(split_dir / name, f"class {name!r}",
                                       "add its images: every split needs an image of every class"):
            image = _open_image(image_file).resize((size, size), Image.BILINEAR)
            xs.append(_to_tensor(image))
            ys.append(k)
    return ImageSet(torch.stack(xs), torch.tensor(ys), classes)


def _side(size, multiple: int) -> int:
    side = whole_number(size, "size", 32 if multiple == 32 else 8, " pixels")
    if side % multiple:
        raise ValueError(f"size must be a multiple of {multiple} pixels, e.g. 64 or 640 (the detector's largest "
                         f"stride is {multiple}); got {size!r}")
    return side


def _existing_folder(path, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{what} must be a folder name (str or Path), got {type(path).__name__}")
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {folder} is not a folder: give the folder that holds the data set")
    return folder


def _yaml_file(path) -> Path:
    if isinstance(path, (str, os.PathLike)) and Path(path).suffix in (".yaml", ".yml"):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} does not exist: give the data set's data.yaml or its folder")
        return Path(path)
    folder = _existing_folder(path, "path")
    found = [folder / name for name in ("data.yaml", "data.yml") if (folder / name).is_file()]
    if not found:
        raise FileNotFoundError(f"{folder} has no data.yaml: a YOLO folder needs one naming path, train, val and "
                                f"names (write_yolo_folder writes it); or pass the YAML file itself")
    return found[0]


def _read_yaml(yaml_file: Path) -> dict:
    """The YAML as plain data (``safe_load``: a ``!!python/...`` tag is refused, nothing runs)."""
    try:
        spec = yaml.safe_load(yaml_file.read_text(encoding="utf-8-sig"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{yaml_file} is not plain YAML ({type(err).__name__}: {err}); it is read with "
                         f"yaml.safe_load, which refuses tags such as !!python/object: write plain keys and "
                         f"values (path, train, val, names)") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{yaml_file} must hold a mapping with path, train, val and names; got "
                         f"{type(spec).__name__}")
    return spec


def _yaml_names(spec: dict, yaml_file: Path) -> tuple[str, ...]:
    """``names`` as a list or an ``{index: name}`` dict numbered 0..n-1 (or only ``nc``: class_0, ...)."""
    names, nc = spec.get("names"), spec.get("nc")
    if names is None and isinstance(nc, int) and not isinstance(nc, bool) and nc > 0:
        names = [f"class_{i}" for i in range(nc)]
    if isinstance(names, dict):  # keys 0..n-1, written as numbers or digits (Ultralytics takes int(key))
        names = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in names.items()}
        keys = sorted(names, key=str)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys) or \
                sorted(keys) != list(range(len(keys))):
            raise ValueError(f"{yaml_file}: names as a dict must be numbered 0..{len(names) - 1} "
                             f"(e.g. {{0: cat, 1: dog}}); got the keys {keys}")
        names = [names[k] for k in range(len(names))]
    if not isinstance(names, list) or not names:
        raise ValueError(f"{yaml_file} needs names: a list (names: [cat, dog]) or a dict ({{0: cat, 1: dog}}); "
                         f"got {names!r}")
    if nc is not None and nc != len(names):
        raise ValueError(f"{yaml_file}: nc is {nc} but names has {len(names)} entries; make them agree or drop nc")
    try:
        return check_classes([str(n) for n in names])
    except ValueError as err:
        raise ValueError(f"{yaml_file}: names: {err}") from None


def _image_dir(spec: dict, split: str, yaml_file: Path) -> Path:
    if isinstance(split, str) and isinstance(spec.get(split), list):
        raise ValueError(f"{yaml_file}: {split} lists several folders, which is not supported: point {split} at "
                         f"one folder of images (e.g. {split}: images/{split})")
    if not isinstance(split, str) or not isinstance(spec.get(split), str):
        keys = [k for k in ("train", "val", "test") if isinstance(spec.get(k), str)]
        raise ValueError(f"{yaml_file} has no folder for split={split!r} (it names {keys}): pass one of those, or "
                         f"add '{split}: images/{split}' to it")
    if not isinstance(spec.get("path") or ".", str):
        raise ValueError(f"{yaml_file}: path must be a folder name, got {spec['path']!r}")
    root = Path(spec.get("path") or ".")
    root = root if root.is_absolute() else yaml_file.parent / root
    image_dir = root / spec[split]
    if not image_dir.is_dir():
        raise FileNotFoundError(f"the {split!r} images folder {image_dir} (from {yaml_file}) does not exist: create "
                                f"it, or fix 'path:' and '{split}:' in {yaml_file.name} (a list of images in a .txt "
                                f"file is not supported; point {split} at a folder)")
    return image_dir


def _label_dir(image_dir: Path, yaml_file: Path) -> Path:
    """Ultralytics' rule: the labels folder is the images folder with its last ``images`` part made ``labels``."""
    parts = list(image_dir.parts)
    if "images" not in parts:
        raise ValueError(f"{image_dir} (from {yaml_file}) has no 'images' part, so its labels folder cannot be "
                         f"found: keep images in images/<split> and labels in labels/<split>")
    last = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:last], "labels", *parts[last + 1:])


def _image_files(folder: Path, what: str, fix: str) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{folder} holds no images ({what}; read are {', '.join(IMAGE_SUFFIXES)}): {fix}")
    return files


def _open_image(image_file: Path) -> Image.Image:
    """The image decoded by Pillow, rotated as its EXIF says, in RGB."""
    try:
        with Image.open(image_file) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError,
            ImportError) as err:  # ImportError: a fallback patched into Image.open (Ultralytics' HEIF) is missing
        raise ValueError(f"{image_file} is not a readable image ({type(err).__name__}: {err}): re-export it, or "
                         f"remove it from the data set") from None


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def _read_labels(label_file: Path, image_file: Path, names, missing: str) -> np.ndarray:
    """Rows ``[class, cx, cy, w, h]`` of one label file, each checked; ``(0, 5)`` for an empty file.

    Ultralytics checks the four numbers with the same 1% tolerance and clips a box whose corners
    stick out; here a corner beyond the tolerance is an error, since it is most often a labelling
    mistake. Its other habits are kept: a byte-order mark is skipped; repeated rows stay (Ultralytics
    drops them); polygon rows are refused (Ultralytics turns them into boxes).
    """
    if not label_file.is_file():
        if missing == "background":
            return np.zeros((0, 5), dtype=np.float64)
        raise FileNotFoundError(f"{image_file} has no label file {label_file}: write one (an empty file means no "
                                f"objects), or pass missing_labels='background' to take such images as background")
    rows = []
    for number, line in enumerate(label_file.read_text(encoding="utf-8-sig").splitlines(), 1):
        if line.strip():
            rows.append(_label_row(line, f"{label_file}, line {number}", names))
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def _label_row(line: str, where: str, names) -> list[float]:
    values = line.split()
    try:
        row = [float(v) for v in values]
    except ValueError:
        row = []
    if len(values) != 5 or len(row) != 5 or not all(map(math.isfinite, row)) or row[0] != int(row[0]):
        raise ValueError(f"{where}: {line.strip()!r} is not 'class cx cy w h' (a whole class index and four finite "
                         f"numbers; polygons are not supported): fix or remove the line")
    if not 0 <= row[0] < len(names):
        raise ValueError(f"{where}: class {int(row[0])} is outside names (0..{len(names) - 1}: {list(names)}): add "
                         f"the class to names in data.yaml, or fix the label")
    cx, cy, w, h = row[1:]
    corners = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    if w <= 0 or h <= 0:
        raise ValueError(f"{where}: the box cx={cx:g} cy={cy:g} w={w:g} h={h:g} has no area: w and h must be > 0; "
                         f"fix or remove the line")
    if min(corners) < -BOX_TOLERANCE or max(corners) > 1 + BOX_TOLERANCE:
        raise ValueError(f"{where}: the box cx={cx:g} cy={cy:g} w={w:g} h={h:g} lies outside the image: values "
                         f"are fractions of the image's width and height, so the box must lie within 0..1 (within "
                         f"{BOX_TOLERANCE}); divide pixel values by the image size, or fix the box")
    return row


def _letterbox(image: Image.Image, labels: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The image scaled to fit ``size`` (aspect kept), centred on grey; boxes ``[class, x1, y1, x2, y2]`` in pixels.

    As Ultralytics' ``YOLODataset`` without augmentation: ``load_image`` brings the long side to
    ``size`` (the short side rounded up), ``LetterBox`` pads both sides, and the normalised boxes
    are scaled by the resized width and height, then shifted by the padding.
    """
    w0, h0 = image.size
    ratio = size / max(w0, h0)
    w, h = (min(math.ceil(w0 * ratio), size), min(math.ceil(h0 * ratio), size)) if ratio != 1 else (w0, h0)
    left, top = round((size - w) / 2 - 0.1), round((size - h) / 2 - 0.1)
    canvas = Image.new("RGB", (size, size), (PAD_VALUE,) * 3)
    canvas.paste(image if (w, h) == (w0, h0) else image.resize((w, h), Image.BILINEAR), (left, top))
    cls, cx, cy, bw, bh = labels.T
    x1, x2 = np.clip(cx - bw / 2, 0, 1) * w + left, np.clip(cx + bw / 2, 0, 1) * w + left
    y1, y2 = np.clip(cy - bh / 2, 0, 1) * h + top, np.clip(cy + bh / 2, 0, 1) * h + top
    boxes = np.stack([cls, x1, y1, x2, y2], 1).astype(np.float32)
    return _to_tensor(canvas), torch.from_numpy(boxes).reshape(-1, 5)


def _padded(targets: list[torch.Tensor]) -> torch.Tensor:
    """Per-image ``(n, 5)`` boxes as one ``(N, max(n, 1), 5)`` tensor, empty slots of class ``EMPTY``."""
    y = torch.zeros(len(targets), max([len(t) for t in targets] + [1]), 5)
    y[..., 0] = EMPTY
    for i, t in enumerate(targets):
        y[i, : len(t)] = t
    return y


def _split_folder(root: Path, split) -> Path:
    if not isinstance(split, str) or not (root / split).is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(f"{root} has no {split!r} folder (it has {present}): pass one of those as split, "
                                f"or create {root / str(split)}/<class>/ with images")
    return root / split


def _class_names(split_dir: Path) -> tuple[str, ...]:
    classes = tuple(sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise ValueError(f"{split_dir} has no class folders: put each class's images in {split_dir}/<class>/")
    return classes


def _check_sibling_splits(root: Path, split: str, classes: tuple[str, ...]) -> None:
    """Refuse splits whose class folders differ: label k would name different classes in each."""
    for other in ("train", "val", "test"):
        if other != split and (root / other).is_dir():
            theirs = _class_names(root / other)
            if theirs != classes:
                raise ValueError(f"{root / split} has classes {list(classes)} but {root / other} has "
                                 f"{list(theirs)}: give every split the same class folders (an empty class in a "
                                 f"split is not allowed), so each label means one class")
