"""Safe checkpoints: save and load state_dicts without ever running code from a file.

``.safetensors`` is preferred: a JSON header and raw tensor bytes, nothing to execute, and a
string-to-string metadata block that holds the recipe, class names and accuracy. ``.pt`` files
are read through ``torch.load(weights_only=True)``; a whole-model checkpoint (Ultralytics,
YOLOv5) through :mod:`workbench.yolo_checkpoints`, which reads its model classes as inert data
and refuses, naming it, any other global a pickle would call. :func:`inspect_checkpoint` lists
what a pickle references by reading its opcodes. The format is recognised from the file's first
bytes, not its name.

Example:
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/w.safetensors"
    >>> _ = save_weights(torch.nn.Linear(2, 1), path, metadata={"classes": ["cat"]})
    >>> sorted(load_weights(path)), read_metadata(path)["classes"]
    (['bias', 'weight'], ['cat'])
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .files import writable_path, write_atomically
from .models import build_model
from .pickle_scan import pickle_globals, pickle_streams, weights_only_globals
from .yolo_checkpoints import UnsafeGlobal, YoloCheckpoint, as_yolo_checkpoint, kind_of_global, unpickle_inert

FORMATS = ("safetensors", "torch-zip", "pickle")
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "ema")  # where checkpoints nest their weights
PRETRAINED = {"shapes_n": "shapes_n.safetensors",  # shipped in workbench/weights/
              "shapes_detect_n": "shapes_detect_n.safetensors"}
SUMMARY_KEYS = ("names", "nc", "task", "model_class", "weights_from", "stored_dtype", "version", "date", "epoch")
# what a pickle built from allowed pieces, but wrongly (truncated, corrupt, crafted), raises
_BAD_PICKLE = (pickle.UnpicklingError, ValueError, TypeError, AttributeError, EOFError, zipfile.BadZipFile, KeyError,
               RuntimeError)
_ZIP_MAGIC, _PICKLE_PROTO = b"PK\x03\x04", 0x80
_ORDER_KEY = "__state_dict_order__"  # safetensors sorts its entries; the state_dict order is kept here


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely: truncated, corrupt, or in need of code to run."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint holds, read without executing it.

    ``globals`` are the ``module.name`` references a pickle makes (empty for safetensors);
    ``inert`` are the model classes read as inert data (Ultralytics, YOLOv5, ``torch.nn``);
    ``needs_code`` are those no reader allows: loading them would run code named by the file.
    """

    path: str
    format: str
    globals: tuple[str, ...] = ()
    needs_code: tuple[str, ...] = ()
    inert: tuple[str, ...] = ()
    tensors: int | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def safe(self) -> bool:
        return not self.needs_code

    def __str__(self) -> str:
        lines = [f"{self.path}: {self.format}, " + ("safe to load" if self.safe else "needs code to load")]
        if self.tensors is not None:
            lines.append(f"  tensors: {self.tensors}")
        notes = {**dict.fromkeys(self.inert, "   <- read as inert data"),
                 **dict.fromkeys(self.needs_code, "   <- refused: calling it could run code")}
        lines += [f"  references {g}{notes.get(g, '')}" for g in self.globals]
        lines += [f"  metadata {k}: {v}" for k, v in self.metadata.items()]
        return "\n".join(lines)


def _state_dict(source: nn.Module | dict) -> dict[str, torch.Tensor]:
    if isinstance(source, nn.Module):
        return source.state_dict()
    if isinstance(source, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in source.items()):
        return source
    raise ValueError("save_weights needs an nn.Module or a state_dict (a dict of str -> Tensor); "
                     f"got {type(source).__name__}")


def save_weights(source: nn.Module | dict, path: str | Path, *, metadata: dict | None = None,
                 dtype: torch.dtype | None = None) -> Path:
    """Save a model's (or a state_dict's) tensors; ``.safetensors`` unless the name ends in ``.pt``/``.pth``.

    Args:
        source: an ``nn.Module`` or a state_dict.
        path: the file to write.
        metadata: JSON-serialisable values (recipe, class names, accuracy), kept in the file.
        dtype: cast floating tensors (e.g. ``torch.float16`` halves the file); integer buffers stay.

    Example:
        >>> import tempfile
        >>> save_weights(nn.Linear(2, 1), tempfile.mkdtemp() + "/w.safetensors").suffix
        '.safetensors'
    """
    path = writable_path(path)
    metadata = _metadata_strings(metadata)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch dtype such as torch.float16, or None (got {dtype!r})")
    tensors = {}
    seen = set()
    for name, tensor in _state_dict(source).items():
        tensor = tensor.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        if tensor.data_ptr() in seen and tensor.numel():
            tensor = tensor.clone()  # safetensors stores every tensor on its own: untie shared ones
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.contiguous()
    if path.suffix in (".pt", ".pth"):
        write_atomically(path, lambda tmp: torch.save({"state_dict": tensors, "metadata": metadata}, tmp))
    else:
        order = {**metadata, _ORDER_KEY: json.dumps(list(tensors))}
        write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=order))
    return path


def _metadata_strings(metadata) -> dict[str, str]:
    """Every metadata value as its JSON text; a ValueError naming the first key whose value is not JSON-able."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict of JSON-serialisable values, got {type(metadata).__name__}")
    out = {}
    for key, value in metadata.items():
        try:
            out[str(key)] = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"metadata[{key!r}] cannot be saved as JSON ({err}): use str, int, float, bool, None, "
                             f"lists and dicts of those, e.g. a tensor as tensor.tolist()") from None
    if _ORDER_KEY in out:
        raise ValueError(f"metadata key {_ORDER_KEY!r} is reserved by the workbench: rename it")
    return out


def _natural(key: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in key.split(".")]


def _in_saved_order(tensors: dict, metadata: dict | None) -> dict:
    """Entries in the order they were saved (files from other tools: natural order, ``layers.2`` before ``.10``)."""
    try:
        order = json.loads((metadata or {})[_ORDER_KEY])
    except (KeyError, ValueError):
        order = []
    if sorted(order) != sorted(tensors):
        order = sorted(tensors, key=_natural)
    return {k: tensors[k] for k in order}


def _readable(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a file name (str or Path), got {type(path).__name__}")
    return Path(path)


def _sniff(path: Path) -> str:
    """The checkpoint format from its first bytes (``FileNotFoundError`` if there is no file)."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file: give the path of a .safetensors or .pt")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; the shipped weights are at pretrained_path('shapes_n')")
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(_ZIP_MAGIC):
        return "torch-zip"
    # safetensors before pickle: its header length (little-endian) may well start with the byte 0x80
    if len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size:
        return "safetensors"
    if head[:1] and head[0] == _PICKLE_PROTO:
        return "pickle"
    raise CheckpointError(f"{path} is not a checkpoint this workbench reads (safetensors, or a torch .pt): "
                          f"it starts with {head!r}; the file may be empty, truncated or of another kind")


def _decode(metadata: dict | None) -> dict:
    out = {}
    for key, value in (metadata or {}).items():
        if key == _ORDER_KEY:
            continue
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value  # written by another tool: keep the raw string
    return out


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    """The state_dict inside a loaded ``.pt`` object (plain, nested under a usual key, or a whole model)."""
    if isinstance(obj, YoloCheckpoint):
        return obj.state_dict
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), dict):
                return _unwrap(obj[key], path)
    keys = f" with keys {list(obj)[:8]}" if isinstance(obj, dict) else ""
    raise CheckpointError(f"{path} loaded, but holds no state_dict (a dict of name -> tensor); "
                          f"found {type(obj).__name__}{keys}")


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state_dict from ``.safetensors``, a ``.pt`` state_dict, or an Ultralytics/YOLOv5 ``.pt``.

    A whole-model ``.pt`` gives its model's state_dict under the file's own names
    (``model.0.conv.weight``), the ``ema`` model first as Ultralytics loads it, half cast to float32.

    Raises:
        CheckpointError: (a ``ValueError``) the file is truncated or corrupt, holds no state_dict,
            or is a pickle that would call code to load (the message names it; nothing ran).

    Example:
        >>> import tempfile
        >>> path = save_weights({"w": torch.ones(2)}, tempfile.mkdtemp() + "/w.pt")
        >>> load_weights(path)["w"].tolist()
        [1.0, 1.0]
    """
    path = _readable(path)
    kind = _sniff(path)
    if kind == "safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata()
            return _in_saved_order(load_file(str(path)), metadata)
        except Exception as err:  # safetensors raises its own error types for a bad header or short data
            raise CheckpointError(f"{path} is a truncated or corrupt safetensors file ({err}); "
                                  "download or save it again") from err
    return _unwrap(_torch_load(path), path)


def _torch_load(path: Path):
    """``torch.load(weights_only=True)``, else the inert reader; a refusal in our words, never torch's advice."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return _read_inert(path)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(_corrupt_message(path, err)) from None


def _corrupt_message(path: Path, err: Exception) -> str:
    first = (str(err).strip().splitlines() or [""])[0]
    detail = type(err).__name__ + ("" if "weights_only" in first or not first else f": {first}")
    return f"{path} is a truncated or corrupt torch checkpoint ({detail}); download or save it again"


def _read_inert(path: Path):
    """A pickle that ``weights_only`` refuses: a whole model read as inert data, or a refusal naming the global."""
    if _sniff(path) != "torch-zip":
        info = inspect_checkpoint(path)
        if info.needs_code:
            raise CheckpointError(_needs_code_message(path, info.needs_code, zip_format=False))
        raise CheckpointError(f"{path} is a pickle that the safe loader cannot read (it uses opcodes or objects a "
                              "plain state_dict does not need); save its weights again with workbench.save_weights "
                              "where it was made")
    try:
        obj = unpickle_inert(path)
        return as_yolo_checkpoint(obj) or obj
    except UnsafeGlobal as err:
        raise CheckpointError(_needs_code_message(path, (err.name,))) from None
    except _BAD_PICKLE as err:
        raise CheckpointError(_corrupt_message(path, err)) from None


def _needs_code_message(path: Path, names, zip_format: bool = True) -> str:
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    why = (", which is neither a tensor, a container nor a model class read as inert data; unpickling would call it"
           if zip_format else "; unpickling this older pickle format would import and call them (whole-model "
           "checkpoints are read as inert data only in torch's zip format, torch.save's default since torch 1.6)")
    return (f"{path} needs code to load: it references {shown}{why}. The workbench refused the file; nothing from "
            "it ran. A checkpoint needs no such call: if the file is yours, save its weights again with "
            "workbench.save_weights(model, 'weights.safetensors') where it was made. "
            "workbench.inspect_checkpoint(path) lists everything the file references.")


def read_metadata(path: str | Path) -> dict:
    """The metadata saved with :func:`save_weights` (JSON values decoded), without loading the tensors.

    For an Ultralytics or YOLOv5 ``.pt``: class ``names``, ``nc``, ``task``, ``yaml``, ``train_args``,
    ``version``, ``date``, ... as :class:`~workbench.yolo_checkpoints.YoloCheckpoint` describes
    (the file is read whole).

    Example:
        >>> read_metadata(pretrained_path())["task"]
        'classify'
    """
    path = _readable(path)
    if _sniff(path) == "safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                return _decode(f.metadata())
        except Exception as err:
            raise CheckpointError(f"{path} is a truncated or corrupt safetensors file ({err})") from err
    obj = _torch_load(path)
    if isinstance(obj, YoloCheckpoint):
        return obj.metadata
    return _decode(obj.get("metadata")) if isinstance(obj, dict) else {}


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """What a checkpoint references and holds, found without executing anything in it.

    For a pickle (``.pt``), the opcodes are read with :mod:`pickletools`; every global it would
    import is listed, and those that no reader allows are flagged. A whole-model checkpoint
    (Ultralytics, YOLOv5) is then read as inert data for its tensor count and a summary
    (``names``, ``nc``, ``task``, ``version``, ...); the full metadata is :func:`read_metadata`'s.

    Example:
        >>> import tempfile
        >>> path = save_weights({"w": torch.ones(2)}, tempfile.mkdtemp() + "/w.pt")
        >>> inspect_checkpoint(path).safe
        True
    """
    path = _readable(path)
    kind = _sniff(path)
    if kind == "safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                return CheckpointInfo(str(path), kind, tensors=len(list(f.keys())), metadata=_decode(f.metadata()))
        except Exception as err:
            raise CheckpointError(f"{path} is a truncated or corrupt safetensors file ({err})") from err
    try:
        names = tuple(dict.fromkeys(g for data in pickle_streams(path, kind) for g in pickle_globals(data)))
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise CheckpointError(f"{path} is a truncated or corrupt torch zip checkpoint ({err})") from err
    inert = tuple(g for g in names if kind == "torch-zip" and kind_of_global(g) == "record")
    if not inert:  # torch.load(weights_only=True) reads it, or nothing does
        allowed = weights_only_globals()
        return CheckpointInfo(str(path), kind, names, tuple(g for g in names if g not in allowed))
    return _inspect_inert(CheckpointInfo(str(path), kind, names, tuple(g for g in names if not kind_of_global(g)),
                                         inert))


def _inspect_inert(info: CheckpointInfo) -> CheckpointInfo:
    """A whole-model checkpoint's tensor count and summary, read as inert data, unless a global is refused."""
    if info.needs_code:
        return info
    try:
        ckpt = as_yolo_checkpoint(unpickle_inert(info.path))
    except UnsafeGlobal as err:  # hidden from the opcode scan, found by the reader before anything ran
        return replace(info, needs_code=(*info.needs_code, err.name))
    except _BAD_PICKLE as err:
        raise CheckpointError(_corrupt_message(Path(info.path), err)) from None
    if ckpt is None:
        return info
    summary = {k: ckpt.metadata[k] for k in SUMMARY_KEYS if ckpt.metadata.get(k) is not None}
    return replace(info, tensors=len(ckpt.state_dict), metadata=summary)


def pretrained_path(name: str = "shapes_n") -> Path:
    """The path of a weights file shipped inside the package."""
    if not isinstance(name, str) or name not in PRETRAINED:
        raise ValueError(f"unknown pretrained weights {name!r}; choose one of {sorted(PRETRAINED)}")
    path = Path(str(resources.files("workbench") / "weights" / PRETRAINED[name]))
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; recreate it with `python -m workbench.pretrain`")
    return path


def pretrained(name: str = "shapes_n") -> nn.Module:
    """The model the shipped weights belong to, with them loaded; ``model.pretrained_info`` holds the metadata.

    ``pretrained_info`` has the recipe, the class names (``"classes"``), the seed, the source
    validation accuracy (``source_val_mAP50`` for the detector ``"shapes_detect_n"``, whose head is
    the light ``reg_max=1`` one, recorded as ``"reg_max"``) and the torch version that produced the
    file (``python -m workbench.pretrain --name NAME``).

    Example:
        >>> model = pretrained("shapes_n")
        >>> model.pretrained_info["classes"][:3], model.nc
        (['circle', 'square', 'triangle'], 10)
    """
    path = pretrained_path(name)
    info = read_metadata(path)
    head = {"reg_max": info.get("reg_max", 1)} if info["task"] == "detect" else {}  # files before DFL: light head
    model = build_model(info["scale"], info["task"], nc=len(info["classes"]), ch=info.get("ch", 3), **head)
    model.load_state_dict(load_weights(path))
    model.pretrained_info = info
    return model
