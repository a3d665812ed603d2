"""Transfer Workbench: see what pretrained weights, transfer, freezing and warmup do to a network.

The public API is short and flat (at most 20 names); each name is a concept the lessons teach.
The modules hold the rest: ``workbench.schedules`` (``CosineWarmup``, ``OneCycle``),
``workbench.freezing`` (``FreezeReport``), ``workbench.models`` (``init_weights``),
``workbench.scenes`` (``shape_scenes``), ``workbench.training`` (``Optim``, ``Freeze``),
``workbench.manifests`` (``manifest_model``), ``workbench.folders`` (``load_yolo_folder``,
``load_class_folder`` and their writers), ``workbench.metrics`` (``evaluate``), ``workbench.runs``,
``workbench.monitor``, ``workbench.detection``, ``workbench.stability``, ...

Example:
    >>> import workbench as wb
    >>> model = wb.build_model(scale="n", task="classify", nc=3)
    >>> wb.layer_table(model).params > 0
    True
"""
from . import data, folders  # noqa: F401  (folders: importable as wb.folders, outside the 20 names)
from .checkpoints import inspect_checkpoint, load_weights, pretrained, save_weights
from .export import export_ultralytics
from .freezing import bn_drift, freeze, unfreeze
from .i18n import set_language
from .layers import numbered_layers
from .metrics import evaluate  # noqa: F401  (importable, outside the 20 names)
from .models import build_model, layer_table
from .optim import param_groups
from .schedules import YoloSchedule
from .training import History, fit
from .transfer import TransferReport, suggest_layer_map, transfer

__all__ = [
    "History",
    "TransferReport",
    "YoloSchedule",
    "bn_drift",
    "build_model",
    "data",
    "export_ultralytics",
    "fit",
    "freeze",
    "inspect_checkpoint",
    "layer_table",
    "load_weights",
    "numbered_layers",
    "param_groups",
    "pretrained",
    "save_weights",
    "set_language",
    "suggest_layer_map",
    "transfer",
    "unfreeze",
]
__version__ = "0.1.0"
