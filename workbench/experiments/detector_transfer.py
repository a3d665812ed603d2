"""Lesson 2 on a detector: the ledger's one re-initialised branch, and what the transfer buys in training.

* :func:`branch_counts`: the statuses of one numbered layer's entries by sub-module: in a
  ``Detect`` head only the class branch's last conv is re-initialised when the class count changes;
* :func:`detector_runs`: the transferred detector and one from scratch fine-tuned on the same
  scenes (through :func:`workbench.runs.run_all`), scored by mAP@0.5.

Example:
    >>> from workbench import build_model
    >>> report = transfer(build_model("n", "detect", nc=10), build_model("n", "detect", nc=3), dry_run=True)
    >>> sorted(branch_counts(report, 22))
    ['cv2', 'cv3', 'dfl']
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from torch import nn

from ..checkpoints import pretrained
from ..detection import detect_head
from ..metrics import evaluate
from ..models import build_model
from ..runs import Run, run_all
from ..scenes import shape_scenes
from ..table import Table, TextResult
from ..training import Batches
from ..transfer import TransferReport, transfer
from .recipe import Recipe

DETECT_TARGET = ("circle", "halfdisk", "tee")  # the detector's target: one source class, two new ones
# AdamW, batch 8, as the source detector, at lr 0.001, half the source's 0.002: at 0.002 fine-tuning is
# unstable on some seeds and thread counts
DETECTOR_RECIPE = Recipe(epochs=4, batch_size=8, optimizer="adamw", lr=0.001)


def branch_counts(report: TransferReport, layer: int) -> dict[str, Counter]:
    """The statuses of one numbered layer's entries, grouped by its direct sub-module.

    For a workbench ``Detect`` head, ``cv2`` is the box branch, ``cv3`` the class branch and ``dfl``
    (``reg_max > 1`` only) the fixed bin values.

    Example:
        >>> report = transfer(build_model("n", "detect", nc=10), build_model("n", "detect", nc=3), dry_run=True)
        >>> {part: dict(c) for part, c in branch_counts(report, 22).items()}
        {'cv2': {'transferred': 42}, 'cv3': {'transferred': 36, 'shape_mismatch': 6}, 'dfl': {'transferred': 1}}
    """
    prefixes = {index: prefix for index, prefix, _, _ in report.layers}
    if layer not in prefixes:
        raise ValueError(f"layer {layer} is not in the report; its layers are {sorted(prefixes)}")
    groups: dict[str, Counter] = {}
    for row in report.rows:
        if row.status != "unused" and row.layer == layer:
            part = row.name.removeprefix(prefixes[layer] + ".").split(".")[0]
            groups.setdefault(part, Counter())[row.status] += 1
    return groups


@dataclass(frozen=True, repr=False)
class DetectorRuns(TextResult):
    """A 3-class detector fine-tuned on a few scenes, from transferred weights and from scratch: mAP@0.5."""

    target_names: tuple[str, ...]
    n_scenes: int
    epochs: int
    report: TransferReport
    mAP50: dict[str, float]
    steps: int = 0  # optimiser steps per run

    def __str__(self) -> str:
        rows = [{"start": name, "val mAP50": f"{score:.3f}"} for name, score in self.mAP50.items()]
        return "\n".join([f"{self.report.headline} ({', '.join(self.target_names)})",
                          str(Table(("start", "val mAP50"), rows, indent=2,
                                    title=f"fine-tuned on {self.n_scenes} scenes for {self.epochs} epochs "
                                          f"({self.steps} steps):"))])


def detector_runs(target_names: Sequence[str] = DETECT_TARGET, recipe: Recipe = DETECTOR_RECIPE, *, seed: int = 0,
                  source=None, source_names: Sequence[str] | None = None, n_scenes: int = 100,
                  val_scenes: int = 100) -> DetectorRuns:
    """Fine-tune a ``len(target_names)``-class detector twice on the same scenes: transferred and from scratch.

    The transferred model gets the source's weights (default ``workbench.pretrained("shapes_detect_n")``,
    whose head is the light ``reg_max=1`` one; both targets are built with the source's ``reg_max``),
    with class rows copied by name when the source's class names are known (``source_names`` or
    ``source.pretrained_info``). Both runs go through :func:`workbench.runs.run_all` (built under
    ``seed``, trained with ``recipe`` on ``n_scenes`` scenes) and are scored by mAP@0.5 on
    ``val_scenes`` held-out scenes.

    Example:
        >>> runs = detector_runs(recipe=DETECTOR_RECIPE.replace(epochs=1), source=build_model("n", "detect", nc=10),
        ...                      n_scenes=4, val_scenes=2)
        >>> sorted(runs.mAP50), runs.report.n_transferred
        (['pretrained', 'scratch'], 349)
    """
    source = pretrained("shapes_detect_n") if source is None else source
    source_names = source_names or getattr(source, "pretrained_info", {}).get("classes")
    names = (list(source_names), list(target_names)) if source_names else None
    reg_max = detect_head(source).reg_max  # the target's head takes the source's box branch whole
    train = shape_scenes(n_scenes, list(target_names), seed=seed + 1)
    val = shape_scenes(val_scenes, list(target_names), seed=seed + 10_001)
    build = partial(build_model, getattr(source, "scale", "n"), "detect", nc=len(target_names), reg_max=reg_max)
    report, scores, histories, _models = transferred_and_scratch(source, build, train, val, recipe, names=names,
                                                                 seed=seed)
    return DetectorRuns(tuple(target_names), n_scenes, recipe.epochs, report, scores, histories["pretrained"].step)


def transferred_and_scratch(source, build: Callable[[], nn.Module], train, val, recipe: Recipe, *,
                            names: tuple[list[str], list[str]] | None = None, seed: int = 0):
    """Fine-tune ``build()`` twice on ``train``: with ``source``'s weights (class rows by ``names``) and fresh.

    Both runs go through :func:`workbench.runs.run_all` with ``recipe`` and ``seed`` and are scored by
    mAP@0.5 on ``val``. Returns ``(the transfer report, {run: mAP50}, {run: History}, {run: model})``
    for the runs ``"pretrained"`` and ``"scratch"``.
    """
    reports: dict[str, TransferReport] = {}

    def start(transferred: bool):
        def built() -> nn.Module:
            model = build()
            if transferred:
                reports["pretrained"] = transfer(source, model, class_names=names)
            return model
        return built

    models: dict[str, nn.Module] = {}
    histories = run_all([Run("pretrained", start(True)), Run("scratch", start(False))], train, seed=seed,
                        models=models, **recipe.fit_options())
    scores = {name: evaluate(model, Batches(val, 64, shuffle=False))["mAP50"] for name, model in models.items()}
    return reports["pretrained"], scores, histories, models
