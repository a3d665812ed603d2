"""Transfer Workbench: see what pretrained weights, transfer, freezing and warmup do to a network.

The public API is short and flat; each name is a concept the lessons teach.

Example:
    >>> import workbench as wb
    >>> model = wb.build_model(scale="n", task="classify", nc=3)
    >>> wb.layer_table(model).params > 0
    True
"""
from . import data
from .checkpoints import inspect_checkpoint, load_weights, pretrained, save_weights
from .detection import predict
from .freezing import FreezeReport, bn_drift, freeze, unfreeze
from .layers import numbered_layers
from .metrics import evaluate, mean_average_precision
from .models import build_model, init_weights, layer_table
from .monitor import GradientMonitor, weight_drift
from .optim import param_groups
from .scenes import digit_scenes, shape_scenes
from .schedules import CosineWarmup, OneCycle, YoloSchedule
from .stability import signal_propagation, without_batchnorm
from .training import History, fit, pick_device
from .transfer import TransferReport, suggest_layer_map, transfer

__all__ = [
    "CosineWarmup",
    "FreezeReport",
    "GradientMonitor",
    "History",
    "OneCycle",
    "TransferReport",
    "YoloSchedule",
    "bn_drift",
    "build_model",
    "data",
    "digit_scenes",
    "evaluate",
    "fit",
    "freeze",
    "init_weights",
    "inspect_checkpoint",
    "layer_table",
    "load_weights",
    "mean_average_precision",
    "numbered_layers",
    "param_groups",
    "pick_device",
    "predict",
    "pretrained",
    "save_weights",
    "shape_scenes",
    "signal_propagation",
    "suggest_layer_map",
    "transfer",
    "unfreeze",
    "weight_drift",
    "without_batchnorm",
]
__version__ = "0.1.0"
