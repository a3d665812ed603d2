"""Numbered layers of any ``nn.Module``: the common index that freezing, transfer and monitoring use.

Our models expose ``model.layers[i]`` tagged with a stage. Ultralytics and YOLOv5 models keep
their layers in ``model.model`` (an ``nn.Sequential``) and the architecture they were built from
in ``model.yaml``: its ``backbone`` list gives the backbone layers, its ``head`` list the rest,
whose last layer (Detect, Classify, ...) is the head and the others the neck. Any other module is
read as its top-level children, in order, and the last child that holds parameters is called the
head.

Example:
    >>> from workbench import build_model
    >>> [layer.stage for layer in numbered_layers(build_model())][-1]
    'head'
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

STAGES = ("backbone", "neck", "head")


@dataclass(frozen=True)
class Layer:
    """One numbered layer: its index, its state_dict prefix, its stage and the module itself."""

    index: int
    name: str
    stage: str
    module: nn.Module

    @property
    def type(self) -> str:
        return type(self.module).__name__


def _numbered_container(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The ModuleList/Sequential whose children are the numbered layers, if the model has one."""
    for attr in ("layers", "model"):
        child = getattr(model, attr, None)
        if isinstance(child, (nn.ModuleList, nn.Sequential)) and len(child) > 0:
            return attr, child
    return None


def _yaml_stages(model: nn.Module, n: int) -> list[str] | None:
    """Stages from an Ultralytics/YOLOv5 ``model.yaml`` dict, when its two lists describe the ``n`` layers.

    Example:
        >>> class Built(nn.Module):
        ...     yaml = {"backbone": [[-1, 1, "Conv", [16]]] * 2,
        ...             "head": [[-1, 1, "C2f", [16]], [-1, 1, "Classify", [3]]]}
        >>> _yaml_stages(Built(), 4)
        ['backbone', 'backbone', 'neck', 'head']
    """
    spec = getattr(model, "yaml", None)
    if not isinstance(spec, dict):
        return None
    backbone, head = spec.get("backbone"), spec.get("head")
    if not (isinstance(backbone, list) and isinstance(head, list) and head and len(backbone) + len(head) == n):
        return None
    return ["backbone"] * len(backbone) + ["neck"] * (len(head) - 1) + ["head"]


def numbered_layers(model: nn.Module) -> list[Layer]:
    """The model's layers in order, each with index, state_dict prefix and stage."""
    found = _numbered_container(model)
    if found is not None:
        prefix, children = found[0] + ".", list(found[1].named_children())
    else:
        prefix, children = "", list(model.named_children())
    if not children:
        return [Layer(0, "", "head", model)]
    with_params = [i for i, (_, m) in enumerate(children) if any(True for _ in m.parameters())]
    last = with_params[-1] if with_params else len(children) - 1
    from_yaml = _yaml_stages(model, len(children)) if found is not None else None
    layers = []
    for i, (name, module) in enumerate(children):
        default = from_yaml[i] if from_yaml else ("head" if i == last else "backbone")
        stage = getattr(module, "stage", None) or default
        layers.append(Layer(i, prefix + name, stage, module))
    return layers


def layer_index_of(name: str, layers: list[Layer]) -> int | None:
    """The index of the layer a parameter or buffer name belongs to (``None`` if it is outside them)."""
    for layer in layers:
        if layer.name == "" or name == layer.name or name.startswith(layer.name + "."):
            return layer.index
    return None
