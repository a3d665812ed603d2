"""Back out again: a model's weights under Ultralytics' names, as safetensors an Ultralytics model loads.

The workbench numbers its layers ``layers.{i}``, Ultralytics ``model.{i}``; everything below the
layer index is already the same (``layers.4.m.0.cv1.conv.weight`` is ``model.4.m.0.cv1.conv.weight``).
:func:`export_ultralytics` renames the entries, writes them as safetensors (tensors and a JSON
header, nothing to execute: never a pickle) and keeps what an Ultralytics model needs to be built
for them in the header: ``nc``, ``names`` (when known), ``task``, ``scale``, input channels
``ch``, the ``yaml`` to build it from, and ``bn_eps``, the BatchNorm epsilon the weights were
trained with: Ultralytics' detectors use 1e-3, as the workbench does, but a
``ClassificationModel`` built from a YAML keeps torch's 1e-5, and its outputs differ slightly
from the workbench's until it is set.

Loading the file into Ultralytics (tested in ``tests/test_export.py``)::

    import torch
    from safetensors.torch import load_file
    from ultralytics.nn.tasks import ClassificationModel, DetectionModel
    from workbench.checkpoints import read_metadata  # or safetensors.safe_open(path, "pt").metadata()

    meta = read_metadata("finetuned.safetensors")
    Model = ClassificationModel if meta["task"] == "classify" else DetectionModel
    yolo = Model(meta["yaml"], ch=meta["ch"], nc=meta["nc"])
    yolo.load_state_dict(load_file("finetuned.safetensors"), strict=True)  # every entry, every shape
    for module in yolo.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = meta["bn_eps"]  # the epsilon the weights were trained with
    yolo.names = dict(enumerate(meta["names"]))  # when the export was given names

Example:
    >>> import tempfile
    >>> from workbench import build_model
    >>> path = export_ultralytics(build_model("n", "classify", nc=3), tempfile.mkdtemp() + "/yolo.safetensors",
    ...                           names=["circle", "square", "triangle"])
    >>> from workbench.checkpoints import load_weights, read_metadata
    >>> next(iter(load_weights(path))), read_metadata(path)["yaml"]
    ('model.0.conv.weight', 'yolov8n-cls.yaml')
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from .checkpoints import save_weights
from .files import writable_path
from .layer_map import align_layout, check_target_model, layer_prefixes

TASK_OF_CLASS = {"ClassificationModel": "classify", "DetectionModel": "detect"}  # Ultralytics' model classes
_FORMAT = "ultralytics state_dict"


def export_ultralytics(model: nn.Module, path: str | Path, *, names: Sequence[str] | None = None,
                       overwrite: bool = False) -> Path:
    """Write ``model``'s weights under Ultralytics' names (``model.{i}.…``) as a safetensors file.

    Args:
        model: a workbench model (``build_model``) or an Ultralytics model; its layers must be
            numbered in one list (``layers.{i}`` or ``model.{i}``), as Ultralytics numbers them.
        path: a ``.safetensors`` file name.
        names: the class names, one per class (Ultralytics' ``names``); defaults to the model's
            own ``names`` when it has them.
        overwrite: replace a file already at ``path`` (by default it is left as it is).

    Returns:
        The path written. Its metadata (``workbench.checkpoints.read_metadata``) holds ``nc``,
        ``names``, ``task``, ``scale``, ``ch``, ``yaml`` and ``bn_eps``; see the module docstring for the recipe that
        loads it into an Ultralytics model.

    Raises:
        ValueError: a model whose entries cannot be named as Ultralytics names them, a detector
            without Ultralytics' box head, names that do not fit, or a file that is not ``.safetensors``.
        FileExistsError: a file is already at ``path`` and ``overwrite`` is False.

    Example:
        >>> import tempfile
        >>> from workbench import build_model
        >>> path = export_ultralytics(build_model("n", "classify", nc=3), tempfile.mkdtemp() + "/y.safetensors")
        >>> path.suffix
        '.safetensors'
    """
    check_target_model(model, "model")
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite must be True or False (got {overwrite!r})")
    path = _checked_path(path, overwrite)
    state = ultralytics_state_dict(model)
    metadata = export_metadata(model, names)
    return save_weights(state, path, metadata=metadata)


def _checked_path(path, overwrite: bool) -> Path:
    path = writable_path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"export_ultralytics writes safetensors only (tensors, nothing to execute): name the file "
                         f"{path.with_suffix('.safetensors').name!r} instead of {path.name!r}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists and was left as it is: pass overwrite=True to replace it, "
                              "or choose another name")
    return path


def ultralytics_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict with its layers named ``model.{i}``, as an Ultralytics model names them.

    Example:
        >>> from workbench import build_model
        >>> list(ultralytics_state_dict(build_model("n", "classify", nc=3)))[-1]
        'model.9.linear.bias'
    """
    check_target_model(model, "model")
    state = model.state_dict()
    if any(t.is_meta for t in state.values()):
        raise ValueError(f"{type(model).__name__} holds shapes only (meta tensors, e.g. a manifest model): there are "
                         "no weights to export; export the model that was trained")
    prefixes = layer_prefixes(model)
    entries = {k: (k, v) for k, v in state.items()}
    ultralytics = {i: f"model.{i}" for i in prefixes}
    renamed, _, _ = align_layout(entries, prefixes, ultralytics)
    outside = [k for k in renamed if not k.startswith(tuple(f"{p}." for p in ultralytics.values()))]
    if outside or not renamed:
        example = (outside or list(state) or ["(no entries)"])[0]
        raise ValueError(
            f"export_ultralytics cannot name {type(model).__name__}'s entries as Ultralytics does: they must sit in "
            f"one numbered list of layers (build_model's layers.{{i}} or an Ultralytics model's model.{{i}}), but "
            f"{example!r} does not. Only an architecture Ultralytics can build from a YAML can load the file: build "
            "the model with workbench.build_model (or Ultralytics' own classes), or keep this model's weights with "
            "workbench.save_weights(model, path)")
    _check_detect_head(model, renamed)
    return {name: tensor for name, (_, tensor) in renamed.items()}


def _check_detect_head(model: nn.Module, entries: Mapping) -> None:
    """A workbench detector must have Ultralytics' box head (DFL) for Ultralytics' Detect to load it."""
    if getattr(model, "task", None) == "detect" and not any(k.endswith(".dfl.conv.weight") for k in entries):
        raise ValueError("this detector's box branch is not Ultralytics' (it has no DFL layer, 'dfl.conv.weight'), "
                         "so no Ultralytics Detect head can load it: build it with Ultralytics' head, "
                         "build_model(scale, task='detect', nc=...), and train that")


def export_metadata(model: nn.Module, names: Sequence[str] | None = None) -> dict:
    """What an Ultralytics model needs to be built for the exported weights: nc, names, task, scale, ch, yaml, bn_eps.

    Example:
        >>> from workbench import build_model
        >>> export_metadata(build_model("n", "classify", nc=2), names=["cat", "dog"])["names"]
        ['cat', 'dog']
    """
    spec = getattr(model, "yaml", None) if isinstance(getattr(model, "yaml", None), dict) else {}
    task = getattr(model, "task", None) or TASK_OF_CLASS.get(type(model).__name__)
    scale = getattr(model, "scale", None) or spec.get("scale")
    nc = getattr(model, "nc", None) or spec.get("nc")
    ch = getattr(model, "ch", None) or spec.get("channels")
    names = _checked_names(names if names is not None else getattr(model, "names", None), nc, given=names is not None)
    if nc is None and names is not None:
        nc = len(names)
    yaml = spec.get("yaml_file") or (_workbench_yaml(task, scale) if scale else None)
    eps = {m.eps for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    out = {"format": _FORMAT, "task": task, "scale": scale, "nc": nc, "names": names, "ch": ch, "yaml": yaml,
           "bn_eps": eps.pop() if len(eps) == 1 else None, "exported_from": type(model).__name__}
    return {k: v for k, v in out.items() if v is not None}


def _workbench_yaml(task: str | None, scale: str) -> str | None:
    """The Ultralytics YAML that builds the workbench's architecture (YOLOv8) at this scale."""
    return {"classify": f"yolov8{scale}-cls.yaml", "detect": f"yolov8{scale}.yaml"}.get(task)


def _checked_names(names, nc: int | None, given: bool) -> list[str] | None:
    """Class names as a list of strings (an Ultralytics ``{index: name}`` dict too), one per class."""
    if names is None:
        return None
    if isinstance(names, Mapping):
        if sorted(names) != list(range(len(names))):
            raise ValueError(f"names as a dict must map 0..n-1 to class names, got keys {sorted(names)[:8]}")
        names = [names[i] for i in range(len(names))]
    if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"names must be a list of class names (strings), e.g. ['cat', 'dog']; got {names!r}")
    if not given and names == [str(i) for i in range(len(names))]:
        return None  # Ultralytics' placeholders for a model built from a YAML: no names known
    if nc is not None and len(names) != nc:
        if not given:
            return None  # the model's own names are stale (e.g. placeholders of another class count)
        raise ValueError(f"names has {len(names)} names but the model has {nc} classes: give one name per class")
    return list(names)
