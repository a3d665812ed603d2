"""Training and reading detection heads: decoding, box IoU, non-maximum suppression, the loss.

The head predicts, at every grid cell of every level, each box side's distance from the cell
centre and ``nc`` class logits (anchor-free, as Ultralytics YOLOv8). With ``reg_max=16`` (the
default, Ultralytics' head) a distance is the expectation of a softmax over 16 bins (0..15 grid
cells; Distribution Focal Loss); with ``reg_max=1`` (the lighter head) it is ``softplus(raw) - 0.5``
grid cells, so a cell up to half a cell outside a thin object can still reach it. The class
scores (sigmoid) double as objectness. The loss follows Ultralytics' recipe, simplified: a
task-aligned assigner (``score^0.5 * IoU^6``, top-k cells per object among those inside it or
holding its centre) picks the cells that learn each object, then binary cross-entropy on the
classes (soft, IoU-aware targets), CIoU on the boxes and, for ``reg_max > 1``, DFL on the bins.
Ultralytics' own ``Detect`` heads are read too (see :mod:`workbench.heads`).

Example:
    >>> from workbench import build_model
    >>> model = build_model("n", "detect", nc=3)
    >>> found = predict(model, torch.zeros(1, 3, 64, 64))  # one (n, 6) tensor per image
    >>> len(found), found[0].shape[1]
    (1, 6)
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .heads import SUPPORTED, detect_heads, flatten_outputs, unsupported_reason
from .modes import eval_mode

BOX_OFFSET = 0.5  # reg_max=1: decoded distance = softplus(raw) - BOX_OFFSET, in grid cells


def detect_head(model: nn.Module) -> nn.Module:
    """The model's detection head: a workbench :class:`~workbench.models.Detect` or an Ultralytics ``Detect``.

    Raises:
        ValueError: the model has no detection head, or one the workbench's loss cannot train
            (Ultralytics' segmentation, pose, oriented-box or end-to-end heads); the message says what is supported.
    """
    heads = detect_heads(model)
    if not heads:
        raise ValueError(f"{type(model).__name__} has no Detect head: build it with build_model(task='detect')")
    head = heads[-1][1]
    reason = unsupported_reason(head)
    if reason is not None:
        raise ValueError(f"{type(model).__name__} cannot be trained or evaluated here: {reason}. "
                         f"Supported detection heads: {SUPPORTED}")
    return head


def is_detector(model: nn.Module) -> bool:
    return bool(detect_heads(model))


def box_distances(raw: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Raw box outputs (..., 4 * reg_max) to the four side distances (..., 4), in grid cells.

    ``reg_max > 1``: the expectation of each side's softmax over bins 0..reg_max-1 (Ultralytics' DFL);
    ``reg_max == 1``: ``softplus(raw) - 0.5``.

    Example:
        >>> box_distances(torch.zeros(1, 64), 16).tolist()  # uniform bins: 7.5 cells each side
        [[7.5, 7.5, 7.5, 7.5]]
    """
    if reg_max == 1:
        return F.softplus(raw) - BOX_OFFSET
    bins = torch.arange(reg_max, device=raw.device, dtype=raw.dtype)
    return raw.unflatten(-1, (4, reg_max)).softmax(-1) @ bins


def _cells(sizes: list[tuple[int, int]], strides: Sequence[float], like: torch.Tensor):
    """Cell centres (A, 2) in pixels and their strides (A, 1), level by level, row by row."""
    centres, steps = [], []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h, device=like.device), torch.arange(w, device=like.device), indexing="ij")
        centres.append((torch.stack([xs, ys], -1).reshape(-1, 2).to(like.dtype) + 0.5) * float(s))
        steps.append(torch.full((h * w, 1), float(s), device=like.device, dtype=like.dtype))
    return torch.cat(centres), torch.cat(steps)


def decode(outputs, strides: Sequence[float], reg_max: int) -> tuple[torch.Tensor, ...]:
    """Flatten the head's outputs into boxes (B, A, 4) ``x1y1x2y2`` in pixels, logits (B, A, nc),
    cell centres (A, 2) and their strides (A, 1), over the ``A`` cells of all levels.

    ``outputs`` is what the head returns: the workbench's list of maps, or Ultralytics' dict (or its
    eval tuple); ``reg_max`` is the head's (``detect_head(model).reg_max``).

    Example:
        >>> boxes, logits, centres, strides = decode([torch.zeros(1, 64 + 2, 2, 2)], [8], reg_max=16)
        >>> centres.tolist()  # cell centres, row by row
        [[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0]]
        >>> boxes[0, 0].tolist()  # uniform bins: 7.5 cells (60 pixels) each side
        [-56.0, -56.0, 64.0, 64.0]
        >>> light = decode([torch.zeros(1, 4 + 2, 2, 2)], [8], reg_max=1)[0]  # softplus(0) - 0.5 = 0.19 cells
        >>> [round(v, 2) for v in light[0, 0].tolist()]
        [2.45, 2.45, 5.55, 5.55]
    """
    flat, sizes = flatten_outputs(outputs)
    centres, steps = _cells(sizes, strides, flat)
    boxes = _boxes(centres, box_distances(flat[..., :4 * reg_max], reg_max) * steps)
    return boxes, flat[..., 4 * reg_max:], centres, steps


def _boxes(centres: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """``x1y1x2y2`` boxes from cell centres and the (left, top, right, bottom) distances, both in pixels."""
    return torch.cat([centres - dist[..., :2], centres + dist[..., 2:]], -1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4), ``x1y1x2y2``: an (N, M) matrix.

    Example:
        >>> box_iou(torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 0., 3., 2.]])).item()
        0.3333333432674408
    """
    return _iou(a[:, None], b[None])


def _iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    return inter / (area_a + area_b - inter + eps)


def ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of broadcastable boxes (IoU minus centre-distance and aspect-ratio penalties), as Ultralytics."""
    iou = _iou(a, b, eps)
    outer = torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])
    diagonal = outer.pow(2).sum(-1) + eps
    centre = ((a[..., :2] + a[..., 2:]) - (b[..., :2] + b[..., 2:])).pow(2).sum(-1) / 4
    wa, ha = (a[..., 2] - a[..., 0]).clamp(min=eps), (a[..., 3] - a[..., 1]).clamp(min=eps)
    wb, hb = (b[..., 2] - b[..., 0]).clamp(min=eps), (b[..., 3] - b[..., 1]).clamp(min=eps)
    v = (4 / math.pi**2) * (torch.atan(wb / hb) - torch.atan(wa / ha)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + 1 + eps)
    return iou - centre / diagonal - v * alpha


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the boxes kept, highest score first.

    A box is dropped when its IoU with an already kept, higher-scoring box exceeds ``iou_threshold``.

    Example:
        >>> boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
        >>> nms(boxes, torch.tensor([0.9, 0.8, 0.7])).tolist()
        [0, 2]
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    overlap = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()
    suppressed, keep = np.zeros(len(order), dtype=bool), []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlap[i]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                iou_threshold: float = 0.5) -> torch.Tensor:
    """:func:`nms` within each class: boxes of different classes never suppress each other.

    Example:
        >>> boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
        >>> batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1])).tolist()
        [0, 1]
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    shift = classes.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)  # classes far apart
    return nms(boxes + shift, scores, iou_threshold)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, conf: float = 0.25, iou: float = 0.6,
            max_det: int = 100) -> list[torch.Tensor]:
    """Detections per image: ``(n, 6)`` rows ``[x1, y1, x2, y2, score, class]``, highest score first.

    The model runs in eval mode (restored afterwards); see :func:`postprocess` for the rest.

    Example:
        >>> from workbench import build_model
        >>> predict(build_model("n", "detect", nc=2), torch.zeros(2, 3, 64, 64), conf=0.0)[0].shape[1]
        6
    """
    head = detect_head(model)
    with eval_mode(model):
        outputs = model(images)
    return postprocess(outputs, head.stride.tolist(), images.shape[-2:], conf, iou, max_det, reg_max=head.reg_max)


@torch.no_grad()
def postprocess(outputs, strides: Sequence[float], image_size: Sequence[int], conf: float = 0.25, iou: float = 0.6,
                max_det: int = 100, *, reg_max: int) -> list[torch.Tensor]:
    """The head's outputs (see :func:`decode`) to detections: each cell votes for its best class, boxes scoring
    at most ``conf`` are dropped, boxes are clipped to the image, class-wise NMS at ``iou``, at most ``max_det``."""
    boxes, logits, _, _ = decode(outputs, strides, reg_max)
    h, w = image_size
    boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h),
                         boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], -1).float()
    scores, classes = logits.float().sigmoid().max(-1)
    out = []
    for b, s, c in zip(boxes, scores, classes):
        keep = s > conf
        b, s, c = b[keep], s[keep], c[keep]
        k = batched_nms(b, s, c, iou)[:max_det]
        out.append(torch.cat([b[k], s[k, None], c[k, None].to(b.dtype)], 1))
    return out


@torch.no_grad()
def assign(scores: torch.Tensor, boxes: torch.Tensor, centres: torch.Tensor, strides: torch.Tensor,
           targets: torch.Tensor, topk: int = 10, alpha: float = 0.5,
           beta: float = 6.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task-aligned assignment (Ultralytics' ``TaskAlignedAssigner``, simplified).

    Args:
        scores: (B, A, nc) predicted class probabilities; boxes: (B, A, 4) predicted boxes.
        centres, strides: (A, 2) cell centres and (A, 1) their strides, in pixels.
        targets: (B, M, 5) ``[class, x1, y1, x2, y2]``, class -1 for padding.

    Returns:
        target boxes (B, A, 4), target scores (B, A, nc) (0 off the assigned class; on it the
        cell's alignment scaled so the object's best cell gets its best IoU), foreground mask (B, A).
    """
    labels, gt = targets[..., 0].long(), targets[..., 1:]
    nc, m = scores.shape[-1], targets.shape[1]
    if m == 0:  # no object slots at all
        return torch.zeros_like(boxes), torch.zeros_like(scores), torch.zeros_like(scores[..., 0], dtype=torch.bool)
    centre_gt = (gt[..., :2] + gt[..., 2:]) / 2
    x, y, s = centres[:, 0], centres[:, 1], strides[:, 0]
    inside = ((x > gt[..., 0, None]) & (x < gt[..., 2, None]) & (y > gt[..., 1, None]) & (y < gt[..., 3, None]))
    holds_centre = (((x - centre_gt[..., 0, None]).abs() <= s / 2) & ((y - centre_gt[..., 1, None]).abs() <= s / 2))
    candidate = (inside | holds_centre) & (labels >= 0)[..., None]  # (B, M, A)
    overlaps = _iou(gt[:, :, None], boxes[:, None]) * candidate  # plain IoU: > 0 whenever the boxes meet
    cls_scores = scores.gather(2, labels.clamp(min=0)[:, None, :].expand(-1, scores.shape[1], -1)).transpose(1, 2)
    metric = cls_scores.pow(alpha) * overlaps.pow(beta) * candidate
    top = (metric + 1e-12 * candidate).topk(min(topk, metric.shape[-1]), dim=-1).indices  # candidates rank first
    mask = torch.zeros_like(candidate).scatter_(-1, top, True) & candidate
    several = mask.sum(1, keepdim=True) > 1  # a cell claimed by two objects keeps the one it overlaps most
    mask = torch.where(several, F.one_hot(overlaps.argmax(1), m).transpose(1, 2).bool(), mask)
    foreground, owner = mask.any(1), mask.to(torch.uint8).argmax(1)  # (B, A)
    target_boxes = gt.gather(1, owner[..., None].expand(-1, -1, 4))
    metric, overlaps = metric * mask, overlaps * mask
    scale = overlaps.amax(-1, keepdim=True) / (metric.amax(-1, keepdim=True) + 1e-9)
    quality = (metric * scale).amax(1)  # (B, A)
    target_labels = labels.gather(1, owner).clamp(min=0)
    target_scores = F.one_hot(target_labels, nc).to(scores.dtype) * (quality * foreground)[..., None]
    return target_boxes, target_scores, foreground


def dfl_loss(raw: torch.Tensor, target: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Distribution Focal Loss per cell, as Ultralytics' ``DFLoss``: (N, 4 * reg_max) logits, (N, 4) distances -> (N,).

    Each side's target distance (grid cells, clamped to ``[0, reg_max - 1.01]``) lies between two
    bins; the loss is the cross-entropy to each, weighted by how close the target is to it, then the
    mean over the four sides.

    Example:
        >>> raw = torch.zeros(1, 4 * 16)  # uniform bins: -log(1/16) whatever the target
        >>> round(dfl_loss(raw, torch.tensor([[2.5, 0.0, 3.0, 20.0]]), 16).item(), 4) == round(math.log(16), 4)
        True
    """
    target = target.clamp(0, reg_max - 1 - 0.01)
    left = target.long()
    w_left = left + 1 - target
    logits = raw.reshape(-1, reg_max)

    def cross_entropy(bins: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, bins.reshape(-1), reduction="none").view(left.shape)

    return (cross_entropy(left) * w_left + cross_entropy(left + 1) * (1 - w_left)).mean(-1)


class DetectionLoss:
    """``loss(outputs, targets)`` for a detection head: ``box * CIoU + cls * BCE (+ dfl * DFL)``, normalised.

    Each part is summed over cells and divided by the sum of the target scores, as Ultralytics does.
    ``box=7.5`` and ``dfl=1.5`` are Ultralytics' weights; the DFL term (:func:`dfl_loss`) exists
    for ``reg_max > 1`` heads (Ultralytics' and the workbench's default). ``cls=1.0`` doubles
    Ultralytics' 0.5: on short CPU runs the class term needs the weight (mAP@0.5 0.93 instead of
    0.70 for the light head's benchmark recipe). Works on the workbench's ``Detect`` and on
    Ultralytics' (its training dict or eval tuple, see :func:`decode`). ``last`` holds the parts
    of the last call, unweighted.

    Example:
        >>> from workbench import build_model
        >>> model = build_model("n", "detect", nc=2)
        >>> targets = torch.tensor([[[1.0, 8.0, 8.0, 30.0, 30.0]]])
        >>> loss = DetectionLoss(model)
        >>> loss(model(torch.zeros(2, 3, 64, 64)), targets.expand(2, -1, -1)).item() > 0, sorted(loss.last)
        (True, ['box', 'cls', 'dfl'])
    """

    def __init__(self, model: nn.Module, box: float = 7.5, cls: float = 1.0, dfl: float = 1.5, topk: int = 10):
        head = detect_head(model)
        self.strides, self.nc, self.reg_max = head.stride.tolist(), head.nc, head.reg_max
        self.box, self.cls, self.dfl, self.topk = box, cls, dfl, topk
        self.last: dict[str, float] = {}

    def __call__(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        flat, sizes = flatten_outputs(outputs)
        flat = flat.float()  # float32 under AMP too
        raw, logits = flat[..., :4 * self.reg_max], flat[..., 4 * self.reg_max:]
        centres, strides = _cells(sizes, self.strides, flat)
        boxes = _boxes(centres, box_distances(raw, self.reg_max) * strides)
        targets = targets.to(boxes.dtype)
        target_boxes, target_scores, foreground = assign(logits.detach().sigmoid(), boxes.detach(), centres,
                                                         strides, targets, topk=self.topk)
        total = target_scores.sum().clamp(min=1.0)
        cls = F.binary_cross_entropy_with_logits(logits, target_scores, reduction="sum") / total
        weight = target_scores.sum(-1)[foreground]
        box = ((1.0 - ciou(boxes[foreground], target_boxes[foreground])) * weight).sum() / total
        self.last = {"box": box.item(), "cls": cls.item()}
        if self.reg_max == 1:
            return self.box * box + self.cls * cls
        dfl = self._dfl(raw, centres, strides, target_boxes, foreground, weight) / total
        self.last["dfl"] = dfl.item()
        return self.box * box + self.cls * cls + self.dfl * dfl

    def _dfl(self, raw, centres, strides, target_boxes, foreground, weight) -> torch.Tensor:
        """The foreground cells' DFL, weighted by their target scores, summed."""
        batch = foreground.shape[0]
        centre, stride = centres.expand(batch, -1, -1)[foreground], strides.expand(batch, -1, -1)[foreground]
        goal = target_boxes[foreground]
        distances = torch.cat([centre - goal[:, :2], goal[:, 2:] - centre], -1) / stride  # grid cells
        return (dfl_loss(raw[foreground], distances, self.reg_max) * weight).sum()
