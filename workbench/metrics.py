"""Evaluation metrics: classification accuracy and loss over a data set.

Example:
    >>> import torch
    >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
    0.5
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows whose highest logit is the target class."""
    return (logits.argmax(1) == targets).float().mean().item()


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: torch.device | str = "cpu", loss_fn=F.cross_entropy) -> dict:
    """Mean loss and accuracy of a classifier over ``batches`` (an iterable of ``(x, y)``).

    The model is put in eval mode for the pass and returned to its previous mode.
    """
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            total_loss += loss_fn(logits, y).item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            n += len(y)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("the validation data set is empty")
    return {"loss": total_loss / n, "accuracy": correct / n}
