"""Detection heads, the workbench's and Ultralytics', read the same way: found, checked and flattened.

A detection head here is any module with ``nc`` classes, a box branch per level ``cv2``, a
class branch per level ``cv3``, ``reg_max`` distribution bins per box side and its levels'
``stride``: the workbench's :class:`~workbench.models.Detect` and Ultralytics' ``Detect`` (found
by these attributes, so ultralytics is never imported). :func:`flatten_outputs` turns what either
head returns (the workbench's list of maps; Ultralytics' ``{"boxes", "scores", "feats"}`` in
training, ``(decoded, that dict)`` in eval) into one ``(batch, cells, 4 * reg_max + nc)`` tensor.
:class:`DFL` is the distribution's expectation, as Ultralytics' module of the same name.

Example:
    >>> flat, sizes = flatten_outputs([torch.zeros(1, 6, 2, 3)])
    >>> tuple(flat.shape), sizes
    ((1, 6, 6), [(2, 3)])
"""
from __future__ import annotations

import torch
from torch import nn

HEAD_ATTRIBUTES = ("nc", "cv2", "cv3", "stride", "reg_max")
# attributes of Ultralytics heads that add tasks or branches the workbench's loss does not train
OTHER_TASKS = {"proto": "a segmentation head", "kpt_shape": "a pose head", "ne": "an oriented-box (OBB) head",
               "one2one_cv2": "an end-to-end head (NMS-free one-to-one branches, as YOLOv10 and YOLO26 have)"}
SUPPORTED = ("the workbench's Detect (build_model(task='detect')) and Ultralytics' Detect as built from a "
             "detection YAML such as yolov8n.yaml or yolo11n.yaml")


class DFL(nn.Module):
    """Each box side's expected distance: softmax over ``reg_max`` bins, then a fixed 1x1 conv of weights 0..reg_max-1.

    Its conv weight is a frozen parameter named ``conv.weight``, as in Ultralytics, so state dicts match.

    Example:
        >>> DFL(4)(torch.zeros(1, 16, 1)).flatten().tolist()  # uniform bins: the mean of 0, 1, 2, 3
        [1.5, 1.5, 1.5, 1.5]
    """

    def __init__(self, reg_max: int = 16):
        super().__init__()
        self.reg_max = reg_max
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.conv.weight.copy_(torch.arange(self.reg_max, dtype=torch.float32).view(1, self.reg_max, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, 4 * reg_max, cells)`` logits to ``(batch, 4, cells)`` distances, in grid cells."""
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def is_detect_head(module: nn.Module) -> bool:
    """Whether ``module`` is a detection head (it has ``nc``, ``cv2``, ``cv3``, ``stride`` and ``reg_max``)."""
    return all(hasattr(module, a) for a in HEAD_ATTRIBUTES) and isinstance(module.cv3, nn.ModuleList)


def detect_heads(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every detection head in ``model``, outermost first."""
    return [(name, m) for name, m in model.named_modules() if is_detect_head(m)]


def class_layer_names(name: str, head: nn.Module) -> list[str]:
    """The module names of a head's final class convs: the last layer of every class branch, every level.

    Ultralytics' end-to-end heads have a second class branch (``one2one_cv3``); its convs count too.

    Example:
        >>> from workbench import build_model
        >>> class_layer_names("layers.22", build_model("n", "detect", nc=3).layers[22])
        ['layers.22.cv3.0.2', 'layers.22.cv3.1.2', 'layers.22.cv3.2.2']
    """
    prefix = f"{name}." if name else ""
    names = []
    for attr in ("cv3", "one2one_cv3"):
        branches = getattr(head, attr, None)
        if isinstance(branches, nn.ModuleList):
            names += [f"{prefix}{attr}.{i}.{len(b) - 1}" for i, b in enumerate(branches)
                      if isinstance(b, nn.Sequential)]
    return names


def unsupported_reason(head: nn.Module) -> str | None:
    """Why the workbench's detection loss cannot train this head, or ``None`` when it can."""
    for attr, what in OTHER_TASKS.items():
        if getattr(head, attr, None) is not None:
            return f"its head {type(head).__name__} is {what}, which the workbench's detection loss does not train"
    return None


def flatten_outputs(outputs) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """A head's outputs as ``(batch, cells, 4 * reg_max + nc)`` (levels in order, cells row by row) and level sizes.

    Accepts the workbench's list of ``(batch, 4 * reg_max + nc, h, w)`` maps, Ultralytics' training
    dict ``{"boxes": (batch, 4 * reg_max, cells), "scores": (batch, nc, cells), "feats": maps}`` and its
    eval tuple ``(decoded, that dict)``.
    """
    if isinstance(outputs, tuple) and len(outputs) == 2 and isinstance(outputs[1], dict):
        outputs = outputs[1]
    if isinstance(outputs, dict):
        if not {"boxes", "scores", "feats"} <= set(outputs):
            raise ValueError(f"a head's output dict needs 'boxes', 'scores' and 'feats'; got {sorted(outputs)} "
                             f"(supported: {SUPPORTED})")
        sizes = [tuple(f.shape[-2:]) for f in outputs["feats"]]
        return torch.cat([outputs["boxes"], outputs["scores"]], 1).transpose(1, 2), sizes
    sizes = [tuple(out.shape[-2:]) for out in outputs]
    return torch.cat([out.flatten(2).transpose(1, 2) for out in outputs], 1), sizes
