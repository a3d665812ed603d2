"""Lesson 7, your own YOLO: an Ultralytics checkpoint opened safely, its ledger, a YOLO folder, fine-tuning, export.

* :func:`checkpoint_path`: the user's own ``.pt`` when given, else the shipped Ultralytics-format
  ``shapes_yolov8n.pt`` (ten shapes, ``yolov8n`` shapes);
* :func:`write_hostile_checkpoint`: a file like a checkpoint with a ``__reduce__`` payload hidden
  in its ``train_args``, to show the reader refusing it with the global named and nothing run;
* :func:`class_branch` and :func:`ultralytics_84_count`: what the entries that mismatch between a
  detector at 80 classes and one at 3 are, and the count Ultralytics 8.4's own loader prints;
* :func:`own_yolo`: the experiment: a YOLO folder written from shape scenes and loaded back, a
  3-class detector fine-tuned from the checkpoint (class rows by name) and from scratch on it
  (:func:`workbench.runs.run_all`), scored by mAP@0.5, the transferred one exported under
  Ultralytics' names.

Example:
    >>> from workbench import transfer
    >>> from workbench.manifests import manifest_model
    >>> report = transfer(manifest_model("yolo11n"), manifest_model("yolo11n", nc=3), dry_run=True)
    >>> {part: len(rows) for part, rows in class_branch(report).items()}, ultralytics_84_count(report)
    ({'last conv': 6, 'hidden': 45, 'elsewhere': 0}, 493)
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import pretrained_path, read_metadata
from ..export import export_ultralytics
from ..folders import load_yolo_folder, write_yolo_folder
from ..models import build_model
from ..scenes import DetectionSet, shape_scenes
from ..table import Table, TextResult
from ..training import History
from ..transfer import TransferReport
from ..yolo_checkpoints import MODEL_KEYS, InertRecord, unpickle_inert
from .detector_transfer import transferred_and_scratch
from .recipe import Recipe

SHIPPED = "shapes_yolov8n"  # the shipped Ultralytics-format checkpoint (workbench/weights/shapes_yolov8n.pt)
TARGET_NAMES = ("circle", "halfdisk", "tee")  # one class the checkpoint knows, two it never saw
# AdamW at 0.001, batch 8, as lesson 2's detector
OWN_YOLO_RECIPE = Recipe(epochs=4, batch_size=8, optimizer="adamw", lr=0.001)
_LAST_CLASS_CONV = re.compile(r"\.cv3\.\d+\.2\.")  # Detect's class branch: cv3.{level}.{0,1 hidden; 2 last}


@dataclass(frozen=True)
class FolderTarget:
    """The target data set: ``n_scenes`` training and ``val_scenes`` validation scenes of ``classes``, ``size`` px.

    :meth:`write` writes them as a YOLO folder (``data.yaml``, ``images/``, ``labels/``), which
    :meth:`load` reads back as the detector's training data.
    """

    classes: Sequence[str] = TARGET_NAMES
    n_scenes: int = 100
    val_scenes: int = 100
    size: int = 64

    def write(self, folder: str | Path, seed: int = 0) -> Path:
        """Write the scenes (drawn with ``seed``) as a YOLO folder ``folder``; returns its ``data.yaml``."""
        train = shape_scenes(self.n_scenes, list(self.classes), size=self.size, seed=seed + 1)
        val = shape_scenes(self.val_scenes, list(self.classes), size=self.size, seed=seed + 10_001)
        return write_yolo_folder({"train": train, "val": val}, folder)

    def load(self, data_yaml: str | Path) -> tuple[DetectionSet, DetectionSet]:
        """``(train, val)`` read back from a YOLO folder, letterboxed to ``size``."""
        return tuple(load_yolo_folder(data_yaml, split, size=self.size) for split in ("train", "val"))


def checkpoint_path(my_checkpoint: str | Path | None = None) -> Path:
    """``my_checkpoint`` when given (it must exist), else the shipped ``shapes_yolov8n.pt``.

    Example:
        >>> checkpoint_path().name
        'shapes_yolov8n.pt'
    """
    if my_checkpoint is None:
        return pretrained_path(SHIPPED)
    if not isinstance(my_checkpoint, (str, os.PathLike)) or not Path(my_checkpoint).is_file():
        raise FileNotFoundError(f"MY_CHECKPOINT={my_checkpoint!r} is not a file: give the path of your .pt (e.g. "
                                f"'runs/detect/train/weights/best.pt'), or None for the shipped {SHIPPED}.pt")
    return Path(my_checkpoint)


class _Payload:
    """Unpickling this calls ``function(*args)``: a pickle's way of running code while it loads."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def write_hostile_checkpoint(folder: str | Path) -> tuple[Path, Path]:
    """Write ``evil.pt``: a small model and ``train_args`` whose ``project`` would create ``pwned.txt`` when unpickled.

    Returns ``(checkpoint, marker)``: the payload calls ``open(marker, "w")``, so the marker file
    exists after a load only if the file's code ran. Nothing needs Ultralytics.

    Example:
        >>> path, marker = write_hostile_checkpoint(tempfile.mkdtemp())
        >>> path.name, marker.exists()
        ('evil.pt', False)
    """
    folder = Path(folder)
    path, marker = folder / "evil.pt", folder / "pwned.txt"
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).half()
    torch.save({"epoch": -1, "model": model, "train_args": {"epochs": 3, "project": _Payload(open, str(marker), "w")},
                "version": "8.4.190"}, path)
    return path, marker


def inert_model(path: str | Path) -> tuple[InertRecord, str]:
    """The checkpoint's model as the reader keeps it (an inert record, not a module) and the key it sits under.

    Example:
        >>> record, key = inert_model(checkpoint_path())
        >>> record, key, isinstance(record, nn.Module)
        (<inert ultralytics.nn.tasks.DetectionModel>, 'model', False)
    """
    ckpt = unpickle_inert(checkpoint_path(path))
    for key in MODEL_KEYS:  # the order Ultralytics reads them in: ema first
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), InertRecord):
            return ckpt[key], key
    raise ValueError(f"{path} holds no model under {MODEL_KEYS}")


def class_branch(report: TransferReport) -> dict[str, list]:
    """The rows whose shapes differ, by where they sit: the class branch's ``last conv`` (its width is the
    class count; ``partial`` when class rows were copied by name), its ``hidden`` convs (their width is
    ``max(ch0, min(nc, 100))``), or ``elsewhere``."""
    rows = report.where("shape_mismatch") + report.where("partial")
    last = [r for r in rows if _LAST_CLASS_CONV.search(r.name)]
    hidden = [r for r in rows if ".cv3." in r.name and r not in last]
    return {"last conv": last, "hidden": hidden, "elsewhere": [r for r in rows if ".cv3." not in r.name]}


def ultralytics_84_count(report: TransferReport) -> int:
    """The X of "Transferred X/Y items" that Ultralytics 8.4's ``load`` prints for the same pair of detectors.

    It first rebuilds the target's class branch at the source's width, so the hidden convs match
    and only the last conv of each level stays fresh: name-and-shape matches plus the hidden rows.
    """
    return report.n_transferred + len(class_branch(report)["hidden"])


@dataclass(frozen=True, repr=False)
class OwnYolo(TextResult):
    """The experiment's numbers: the ledger, mAP@0.5 per start, where the folder and the export went."""

    checkpoint: Path
    source_names: tuple[str, ...]
    target: FolderTarget
    epochs: int
    report: TransferReport
    mAP50: dict[str, float]
    data_yaml: Path
    exported: Path
    histories: dict[str, History] = field(default_factory=dict)
    models: dict[str, nn.Module] = field(default_factory=dict)

    def __str__(self) -> str:
        rows = [{"start": name, "val mAP50": f"{score:.3f}"} for name, score in self.mAP50.items()]
        steps = next(iter(self.histories.values())).step if self.histories else 0
        return "\n".join([f"{self.report.headline} (from {self.checkpoint.name} into {', '.join(self.target.classes)})",
                          str(Table(("start", "val mAP50"), rows, indent=2,
                                    title=f"fine-tuned on {self.target.n_scenes} scenes of {self.data_yaml.parent.name}"
                                          f" for {self.epochs} epochs ({steps} steps):")),
                          f"exported: {self.exported.name}"])


def own_yolo(target: FolderTarget = FolderTarget(), recipe: Recipe = OWN_YOLO_RECIPE, *, seed: int = 0,
             checkpoint: str | Path | None = None, folder: str | Path | None = None,
             data_yaml: str | Path | None = None) -> OwnYolo:
    """Fine-tune a ``len(target.classes)``-class detector on a YOLO folder, from a checkpoint and from scratch.

    The scenes are written as a YOLO folder (``folder``, default a new temporary folder) and
    loaded back (or ``data_yaml``, a folder :meth:`FolderTarget.write` wrote, is loaded).
    ``pretrained`` is the workbench detector of the checkpoint's scale (``build_model(scale,
    "detect", nc)``) with the checkpoint's weights (:func:`workbench.transfer`, class rows copied
    by name); ``scratch`` the same model fresh. Both
    train with ``recipe`` on the same data and ``seed`` (:func:`workbench.runs.run_all`) and are
    scored by mAP@0.5 on the folder's ``val`` split; the pretrained one is exported under
    Ultralytics' names to ``<folder>/finetuned.safetensors``.

    Example:
        >>> result = own_yolo(FolderTarget(n_scenes=4, val_scenes=2), OWN_YOLO_RECIPE.replace(epochs=1))
        >>> sorted(result.mAP50), result.report.n_transferred, result.exported.name
        (['pretrained', 'scratch'], 349, 'finetuned.safetensors')
    """
    path = checkpoint_path(checkpoint)
    meta = read_metadata(path)
    source_names = tuple(meta.get("names") or ())
    scale = (meta.get("yaml") or {}).get("scale") or "n"  # a user's yolov8s.pt: the workbench's s detector
    root = Path(tempfile.mkdtemp(prefix="own_yolo_")) if folder is None else Path(folder)
    data_yaml = target.write(root / "shapes3", seed=seed) if data_yaml is None else Path(data_yaml)
    train, val = target.load(data_yaml)
    names = (list(source_names), list(train.classes)) if source_names else None
    build = partial(build_model, scale, "detect", nc=len(train.classes))
    report, scores, histories, models = transferred_and_scratch(path, build, train, val, recipe, names=names,
                                                                seed=seed)
    exported = export_ultralytics(models["pretrained"], root / "finetuned.safetensors", names=list(train.classes),
                                  overwrite=True)
    return OwnYolo(path, source_names, target, recipe.epochs, report, scores, data_yaml, exported,
                   histories, models)
