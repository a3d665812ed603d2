"""Real Ultralytics architectures without the download: names and shapes only, as meta tensors.

The JSON files beside this module list every state_dict entry (name, shape, dtype, parameter or
buffer) and every numbered layer (type, stage) of ``yolov8n``, ``yolov8n-cls``, ``yolo11n`` and
``yolov10n``, as Ultralytics builds them from their YAMLs: the detectors at 80 classes (COCO)
and 3, the classifier at 1000 (ImageNet) and 3. ``tools/make_manifests.py`` writes them from an
installed Ultralytics; a test checks them against it.

:func:`manifest_model` turns a manifest into a module of meta tensors (shapes, no storage), laid
out as Ultralytics lays its models out (``model.{i}``), so :func:`workbench.transfer` with
``dry_run=True`` computes the ledger between real architectures with neither Ultralytics nor
weights installed, and allocates nothing.

Example:
    >>> from workbench import transfer
    >>> transfer(manifest_model("yolo11n"), manifest_model("yolo11n", nc=3), dry_run=True).headline
    'Transferred 448/499 items from pretrained weights'
    >>> transfer(manifest_model("yolov8n"), manifest_model("yolov10n"), dry_run=True).headline
    'Transferred 150/595 items from pretrained weights'
"""
from __future__ import annotations

import json
from functools import cache
from importlib import resources

import torch
from torch import nn

ARCHITECTURES = ("yolov8n", "yolov8n-cls", "yolo11n", "yolov10n")
__all__ = ["ARCHITECTURES", "ManifestLayer", "ManifestModel", "manifest_model", "manifest_state", "read_manifest"]


@cache
def _read(name: str) -> str:
    return (resources.files(__name__) / f"{name}.json").read_text()


def read_manifest(name: str) -> dict:
    """The manifest of one architecture: ``name``, ``yaml``, ``task``, ``nc``, ``layers``, ``entries``, ``other_nc``.

    Example:
        >>> read_manifest("yolov8n")["entries"][0]
        ['model.0.conv.weight', [16, 3, 3, 3], 'float32', 'parameter']
    """
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ValueError(f"no manifest named {name!r}; the shipped ones are {list(ARCHITECTURES)}")
    return json.loads(_read(name))


def _class_counts(manifest: dict) -> list[int]:
    return [manifest["nc"], *map(int, manifest["other_nc"])]


def _entries(manifest: dict, nc: int | None) -> list[tuple[str, list[int], str, str]]:
    """The entries at class count ``nc`` (the manifest's own count when ``None``)."""
    if nc is None or nc == manifest["nc"]:
        return [tuple(e) for e in manifest["entries"]]
    if isinstance(nc, bool) or not isinstance(nc, int) or str(nc) not in manifest["other_nc"]:
        raise ValueError(
            f"the {manifest['name']} manifest holds class counts {_class_counts(manifest)}, not nc={nc!r}: the "
            f"head's shapes depend on it. Add the count to ARCHITECTURES in tools/make_manifests.py and run it with "
            f"Ultralytics installed, or build the model itself ({manifest['yaml']!r})")
    shapes = manifest["other_nc"][str(nc)]
    return [(name, shapes.get(name, shape), dtype, kind) for name, shape, dtype, kind in manifest["entries"]]


def manifest_state(name: str, nc: int | None = None) -> dict[str, torch.Tensor]:
    """The architecture's state_dict as meta tensors (shapes and dtypes, no values, no memory).

    Example:
        >>> manifest_state("yolov8n-cls", nc=3)["model.9.linear.weight"]
        tensor(..., device='meta', size=(3, 1280))
    """
    return {key: _meta(shape, dtype) for key, shape, dtype, _ in _entries(read_manifest(name), nc)}


def _meta(shape: list[int], dtype: str) -> torch.Tensor:
    return torch.empty(shape, dtype=getattr(torch, dtype), device="meta")


class ManifestLayer(nn.Module):
    """A numbered layer that holds its entries' shapes only; subclassed once per layer type (``C2f``, ``Detect``)."""

    def forward(self, *args):
        raise RuntimeError(f"{type(self).__name__} in a manifest holds shapes, not weights: it cannot run. Build the "
                           "real model (Ultralytics, from the manifest's yaml) to run it")


@cache
def _layer_class(type_name: str) -> type:
    """A ``ManifestLayer`` subclass named as Ultralytics' layer class, so ledgers show ``C2f``, ``Detect``."""
    return type(type_name, (ManifestLayer,), {"__doc__": f"Shapes of an Ultralytics {type_name} layer."})


def _add_entry(layer: nn.Module, path: list[str], tensor: torch.Tensor, parameter: bool) -> None:
    """Register ``tensor`` under the dotted ``path`` inside ``layer``, creating empty modules on the way."""
    module = layer
    for part in path[:-1]:
        if not hasattr(module, part):
            module.add_module(part, nn.Module())
        module = getattr(module, part)
    if parameter:
        module.register_parameter(path[-1], nn.Parameter(tensor, requires_grad=tensor.is_floating_point()))
    else:
        module.register_buffer(path[-1], tensor)


class ManifestModel(nn.Module):
    """An Ultralytics architecture as meta tensors: its ``model.{i}`` layers, their types and stages, no weights.

    Its state_dict has the real model's names, shapes, dtypes and order; its numbered layers
    have the real types and stages. It cannot run: it is a source or target for ledgers
    (``workbench.transfer(..., dry_run=True)``).
    """

    def __init__(self, manifest: dict, nc: int | None = None):
        super().__init__()
        self.name, self.yaml_file, self.task = manifest["name"], manifest["yaml"], manifest["task"]
        self.nc = manifest["nc"] if nc is None else nc
        layers = [_layer_class(type_name)() for _, type_name, _ in manifest["layers"]]
        for layer, (index, _, stage) in zip(layers, manifest["layers"]):
            layer.i, layer.stage = index, stage
        for key, shape, dtype, kind in _entries(manifest, nc):
            _, index, *path = key.split(".")
            _add_entry(layers[int(index)], path, _meta(shape, dtype), kind == "parameter")
        self.model = nn.Sequential(*layers)

    def forward(self, *args):
        raise RuntimeError(f"the {self.name} manifest holds shapes, not weights: it cannot run. Build it with "
                           f"Ultralytics ({self.yaml_file!r}, nc={self.nc}) to run it")

    def __repr__(self) -> str:
        return f"ManifestModel({self.name!r}, nc={self.nc}, {len(self.state_dict())} entries, shapes only)"


def manifest_model(name: str, nc: int | None = None) -> ManifestModel:
    """A module of meta tensors laid out as Ultralytics' ``name`` at ``nc`` classes (default: its pretrained count).

    Args:
        name: one of ``ARCHITECTURES``: ``"yolov8n"``, ``"yolov8n-cls"``, ``"yolo11n"``, ``"yolov10n"``.
        nc: a class count the manifest holds (80 or 3 for the detectors, 1000 or 3 for the classifier).

    Example:
        >>> model = manifest_model("yolo11n", nc=3)
        >>> model, model.state_dict()["model.23.cv3.0.2.weight"].shape
        (ManifestModel('yolo11n', nc=3, 499 entries, shapes only), torch.Size([3, 64, 1, 1]))
    """
    return ManifestModel(read_manifest(name), nc)
