"""Evaluation metrics: classification accuracy and loss; detection mAP@0.5.

Example:
    >>> import torch
    >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
    0.5
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .detection import DetectionLoss, box_iou, detect_head, is_detector, postprocess
from .modes import eval_mode


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows whose highest logit is the target class."""
    return (logits.argmax(1) == targets).float().mean().item()


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: torch.device | str = "cpu", loss_fn=F.cross_entropy) -> dict:
    """Mean loss and accuracy of a classifier over ``batches`` (an iterable of ``(x, y)``).

    The model is put in eval mode for the pass and returned to its previous mode. A detector
    (a model with a Detect head) is evaluated by :func:`evaluate_detection` instead.
    """
    if is_detector(model):
        return evaluate_detection(model, batches, device)
    total_loss, correct, n = 0.0, 0, 0
    with eval_mode(model):
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            total_loss += loss_fn(logits, y).item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            n += len(y)
    if n == 0:
        raise ValueError("the validation data set is empty")
    return {"loss": total_loss / n, "accuracy": correct / n}


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision-recall curve with all-point interpolation (VOC 2010+, COCO).

    Precision at each recall is replaced by the best precision at that recall or beyond,
    then the area is summed over the recall steps.

    Example:
        >>> average_precision(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]))
        0.8333333333333333
    """
    r = np.concatenate([[0.0], recall, [recall[-1] if len(recall) else 0.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # the envelope: best precision at this recall or beyond
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def _objects(targets) -> list[torch.Tensor]:
    """Per image, the (m, 5) ``[class, x1, y1, x2, y2]`` rows that are objects (padding, class -1, dropped)."""
    return [t[t[:, 0] >= 0].detach().float().cpu() for t in targets]


def _match(pred: torch.Tensor, gt: torch.Tensor, iou_threshold: float) -> np.ndarray:
    """Per prediction (highest score first), whether it is a true positive: the best-overlapping
    object of its class not yet matched, with IoU >= ``iou_threshold`` (COCO's rule)."""
    tp = np.zeros(len(pred), dtype=bool)
    if len(pred) == 0 or len(gt) == 0:
        return tp
    iou = box_iou(pred[:, :4], gt[:, 1:]).numpy()
    iou[pred[:, 5].numpy()[:, None] != gt[:, 0].numpy()[None, :]] = -1.0
    free = np.ones(len(gt), dtype=bool)
    for i in np.argsort(-pred[:, 4].numpy(), kind="stable"):
        candidates = np.where(free, iou[i], -1.0)
        j = int(candidates.argmax())
        if candidates[j] >= iou_threshold:
            tp[i], free[j] = True, False
    return tp


def average_precisions(predictions: Sequence[torch.Tensor], targets, iou_threshold: float = 0.5) -> dict[int, float]:
    """AP per class that has objects: ``{class: AP}`` at one IoU threshold.

    Args:
        predictions: per image, ``(n, 6)`` rows ``[x1, y1, x2, y2, score, class]`` (as :func:`predict`).
        targets: per image, ``(m, 5)`` rows ``[class, x1, y1, x2, y2]``; a padded ``(N, M, 5)``
            tensor with class -1 in empty slots works too.
        iou_threshold: a prediction is a true positive when it overlaps an unmatched object of its
            class at least this much; a second detection of a matched object is a false positive.

    Classes without objects are left out (COCO and VOC do the same); a class with objects but no
    predictions scores 0.
    """
    objects = _objects(targets)
    if len(predictions) != len(objects):
        raise ValueError(f"got predictions for {len(predictions)} images but targets for {len(objects)}")
    scores, hits, labels = [], [], []
    for pred, gt in zip(predictions, objects):
        pred = pred.detach().float().cpu()
        scores.append(pred[:, 4].numpy())
        labels.append(pred[:, 5].numpy())
        hits.append(_match(pred, gt, iou_threshold))
    scores, hits, labels = np.concatenate(scores), np.concatenate(hits), np.concatenate(labels)
    counts = np.bincount(torch.cat([gt[:, 0] for gt in objects]).long().numpy()) if objects else np.zeros(0)
    result = {}
    for c in np.flatnonzero(counts):
        rows = np.flatnonzero(labels == c)
        tp = hits[rows[np.argsort(-scores[rows], kind="stable")]]
        true_pos = np.cumsum(tp)
        precision = true_pos / np.arange(1, len(tp) + 1)
        result[int(c)] = average_precision(true_pos / counts[c], precision)
    return result


def mean_average_precision(predictions: Sequence[torch.Tensor], targets, iou_threshold: float = 0.5) -> float:
    """mAP: the mean over classes of :func:`average_precisions` (mAP@0.5 by default).

    Example:
        >>> truth = torch.tensor([[[0.0, 0, 0, 10, 10], [1.0, 20, 20, 30, 30]]])
        >>> found = [torch.tensor([[0.0, 0, 10, 10, 0.9, 0], [0, 0, 10, 10, 0.8, 0]])]
        >>> mean_average_precision(found, truth)  # class 0 found (AP 1), class 1 missed (AP 0)
        0.5
    """
    ap = average_precisions(predictions, targets, iou_threshold)
    return float(np.mean(list(ap.values()))) if ap else 0.0


@torch.no_grad()
def evaluate_detection(model: nn.Module, batches, device: torch.device | str = "cpu", loss_fn=None,
                       conf: float = 0.001, iou: float = 0.6) -> dict:
    """Mean loss and mAP@0.5 of a detector over ``batches`` of ``(images, padded targets)``.

    Predictions keep every box scoring above ``conf`` after NMS at ``iou`` (as Ultralytics'
    validation: a low threshold, so the whole precision-recall curve is measured). The head's eval
    outputs are decoded by :func:`~workbench.detection.decode`, an Ultralytics ``Detect``'s too.
    """
    loss_fn = loss_fn or DetectionLoss(model)
    head = detect_head(model)
    strides = head.stride.tolist()
    total_loss, n, predictions, objects = 0.0, 0, [], []
    with eval_mode(model):
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            outputs = model(x)
            total_loss += loss_fn(outputs, y).item() * len(y)
            predictions += postprocess(outputs, strides, x.shape[-2:], conf=conf, iou=iou, reg_max=head.reg_max)
            objects += _objects(y)
            n += len(y)
    if n == 0:
        raise ValueError("the validation data set is empty")
    return {"loss": total_loss / n, "mAP50": mean_average_precision(predictions, objects)}
