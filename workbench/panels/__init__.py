"""ipywidgets panels: controls call primitives and show their plots. Every control is an attribute.

Each panel answers one question of a lesson; ``panel.state()`` saves its controls and seed as
JSON, ``Panel.from_state(state, ...)`` rebuilds it, and ``hide=[...]`` hides controls.

Example:
    >>> from workbench import build_model
    >>> panel = FreezePanel(build_model(), steps=0)
    >>> FreezePanel.from_state(panel.state(), build_model(), steps=0).state() == panel.state()
    True
"""
from .base import Panel, Throttle, refresh_figure
from .compare import ComparePanel
from .freeze import FreezeDepthPreview, FreezePanel, depth_summary, depth_table_html
from .init_explorer import InitExplorer, as_is_signal
from .sources import starting_model
from .studio import Studio
from .target import TargetPanel
from .train import TrainPanel
from .transfer import TransferPanel, parse_layer_map
from .warmup import WarmupPanel

__all__ = [
    "ComparePanel",
    "FreezeDepthPreview",
    "FreezePanel",
    "InitExplorer",
    "Panel",
    "Studio",
    "TargetPanel",
    "Throttle",
    "TrainPanel",
    "TransferPanel",
    "WarmupPanel",
    "as_is_signal",
    "depth_summary",
    "depth_table_html",
    "parse_layer_map",
    "refresh_figure",
    "starting_model",
]
