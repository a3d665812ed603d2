"""Writing data sets as folders: YOLO detection folders and class folders, in the formats ``workbench.folders`` reads.

A lesson or a test makes a real folder from the workbench's own data without a download. Each
writer fills a temporary folder beside the target and renames it into place, so a failure
leaves nothing behind, and it never writes into a folder that holds anything.

Example:
    >>> import tempfile
    >>> from workbench import data
    >>> folder = write_class_folder(data.shapes(1, classes=2, size=8), Path(tempfile.mkdtemp()) / "c")
    >>> sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    ['train/circle/000000.png', 'train/square/000001.png']
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import yaml
from PIL import Image

from .data import ImageSet, check_classes
from .scenes import DetectionSet

__all__ = ["write_class_folder", "write_yolo_folder"]


def write_yolo_folder(data, path, names=None) -> Path:
    """Write detection data as a YOLO folder (PNG images, label files, ``data.yaml``); returns the YAML's path.

    Args:
        data: a :class:`~workbench.scenes.DetectionSet` (written as ``train``) or a mapping of splits,
            e.g. ``{"train": train, "val": val}`` (Ultralytics' trainer needs both).
        path: a new (or empty) folder; its parent must exist. Written in a temporary folder beside
            it first, so a failure leaves nothing behind.
        names: class names to write (default: the data's ``classes``).

    Example:
        >>> import tempfile
        >>> from workbench import scenes
        >>> scene = scenes.shape_scenes(1, classes=2, objects=(1, 1), seed=0)
        >>> yaml_file = write_yolo_folder(scene, Path(tempfile.mkdtemp()) / "d", names=["ball", "box"])
        >>> scene.objects(0).tolist()  # class, x1, y1, x2, y2 in pixels of the 64 x 64 image
        [[0.0, 11.0, 2.0, 34.0, 25.0]]
        >>> print(yaml_file.with_name("labels").joinpath("train", "000000.txt").read_text(), end="")
        0 0.351562 0.210938 0.359375 0.359375
        >>> yaml.safe_load(yaml_file.read_text())["names"]
        {0: 'ball', 1: 'box'}
    """
    sets = _sets(data, DetectionSet, "a DetectionSet (e.g. scenes.shape_scenes)")
    names = _names_for(sets, names)
    final = _new_folder(path)

    def fill(folder: Path) -> None:
        for split, ds in sets.items():
            for dirname in ("images", "labels"):
                (folder / dirname / split).mkdir(parents=True)
            for i in range(len(ds)):
                _save_png(ds.x[i], folder / "images" / split / f"{i:06d}.png")
                (folder / "labels" / split / f"{i:06d}.txt").write_text(_label_text(ds.objects(i), ds.x.shape[-2:]))
        spec = {"path": str(final.resolve()), **{s: f"images/{s}" for s in sets}, "names": dict(enumerate(names))}
        (folder / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))

    _write_folder(final, fill)
    return final / "data.yaml"


def write_class_folder(data, path, names=None) -> Path:
    """Write classification data as a class folder (``<split>/<class>/<n>.png``); returns the folder.

    ``data`` is an :class:`~workbench.data.ImageSet` (written as ``train``) or a mapping of splits;
    every split needs at least one image of every class (``data.split`` keeps each class in both).
    ``names`` (default the data's ``classes``) become the folder names. Readers of the format
    (torchvision's ImageFolder, Ultralytics, :func:`~workbench.folders.load_class_folder`) number
    the classes by sorted folder name, so classes not in sorted order come back renumbered.

    Example:
        >>> import tempfile
        >>> from workbench import data
        >>> train, val = data.split(data.shapes(2, classes=2, size=8), 0.5)
        >>> folder = write_class_folder({"train": train, "val": val}, Path(tempfile.mkdtemp()) / "c")
        >>> sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*"))
        ['train/circle', 'train/square', 'val/circle', 'val/square']
    """
    sets = _sets(data, ImageSet, "an ImageSet (e.g. data.shapes)")
    names = _names_for(sets, names)
    for name in names:
        if name in ("", ".", "..") or name.startswith(".") or any(c in name for c in "/\\\0"):
            raise ValueError(f"names: {name!r} cannot be a folder name: rename the class (no '/', '\\', leading '.')")
    for split, ds in sets.items():
        counts = torch.bincount(ds.y, minlength=len(names))
        if bool((counts == 0).any()):
            raise ValueError(f"data[{split!r}] has no images of class {names[int(counts.argmin())]!r}: every split "
                             f"needs every class (an empty class folder cannot be read back); use data.split")
    final = _new_folder(path)

    def fill(folder: Path) -> None:
        for split, ds in sets.items():
            for name in names:
                (folder / split / name).mkdir(parents=True)
            for i in range(len(ds)):
                _save_png(ds.x[i], folder / split / names[int(ds.y[i])] / f"{i:06d}.png")

    _write_folder(final, fill)
    return final


def _sets(data, kind: type, example: str) -> dict:
    sets = dict(data) if isinstance(data, Mapping) else {"train": data}
    if not sets or not all(isinstance(ds, kind) and not (kind is ImageSet and isinstance(ds, DetectionSet))
                            for ds in sets.values()):
        raise ValueError(f"data must be {example} or a mapping of splits such as {{'train': ..., 'val': ...}}; "
                         f"got {type(data).__name__}")
    bad = [s for s in sets if s not in ("train", "val", "test")]
    if bad or "train" not in sets:
        raise ValueError(f"data's splits must include 'train' and be among 'train', 'val', 'test'; got {list(sets)}")
    return sets


def _names_for(sets: dict, names) -> tuple[str, ...]:
    classes = {ds.classes for ds in sets.values()}
    if len(classes) > 1:
        raise ValueError(f"data's splits have different classes {sorted(classes)}: label k must mean one class in "
                         f"every split; build them from one data set (data.split)")
    nc = len(classes.pop())
    names = next(iter(sets.values())).classes if names is None else check_classes(names)
    if len(names) != nc:
        raise ValueError(f"names has {len(names)} entries but the data has {nc} classes: give one name per class")
    return names


def _new_folder(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a folder name (str or Path), got {type(path).__name__}")
    folder = Path(path)
    if folder.exists() and not (folder.is_dir() and not any(folder.iterdir())):
        raise FileExistsError(f"path {folder} already exists and is not an empty folder: nothing was written; "
                              f"choose a new folder name (or remove that one yourself)")
    if not folder.parent.is_dir():
        raise FileNotFoundError(f"path {folder}: the folder {folder.parent} does not exist; create it first")
    return folder


def _write_folder(final: Path, fill: Callable[[Path], None]) -> None:
    """``fill`` a temporary folder beside ``final``, then rename it into place; on failure remove it."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        fill(tmp)
        if final.exists():
            final.rmdir()  # checked empty before
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save_png(x: torch.Tensor, file: Path) -> None:
    pixels = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(file, format="PNG")


def _label_text(objects: torch.Tensor, hw) -> str:
    """``class cx cy w h`` lines, normalised by the image's width and height (pixel boxes, ``x2`` exclusive)."""
    h, w = int(hw[0]), int(hw[1])
    lines = []
    for cls, x1, y1, x2, y2 in objects.tolist():
        lines.append(f"{int(cls)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} "
                     f"{(y2 - y1) / h:.6f}")
    return "".join(line + "\n" for line in lines)
