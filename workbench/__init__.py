"""Transfer Workbench: see what pretrained weights, transfer, freezing and warmup do to a network.

The public API is short and flat; each name is a concept the lessons teach.

Example:
    >>> import workbench as wb
    >>> model = wb.build_model(scale="n", task="classify", nc=3)
    >>> wb.layer_table(model).params > 0
    True
"""
from . import data
from .layers import numbered_layers
from .metrics import evaluate
from .models import build_model, init_weights, layer_table
from .optim import param_groups
from .training import History, fit, pick_device

__all__ = [
    "History",
    "build_model",
    "data",
    "evaluate",
    "fit",
    "init_weights",
    "layer_table",
    "numbered_layers",
    "param_groups",
    "pick_device",
]
__version__ = "0.1.0"
