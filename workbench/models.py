"""A YOLO-style model written in Python: numbered layers, stages, Classify and Detect heads.

The layout follows Ultralytics YOLOv8 (``yolov8-cls.yaml`` and ``yolov8.yaml``): layer ``i`` is
``model.layers[i]`` and its state_dict keys start with ``layers.{i}.``, as Ultralytics' keys start
with ``model.{i}.``. Each layer carries ``i`` (its index), ``f`` (where its input comes from) and
``stage`` (backbone / neck / head).

Example:
    >>> model = build_model(scale="n", task="classify", nc=3)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 3])
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .batchnorm import bn_policy
from .heads import DFL
from .i18n import N_, _, labels
from .layers import numbered_layers
from .numbers import whole_number
from .table import Table, TableResult

# name: (depth multiple, width multiple, max channels), as in Ultralytics' yolov8 scales
SCALES = {"n": (0.33, 0.25, 1024), "s": (0.33, 0.50, 1024)}
TASKS = ("classify", "detect")
INIT_SCHEMES = ("default", "kaiming", "xavier", "normal", "zero")
BN_EPS, BN_MOMENTUM = 1e-3, 0.03  # YOLO's BatchNorm settings
CLASSIFY_HIDDEN = 1280  # Ultralytics' Classify hidden width (c_)


def autopad(k: int, p: int | None = None) -> int:
    return k // 2 if p is None else p


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d (eps 1e-3, momentum 0.03) + SiLU, as YOLO's ``Conv``."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3x3 convs with an optional residual connection."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 1.0):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1, self.cv2 = Conv(c1, c_, 3), Conv(c_, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """YOLOv8's CSP block: split, n bottlenecks, concatenate every intermediate output."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained max-pools concatenated."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1, self.cv2 = Conv(c1, c_, 1), Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class Concat(nn.Module):
    def forward(self, xs):
        return torch.cat(xs, 1)


class Classify(nn.Module):
    """Classification head: Conv, global average pool, dropout, Linear to ``nc`` classes."""

    def __init__(self, c1: int, nc: int, c_: int = CLASSIFY_HIDDEN, dropout: float = 0.0):
        super().__init__()
        self.nc = nc
        self.conv = Conv(c1, c_, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(c_, nc)

    def forward(self, x):
        return self.linear(self.drop(self.pool(self.conv(x)).flatten(1)))


class Detect(nn.Module):
    """Anchor-free detection head, one box branch (``cv2``) and one class branch (``cv3``) per level.

    With ``reg_max=16`` (the default) it is Ultralytics' ``Detect`` (YOLOv8 layout) shape for shape
    and name for name: the box branch is ``max(16, ch[0] // 4, 4 * reg_max)`` wide and ends in
    ``4 * reg_max`` outputs, a distribution over ``reg_max`` bins for each box side (the distances
    from the cell centre to the box's left, top, right and bottom, in grid cells), whose expectation
    :class:`~workbench.heads.DFL` (``dfl``) takes. ``reg_max=1`` is a lighter head: 4 box outputs,
    each decoded as ``softplus(raw) - 0.5`` grid cells, and no ``dfl``. See
    :func:`workbench.detection.decode`. As in Ultralytics, the class branch is
    ``c3 = max(ch[0], min(nc, 100))`` wide and ends in a 1x1 conv with ``nc`` outputs, so changing
    the class count re-initialises its last layer; the class logits double as objectness.
    """

    def __init__(self, nc: int, ch: tuple[int, ...], strides: tuple[int, ...] = (8, 16, 32), reg_max: int = 16):
        super().__init__()
        self.nc, self.nl, self.reg_max, self.no = nc, len(ch), reg_max, nc + 4 * reg_max
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float32), persistent=False)
        c2, c3 = max(16, ch[0] // 4, 4 * reg_max), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
        self.bias_init()

    def bias_init(self, image_size: int = 64) -> None:
        """Ultralytics' prior: class bias log(5 / nc / (image_size / stride)^2); box bias 1 (DFL: 2, as Ultralytics)."""
        for box, cls, s in zip(self.cv2, self.cv3, self.stride.tolist()):
            nn.init.constant_(box[-1].bias, 1.0 if self.reg_max == 1 else 2.0)
            nn.init.constant_(cls[-1].bias, math.log(5 / self.nc / (image_size / s) ** 2))

    def forward(self, xs):
        """A list of ``(batch, 4 * reg_max + nc, h, w)`` maps, one per level."""
        return [torch.cat((box(x), cls(x)), 1) for x, box, cls in zip(xs, self.cv2, self.cv3)]


@dataclass(frozen=True)
class Spec:
    """One row of the architecture: input index (or indices), module class, arguments, stage."""

    f: int | tuple[int, ...]
    kind: str
    args: tuple
    stage: str


def _backbone(w, d) -> list[Spec]:
    return [
        Spec(-1, "Conv", (w(64), 3, 2), "backbone"),  # 0 P1/2
        Spec(-1, "Conv", (w(128), 3, 2), "backbone"),  # 1 P2/4
        Spec(-1, "C2f", (w(128), d(3), True), "backbone"),
        Spec(-1, "Conv", (w(256), 3, 2), "backbone"),  # 3 P3/8
        Spec(-1, "C2f", (w(256), d(6), True), "backbone"),
        Spec(-1, "Conv", (w(512), 3, 2), "backbone"),  # 5 P4/16
        Spec(-1, "C2f", (w(512), d(6), True), "backbone"),
        Spec(-1, "Conv", (w(1024), 3, 2), "backbone"),  # 7 P5/32
        Spec(-1, "C2f", (w(1024), d(3), True), "backbone"),
    ]


def _detect_neck(w, d) -> list[Spec]:
    return [
        Spec(-1, "SPPF", (w(1024), 5), "backbone"),  # 9
        Spec(-1, "Upsample", (), "neck"),  # 10
        Spec((-1, 6), "Concat", (), "neck"),
        Spec(-1, "C2f", (w(512), d(3)), "neck"),  # 12
        Spec(-1, "Upsample", (), "neck"),
        Spec((-1, 4), "Concat", (), "neck"),
        Spec(-1, "C2f", (w(256), d(3)), "neck"),  # 15 P3/8
        Spec(-1, "Conv", (w(256), 3, 2), "neck"),
        Spec((-1, 12), "Concat", (), "neck"),
        Spec(-1, "C2f", (w(512), d(3)), "neck"),  # 18 P4/16
        Spec(-1, "Conv", (w(512), 3, 2), "neck"),
        Spec((-1, 9), "Concat", (), "neck"),
        Spec(-1, "C2f", (w(1024), d(3)), "neck"),  # 21 P5/32
    ]


def _make(spec: Spec, ch, nc: int) -> tuple[nn.Module, int]:
    """Instantiate one layer and return it with its output channels (``ch[j]``: output of layer j, -1 the previous)."""
    c1 = ch[spec.f] if isinstance(spec.f, int) else None
    if spec.kind == "Conv":
        return Conv(c1, *spec.args), spec.args[0]
    if spec.kind == "C2f":
        return C2f(c1, *spec.args), spec.args[0]
    if spec.kind == "SPPF":
        return SPPF(c1, *spec.args), spec.args[0]
    if spec.kind == "Upsample":
        return nn.Upsample(scale_factor=2, mode="nearest"), c1
    if spec.kind == "Concat":
        return Concat(), sum(ch[j] for j in spec.f)
    if spec.kind == "Classify":
        return Classify(c1, nc), nc
    if spec.kind == "Detect":
        return Detect(nc, tuple(ch[j] for j in spec.f), reg_max=spec.args[0]), 0
    raise ValueError(f"unknown layer kind {spec.kind!r}")


class YOLO(nn.Module):
    """A sequence of numbered layers; a layer may read earlier outputs (``f``), as in Ultralytics."""

    def __init__(self, specs: list[Spec], nc: int, ch: int, scale: str, task: str):
        super().__init__()
        self.nc, self.ch, self.scale, self.task = nc, ch, scale, task
        channels, layers = [ch], []  # channels[j + 1] is the output width of layer j
        for i, spec in enumerate(specs):
            module, c2 = _make(spec, _Channels(channels), nc)
            module.i, module.f, module.stage = i, spec.f, spec.stage
            layers.append(module)
            channels.append(c2)
        self.layers = nn.ModuleList(layers)
        froms = [spec.f for spec in specs]
        self.save = sorted({j for f in froms if not isinstance(f, int) for j in f if j != -1})

    def forward(self, x):
        outputs = []
        for layer in self.layers:
            if layer.f != -1:
                x = outputs[layer.f] if isinstance(layer.f, int) else [x if j == -1 else outputs[j] for j in layer.f]
            x = layer(x)
            outputs.append(x if layer.i in self.save else None)
        return x


class _Channels:
    """Index output widths the way specs do: -1 is the previous layer, j >= 0 is layer j."""

    def __init__(self, channels: list[int]):
        self.channels = channels

    def __getitem__(self, j: int) -> int:
        return self.channels[-1] if j == -1 else self.channels[j + 1]


def scale_rules(scale: str):
    """Ultralytics' scaling rules for one scale: ``w(channels)`` and ``d(repeats)``."""
    depth, width, max_channels = SCALES[scale]

    def w(c):
        return int(math.ceil(min(c, max_channels) * width / 8) * 8)

    def d(n):
        return max(round(n * depth), 1)

    return w, d


def build_model(scale: str = "n", task: str = "classify", nc: int = 10, ch: int = 3, reg_max: int = 16) -> YOLO:
    """Build a YOLOv8-style model.

    Args:
        scale: ``"n"`` (nano) or ``"s"`` (small): width and depth multiples as in Ultralytics.
        task: ``"classify"`` (backbone + Classify, as yolov8-cls) or ``"detect"`` (+ SPPF, neck, Detect).
        nc: number of classes.
        ch: input channels.
        reg_max: a detector's bins per box side: 16 is Ultralytics' head (DFL), so real ``yolov8n.pt``
            weights fit every tensor; 1 is the lighter head the shipped ``shapes_detect_n`` uses.

    Example:
        >>> build_model("n", "classify", nc=3).layers[-1].linear.out_features
        3
    """
    if not isinstance(scale, str) or scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    if not isinstance(task, str) or task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    nc = whole_number(nc, "nc", note=" (the number of classes, e.g. 3)")
    ch = whole_number(ch, "ch", note=" (input channels, e.g. 3)")
    reg_max = whole_number(reg_max, "reg_max", note=" (bins per box side: 16 as Ultralytics, or 1)")
    w, d = scale_rules(scale)
    specs = _backbone(w, d)
    if task == "classify":
        specs.append(Spec(-1, "Classify", (), "head"))
    else:
        specs += _detect_neck(w, d) + [Spec((15, 18, 21), "Detect", (reg_max,), "head")]
    return YOLO(specs, nc=nc, ch=ch, scale=scale, task=task)


@dataclass(frozen=True)
class LayerRow:
    index: int
    name: str
    stage: str
    type: str
    params: int
    trainable: int
    bn: str = ""  # the BatchNorm policies freeze() gave modules of this layer, e.g. "eval"


class LayerTable(TableResult, list):
    """Rows of :class:`LayerRow`; prints as text and as HTML in Jupyter (a :class:`~workbench.table.Table`)."""

    HEADER = (N_("index"), N_("name"), N_("stage"), N_("type"), N_("params"), N_("trainable"), N_("bn policy"))

    def as_table(self) -> Table:
        rows = [{"index": r.index, "name": r.name, "stage": r.stage, "type": r.type, "params": r.params,
                 "trainable": r.trainable, "bn policy": r.bn} for r in self]
        return Table(self.HEADER, rows, footer={"name": _("total"), "params": self.params, "trainable": self.trainable},
                     labels=labels(self.HEADER))

    @property
    def params(self) -> int:
        return sum(r.params for r in self)

    @property
    def trainable(self) -> int:
        return sum(r.trainable for r in self)


def layer_table(model: nn.Module) -> LayerTable:
    """One row per numbered layer (works on any ``nn.Module``; see :func:`numbered_layers`).

    Example:
        >>> layer_table(build_model()).params == sum(p.numel() for p in build_model().parameters())
        True
    """
    rows = LayerTable()
    for layer in numbered_layers(model):
        params = list(layer.module.parameters())
        policies = sorted({bn_policy(m) for m in layer.module.modules()} - {None})
        rows.append(LayerRow(index=layer.index, name=layer.name, stage=layer.stage, type=layer.type,
                             params=sum(p.numel() for p in params),
                             trainable=sum(p.numel() for p in params if p.requires_grad), bn=", ".join(policies)))
    return rows


@torch.no_grad()
def init_weights(model: nn.Module, scheme: str = "default", std: float = 0.01) -> nn.Module:
    """Re-initialise every conv and linear layer with one scheme; norms reset to weight 1, bias 0.

    Schemes: ``"default"`` (each module's own ``reset_parameters``, PyTorch's default),
    ``"kaiming"`` (normal, fan_in, gain sqrt(2): std = sqrt(2 / fan_in)), ``"xavier"`` (normal,
    std = sqrt(2 / (fan_in + fan_out))), ``"normal"`` (N(0, std)) and ``"zero"``. Biases are
    zero except with ``"default"``. Returns the model, changed in place.

    Example:
        >>> m = init_weights(nn.Linear(400, 10), "kaiming")
        >>> abs(m.weight.std().item() - (2 / 400) ** 0.5) < 0.005
        True
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {list(INIT_SCHEMES)}")
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            _init_weight_layer(module, scheme, std)
        elif isinstance(module, nn.modules.batchnorm._NormBase) or "Norm" in type(module).__name__:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    for module in model.modules():
        if isinstance(module, DFL):
            module.reset_parameters()  # fixed bin values, not learnt
    if scheme == "default":
        for layer in numbered_layers(model):
            if isinstance(layer.module, Detect):
                layer.module.bias_init()
    return model


def _init_weight_layer(module: nn.Module, scheme: str, std: float) -> None:
    if scheme == "default":
        module.reset_parameters()
        return
    if scheme == "kaiming":
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    elif scheme == "xavier":
        nn.init.xavier_normal_(module.weight)
    elif scheme == "normal":
        nn.init.normal_(module.weight, 0.0, std)
    else:
        nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
