"""Pure plotting functions: a History or a report in, a figure out (plotly; matplotlib where static reads better).

No widgets here: panels call these and show the figures. Every function returns a new figure.

Example:
    >>> from workbench import History
    >>> fig = loss_curve(History(loss=[2.0, 1.5, 1.2], epoch=[0, 0, 1]))
    >>> list(fig.data[0].y)
    [2.0, 1.5, 1.2]
"""
from .curves import compare_runs, epoch_end_steps, loss_curve, lr_curves, training_dashboard
from .health import (
    bn_drift_bars,
    clip_value,
    drift_bars,
    grad_heatmap,
    grad_matrix,
    loss_plot,
    shared_scale,
    signal_plot,
)
from .layers import freeze_map, freeze_rows, transfer_map
from .results import accuracy_curves, sweep_bars
from .signals import signal_figure
from .studio import history_until, layer_rows, studio_figure

__all__ = [
    "accuracy_curves",
    "bn_drift_bars",
    "clip_value",
    "compare_runs",
    "drift_bars",
    "epoch_end_steps",
    "freeze_map",
    "freeze_rows",
    "grad_heatmap",
    "grad_matrix",
    "history_until",
    "layer_rows",
    "loss_curve",
    "loss_plot",
    "lr_curves",
    "shared_scale",
    "signal_figure",
    "signal_plot",
    "studio_figure",
    "sweep_bars",
    "training_dashboard",
    "transfer_map",
]
