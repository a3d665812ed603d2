"""Lesson 2, weight transfer when the task changes: the ledger behind "Transferred X/Y items".

* :func:`count_items`: the headline count decomposed by kind of entry (conv weights, BatchNorm
  weights, biases, running statistics, ``num_batches_tracked``, the class layer) and by stage;
* :func:`verify`: the ledger checked against the tensors: every ``transferred`` entry equals the
  source's, every other entry is still the target's fresh initialisation, class rows as listed;
* :func:`head_start`: the class layer's rows copied by class name give the shared classes a
  working head before any training;
* :func:`shifted_model`, :func:`layer_map_effect`, :func:`layer_map_runs`: one inserted layer
  shifts every later index, name matching drops those layers, and a layer map brings them back;
* :func:`adapt_channels`: the first conv summed to one input channel computes, on a grey image,
  exactly what the source computes on that image repeated to three channels;
* :func:`branch_counts`, :func:`detector_runs`: the same on a detector (from :mod:`.detector_transfer`).

Example:
    >>> from workbench import build_model, transfer
    >>> target = build_model(nc=3)
    >>> count = count_items(transfer(build_model(nc=10), target), target)
    >>> count.transferred, count.items, [kind for kind, _, c in count.by_kind if not c["transferred"]]
    (156, 158, ['Linear.weight', 'Linear.bias'])
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .. import data
from ..metrics import evaluate
from ..models import SCALES, YOLO, Bottleneck, Spec, _backbone, build_model, scale_rules
from ..modes import eval_mode
from ..runs import Run, default_source, run_all
from ..table import Table, TextResult
from ..training import History
from ..transfer import TransferReport, adapt_input_conv, source_state, suggest_layer_map, transfer
from .detector_transfer import DETECT_TARGET, DETECTOR_RECIPE, DetectorRuns, branch_counts, detector_runs  # noqa: F401
from .recipe import LESSON, TARGET_CLASSES, Recipe, Target

TRANSFER_RECIPE = LESSON  # the layer-map runs: fit's defaults, 6 epochs of batch 16 on the CPU
TRANSFER_TARGET = Target(10)  # lesson 1's small target: 10 images per class, no gap


# ----------------------------------------------------------------------------------------------- the count
@dataclass(frozen=True, repr=False)
class ItemCount(TextResult):
    """The report's items grouped by entry kind (``"BatchNorm2d.running_mean"``) and by stage, with their statuses."""

    headline: str
    by_kind: tuple[tuple[str, str, Counter], ...]  # (kind, "parameter"/"buffer", status counts)
    by_stage: tuple[tuple[str, Counter], ...]

    @property
    def transferred(self) -> int:
        return sum(c["transferred"] for _, _, c in self.by_kind)

    @property
    def items(self) -> int:
        return sum(sum(c.values()) for _, _, c in self.by_kind)

    def equation(self) -> str:
        """``X/Y = a kind + b kind + ...``: the transferred count as a sum over entry kinds."""
        parts = [f"{c['transferred']} {kind}" for kind, _, c in self.by_kind if c["transferred"]]
        return f"{self.transferred}/{self.items} = " + " + ".join(parts)

    def __str__(self) -> str:
        statuses = sorted({s for _, _, c in self.by_kind for s in c} | {"transferred"},
                          key=lambda s: (s != "transferred", s))
        kinds = Table(("entry", "is a", "items", *statuses), [
            {"entry": kind, "is a": what, "items": sum(c.values()), **{s: c[s] for s in statuses}}
            for kind, what, c in self.by_kind], indent=2, title="by kind of entry:")
        stages = Table(("stage", "items", *statuses), [
            {"stage": stage, "items": sum(c.values()), **{s: c[s] for s in statuses}} for stage, c in self.by_stage],
            indent=2, title="by stage:")
        return "\n".join([self.headline, self.equation(), "", str(kinds), "", str(stages)])


def _owner_types(model: nn.Module) -> dict[str, str]:
    return {name: type(module).__name__ for name, module in model.named_modules()}


def entry_kind(name: str, owners: dict[str, str]) -> str:
    """``"layers.2.m.0.cv1.bn.running_var"`` -> ``"BatchNorm2d.running_var"``: owning module's type, tensor name."""
    module, _, tensor = name.rpartition(".")
    return f"{owners.get(module, module or type(None).__name__)}.{tensor}"


def count_items(report: TransferReport, model: nn.Module) -> ItemCount:
    """Decompose ``report``'s items (the target's state_dict entries) by kind and by stage.

    ``report``: a :func:`workbench.transfer` report for ``model`` (any module: its types name the kinds).
    """
    owners, params = _owner_types(model), {name for name, _ in model.named_parameters(remove_duplicate=False)}
    stages = {index: stage for index, _, stage, _ in report.layers}
    kinds: dict[str, tuple[str, Counter]] = {}
    by_stage: dict[str, Counter] = {}
    for row in report.rows:
        if row.status == "unused":
            continue
        kind = entry_kind(row.name, owners)
        kinds.setdefault(kind, ("parameter" if row.name in params else "buffer", Counter()))[1][row.status] += 1
        by_stage.setdefault(stages.get(row.layer, "-"), Counter())[row.status] += 1
    return ItemCount(report.headline, tuple((k, what, c) for k, (what, c) in kinds.items()),
                     tuple(by_stage.items()))


# ----------------------------------------------------------------------------------------------- verification
@dataclass(frozen=True, repr=False)
class Verification(TextResult):
    """Each target entry checked against the tensors: source values where the ledger says copied, fresh elsewhere."""

    from_source: int
    kept_fresh: int
    rows_copied: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        lines = [f"{self.from_source} entries hold the source's values, {self.kept_fresh} still hold their fresh "
                 f"initialisation, {self.rows_copied} class rows were copied by name",
                 "the ledger matches the tensors" if self.ok else "the ledger does NOT match the tensors:"]
        return "\n".join(lines + [f"  {p}" for p in self.problems])


def verify(report: TransferReport, source, fresh: dict[str, torch.Tensor], model: nn.Module) -> Verification:
    """Check the ledger against the tensors.

    ``report`` is what :func:`workbench.transfer` returned for ``model`` from ``source`` (model,
    state_dict or path); ``fresh`` is ``model``'s state_dict copied *before* the transfer.
    ``transferred`` entries must equal the source's, ``adapted`` ones the source's first conv
    adapted by :func:`~workbench.transfer.adapt_input_conv`; in a ``partial`` entry every row must
    be either a source row (a copied class) or its fresh row; every other entry must be fresh.

    Example:
        >>> from workbench import build_model
        >>> target = build_model(nc=3)
        >>> fresh = {k: v.clone() for k, v in target.state_dict().items()}
        >>> source = build_model(nc=10)
        >>> verify(transfer(source, target), source, fresh, target).ok
        True
    """
    src, now = source_state(source), model.state_dict()
    from_source = kept_fresh = rows_copied = 0
    problems = []
    for row in report.rows:
        if row.status == "unused":
            continue
        value, before = now[row.name], fresh[row.name]
        if row.status in ("transferred", "adapted"):
            expected = src[row.source_name].to(value.dtype)
            if row.status == "adapted":
                expected = adapt_input_conv(expected, value.shape[1])
            good = torch.allclose(value, expected, rtol=0, atol=1e-6) if value.is_floating_point() \
                else torch.equal(value, expected)
            from_source += good
        elif row.status == "partial":
            rows = src[row.source_name].to(value.dtype)
            copied = [any(torch.equal(value[i], r) for r in rows) for i in range(len(value))]
            good = all(c or torch.equal(value[i], before[i]) for i, c in enumerate(copied))
            rows_copied += sum(copied)
        else:
            good = torch.equal(value, before)
            kept_fresh += good
        if not good:
            problems.append(f"{row.name} ({row.status})")
    return Verification(from_source, kept_fresh, rows_copied, tuple(problems))


# ----------------------------------------------------------------------------------------------- class rows
@dataclass(frozen=True, repr=False)
class HeadStart(TextResult):
    """Accuracy before any training on the target classes the source also has, with and without their rows copied.

    ``accuracy_plain`` is the mean over ``fresh_heads`` initialisations of the fresh class layer: one
    random layer sends most images to one class, so a single one scores anywhere from 0 to 1 by luck.
    """

    shared: tuple[str, ...]
    row_map: tuple[tuple[str, int, int], ...]  # (class, target row, source row)
    n_images: int
    accuracy_plain: float
    accuracy_by_name: float
    fresh_heads: int = 1

    def __str__(self) -> str:
        rows = [{"class": name, "target row": j, "<- source row": i} for name, j, i in self.row_map]
        return "\n".join([str(Table(("class", "target row", "<- source row"), rows, indent=2,
                                    title=f"class rows copied by name: {len(self.row_map)}")), "",
                          f"accuracy before any training on {self.n_images} images of {', '.join(self.shared)}:",
                          f"  head left fresh (name and shape only), mean of {self.fresh_heads} initialisations: "
                          f"{self.accuracy_plain:.3f}",
                          f"  class rows copied by name: {self.accuracy_by_name:.3f}"])


def head_start(source=None, target_names: Sequence[str] = TARGET_CLASSES, *, source_names: Sequence[str] | None = None,
               n_per_class: int = 25, build: Callable[[int], nn.Module] | None = None, seed: int = 0,
               fresh_heads: int = 8) -> HeadStart:
    """Transfer into a ``len(target_names)``-class model twice, plain and with class rows by name; score both untrained.

    The images are shapes of the classes both lists share (seed ``seed + 2``, as lesson 1's
    validation images); each model's prediction counts over all its target classes. The plain
    transfer is scored as the mean over ``fresh_heads`` initialisations (seeds ``seed ...``).

    Example:
        >>> result = head_start(n_per_class=4, fresh_heads=2)
        >>> result.shared, result.accuracy_by_name > result.accuracy_plain
        (('triangle', 'ring'), True)
    """
    if isinstance(fresh_heads, bool) or not isinstance(fresh_heads, int) or fresh_heads < 1:
        raise ValueError(f"fresh_heads must be an integer >= 1 (got {fresh_heads!r})")
    source = default_source() if source is None else source
    if source_names is None:
        source_names = getattr(source, "pretrained_info", {}).get("classes")
        if source_names is None:
            raise ValueError("pass source_names=: the source carries no class names (pretrained_info['classes'])")
    build = build or (lambda nc: build_model(nc=nc))
    key = {n.lower(): i for i, n in enumerate(source_names)}
    row_map = tuple((name, j, key[name.lower()]) for j, name in enumerate(target_names) if name.lower() in key)
    if not row_map:
        raise ValueError(f"no target class is also a source class; the source has {list(source_names)}")
    shared = tuple(name for name, _, _ in row_map)
    images = data.shapes(n_per_class, list(shared), seed=seed + 2)
    labels = torch.tensor([j for _, j, _ in row_map])[images.y]  # shared class k is target row j

    def untrained_accuracy(names, init_seed: int) -> float:
        torch.manual_seed(init_seed)
        model = build(len(target_names))
        transfer(source, model, class_names=names)
        return evaluate(model, [(images.x, labels)])["accuracy"]

    plain = sum(untrained_accuracy(None, seed + k) for k in range(fresh_heads)) / fresh_heads
    by_name = untrained_accuracy((list(source_names), list(target_names)), seed)
    return HeadStart(shared, row_map, len(images), plain, by_name, fresh_heads)


# ----------------------------------------------------------------------------------------------- layer maps
BLOCKS = ("residual", "conv")


def shifted_model(insert_at: int = 1, *, block: str = "residual", nc: int = 10, scale: str = "n",
                  ch: int = 3) -> YOLO:
    """A workbench classify model with one extra layer inserted at index ``insert_at``.

    Every layer from ``insert_at`` on moves one index up, so its state_dict names change. The
    extra layer keeps the width and the resolution:

    * ``"residual"``: a YOLO ``Bottleneck`` with a shortcut whose last BatchNorm weight starts at
      zero, so the block starts as the identity (the "zero-init last" trick for added blocks): with
      the old weights mapped to their new indices the model computes what the source computed;
    * ``"conv"``: a plain 3x3 ``Conv``, freshly initialised: it scrambles what every later layer sees.

    Example:
        >>> model = shifted_model(1)
        >>> len(model.layers), type(model.layers[1]).__name__, model.layers[2].i
        (11, 'Bottleneck', 2)
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; choose one of {list(BLOCKS)}")
    specs = _backbone(*scale_rules(scale))
    if not 1 <= insert_at <= len(specs):
        raise ValueError(f"insert_at must be between 1 and {len(specs)} (the backbone has {len(specs)} layers)")
    channels = specs[insert_at - 1].args[0]
    specs.insert(insert_at, Spec(-1, "Conv", (channels, 3, 1), "backbone"))
    specs.append(Spec(-1, "Classify", (), "head"))
    model = YOLO(specs, nc=nc, ch=ch, scale=scale, task="classify")
    if block == "residual":
        extra = Bottleneck(channels, channels, shortcut=True)
        nn.init.zeros_(extra.cv2.bn.weight)
        extra.i, extra.f, extra.stage = insert_at, -1, "backbone"
        model.layers[insert_at] = extra
    return model


@dataclass(frozen=True, repr=False)
class LayerMapEffect(TextResult):
    """The ledger of a shifted architecture by name alone, the suggested layer map, and the ledger with it."""

    before: TransferReport
    layer_map: dict[int, int]
    after: TransferReport

    def __str__(self) -> str:
        moved = {i: j for i, j in self.layer_map.items() if i != j}
        return "\n".join([f"by name alone:     {self.before.headline} "
                          f"(parameter coverage {100 * self.before.coverage:.1f}%)",
                          f"suggested map (source layer -> target layer, moved ones): {moved}",
                          f"with the layer map: {self.after.headline} "
                          f"(parameter coverage {100 * self.after.coverage:.1f}%)"])


def layer_map_effect(source, model: nn.Module) -> LayerMapEffect:
    """Dry-run the transfer into ``model`` by name, then with :func:`workbench.suggest_layer_map`'s map.

    Example:
        >>> effect = layer_map_effect(build_model(nc=10), shifted_model(1, nc=10))
        >>> effect.before.n_transferred < effect.after.n_transferred
        True
    """
    layer_map = suggest_layer_map(source, model)
    return LayerMapEffect(transfer(source, model, dry_run=True), layer_map,
                          transfer(source, model, dry_run=True, layer_map=layer_map))


@dataclass(frozen=True, repr=False)
class MapRuns(TextResult):
    """The shifted model fine-tuned twice, same data and seed: weights matched by name, and through a layer map."""

    insert_at: int
    block: str
    reports: dict[str, TransferReport]
    histories: dict[str, History]

    def accuracy(self, variant: str) -> float:
        return self.histories[variant].val["accuracy"][-1]

    def __str__(self) -> str:
        rows = [{"weights matched": name, "items": report.headline.removesuffix(" from pretrained weights"),
                 "coverage": f"{100 * report.coverage:.1f}%",
                 "val accuracy per epoch": " ".join(f"{a:.2f}" for a in self.histories[name].val["accuracy"]),
                 "final": f"{self.accuracy(name):.3f}"} for name, report in self.reports.items()]
        return str(Table(("weights matched", "items", "coverage", "val accuracy per epoch", "final"), rows, indent=2,
                         title=f"one {self.block} layer inserted at index {self.insert_at}, then fine-tuned:"))


def layer_map_runs(target: Target = TRANSFER_TARGET, recipe: Recipe = TRANSFER_RECIPE, *, seed: int = 0, source=None,
                   insert_at: int = 1, block: str = "residual") -> MapRuns:
    """Fine-tune :func:`shifted_model` on ``target`` (lesson 1's task), from weights matched by name and by layer map.

    Both go through :func:`workbench.runs.run_all`: built under ``seed``, trained with ``recipe`` on the same data.

    Example:
        >>> runs = layer_map_runs(Target(2), Recipe(epochs=1, batch_size=8), source=build_model(nc=10))
        >>> [r.n_transferred for r in runs.reports.values()]
        [6, 156]
    """
    source = default_source() if source is None else source
    train, val = target.data(seed)
    reports: dict[str, TransferReport] = {}

    def run(name: str) -> Run:
        def start() -> nn.Module:
            model = shifted_model(insert_at, block=block, nc=train.nc)
            layer_map = suggest_layer_map(source, model) if name == "layer map" else None
            reports[name] = transfer(source, model, layer_map=layer_map)
            return model
        return Run(name, start)

    histories = run_all([run("by name"), run("layer map")], train, val, seed=seed, **recipe.fit_options())
    return MapRuns(insert_at, block, reports, histories)


# ----------------------------------------------------------------------------------------------- channels
@dataclass(frozen=True, repr=False)
class ChannelAdaptation(TextResult):
    """A 1-channel model filled from a 3-channel source, compared with the source on grey images."""

    report: TransferReport
    max_difference: float
    n_images: int

    def __str__(self) -> str:
        adapted = self.report.where("adapted")
        notes = "; ".join(f"{r.name}: {r.note}" for r in adapted) or "nothing adapted"
        return "\n".join([self.report.headline, f"adapted: {notes}",
                          f"largest |difference| between the 1-channel model on {self.n_images} grey images and "
                          f"the source on the same images repeated to 3 channels: {self.max_difference:.2e}"])


def adapt_channels(source=None, *, channels: int = 1, n_per_class: int = 3, seed: int = 0) -> ChannelAdaptation:
    """Transfer a 3-channel source into a ``channels``-channel copy of its architecture and compare outputs.

    The test images are handwritten digits (grey); the source sees them repeated to 3 channels,
    the adapted model sees ``channels`` copies. With ``channels=1`` (the sum rule) both compute the
    same logits, up to float rounding.

    Example:
        >>> result = adapt_channels(build_model(nc=10), n_per_class=1)
        >>> result.report.counts["adapted"], result.max_difference < 1e-3
        (1, True)
    """
    source = default_source() if source is None else source
    if not isinstance(source, YOLO):
        raise ValueError("adapt_channels needs a workbench model as the source (it builds the same architecture "
                         "with another input-channel count); for your own model call workbench.transfer directly")
    torch.manual_seed(seed)
    model = build_model(source.scale, source.task, nc=source.nc, ch=channels)
    report = transfer(source, model)
    grey = data.digits(n_per_class, channels=1, seed=seed)
    with eval_mode(source), eval_mode(model), torch.no_grad():
        expected = source(grey.x.repeat(1, 3, 1, 1))
        got = model(grey.x.repeat(1, channels, 1, 1))
    return ChannelAdaptation(report, (got - expected).abs().max().item(), len(grey))
