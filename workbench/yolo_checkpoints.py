"""Read Ultralytics and YOLOv5 ``.pt`` checkpoints without running anything from them.

These files pickle whole models (``ultralytics.nn.tasks.DetectionModel``, ``models.yolo.Model``),
so ``torch.load(weights_only=True)`` refuses them and their own tools load them with
``weights_only=False``, which runs whatever the file asks. This reader unpickles the torch zip
file (``<archive>/data.pkl`` and the raw storages under ``<archive>/data/<key>``) with a
restricted :class:`pickle.Unpickler`:

- every class of the checkpoint's own packages (``ultralytics``, ``models``, ``utils``) and every
  ``nn.Module`` class of ``torch.nn`` becomes an :class:`InertRecord`: a plain object holding the
  class's qualified name and the pickled attributes; nothing is imported, no ``__init__`` or
  ``__setstate__`` of theirs runs;
- tensors are rebuilt only through ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter``
  from the file's storages, with containers (``OrderedDict``, ``set``), torch dtypes, sizes and
  devices, pure paths and numpy scalars (:data:`ALLOWED`);
- any other global (``os.system``, ``builtins.eval``, ``subprocess.run``, ...) is refused with
  :class:`UnsafeGlobal`, which names it, before it could be called.

The inert module tree (``_modules``, ``_parameters``, ``_buffers``) is then walked into a state
dict with the file's own names (``model.0.conv.weight``), half precision cast to float32.

Example:
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/m.pt"
    >>> torch.save({"model": torch.nn.Sequential(torch.nn.Linear(2, 1)).half(), "epoch": 3}, path)
    >>> ckpt = read_yolo_checkpoint(path)
    >>> list(ckpt.state_dict), ckpt.state_dict["0.weight"].dtype, ckpt.metadata["epoch"]
    (['0.weight', '0.bias'], torch.float32, 3)
"""
from __future__ import annotations

import codecs
import io
import pickle
import sys
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import torch
from torch import nn

from .pickle_scan import python3_name

OWN_PACKAGES = ("ultralytics", "models", "utils")  # Ultralytics; YOLOv5's models.yolo, models.common, utils.*
MODEL_KEYS = ("ema", "model")  # where the model is kept, in the order Ultralytics and YOLOv5 read them
SKIPPED_KEYS = {"model", "ema", "optimizer", "modelopt"}  # models and optimiser state: not metadata
TASKS = {"DetectionModel": "detect", "Model": "detect",  # YOLOv5 names its detector models.yolo.Model
         "ClassificationModel": "classify", "SegmentationModel": "segment", "PoseModel": "pose", "OBBModel": "obb"}
PLAIN_NUMEL = 64  # metadata shows tensors up to this size as lists (a stride), larger ones by shape
MAX_DEPTH = 64  # module nesting beyond this is not a model (real YOLO trees are about 6 deep)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """How protocol 2 pickles ``bytes``: ``_codecs.encode(text, 'latin1')``; no other codec is allowed."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode is allowed only as (str, 'latin1'), got encoding {encoding!r}")
    return codecs.encode(text, "latin1")


def _numpy_scalar(dtype, data=None):
    """``numpy`` scalars (a ``best_fitness`` of ``np.float64``) rebuilt from their bytes; object scalars refused."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("a numpy scalar may hold only plain numbers (no Python objects)")
    return np.frombuffer(data, dtype=dtype)[0].copy()


def _numpy_dtype(spec, align=False, copy=True) -> np.dtype:
    """``numpy.dtype`` from its pickled name, always a fresh copy (never numpy's shared instance)."""
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"a numpy dtype is rebuilt only from its name, got {type(spec).__name__}")
    return np.dtype(spec, bool(align), True)


ALLOWED = {
    "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.complex": complex,
    "_codecs.encode": _latin1_bytes,
    "torch.Size": torch.Size,
    "torch.device": torch.device,
    "pathlib.PosixPath": PurePosixPath,  # pure paths: they never touch the file system
    "pathlib.WindowsPath": PureWindowsPath,
    "pathlib.PurePosixPath": PurePosixPath,
    "pathlib.PureWindowsPath": PureWindowsPath,
    "pathlib._local.PosixPath": PurePosixPath,
    "pathlib._local.WindowsPath": PureWindowsPath,
    "numpy.dtype": _numpy_dtype,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
}


class _Handle:
    """A fresh handle on an allowed callable for one read: calling it calls the callable; ``BUILD`` on it is refused.

    The pickle never holds torch's or numpy's own function, so it cannot set attributes on them.
    """

    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"the pickle tries to change {self.function.__qualname__}: refused")


class UnsafeGlobal(pickle.UnpicklingError):
    """The pickle names a global the reader does not allow; ``name`` is it (``"posix.system"``)."""

    def __init__(self, name: str):
        super().__init__(f"refused global {name}: it is not a tensor, a container or a model class, "
                         "and calling it could run code")
        self.name = name


class InertRecord:
    """A pickled object kept as data: ``qualname`` of its class, ``args`` it was built with, pickled ``state``."""

    qualname = "?"
    args: tuple = ()
    state = None

    def __init__(self, *args, **kwargs):
        self.args = args + ((kwargs,) if kwargs else ())

    def __setstate__(self, state):
        self.state = state

    @property
    def attributes(self) -> dict:
        """The pickled attributes (``__dict__``), or ``{}`` if the state is not a dict."""
        state = self.state[0] if isinstance(self.state, tuple) and self.state else self.state
        return state if isinstance(state, dict) else {}

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


@dataclass(frozen=True)
class _StorageDtype:
    """What a storage class names in a pickle: only its dtype (the class itself is never called)."""

    dtype: torch.dtype


def _torch_attribute(module: str, name: str):
    """A dtype or storage class named ``torch.<name>`` (as :class:`_StorageDtype`), else ``None``."""
    if module != "torch" or not name.isidentifier():
        return None
    value = getattr(torch, name, None)
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, type) and issubclass(value, torch.UntypedStorage):
        return _StorageDtype(torch.uint8)
    if isinstance(value, type) and issubclass(value, torch.storage.TypedStorage) and value is not torch.TypedStorage:
        with warnings.catch_warnings():  # legacy storage classes warn that they are deprecated
            warnings.simplefilter("ignore", UserWarning)
            return _StorageDtype(value.dtype)
    return None


def _is_torch_nn_module(module: str, name: str) -> bool:
    """``torch.nn....Name`` is an ``nn.Module`` class already imported with torch (nothing is imported here)."""
    if not (module == "torch.nn" or module.startswith("torch.nn.")) or not name.isidentifier():
        return False
    value = getattr(sys.modules.get(module), name, None)
    return isinstance(value, type) and issubclass(value, nn.Module)


def kind_of_global(qualified: str) -> str | None:
    """How the reader treats a global the pickle names: ``"allowed"``, ``"record"`` (inert), or ``None`` (refused).

    Example:
        >>> kind_of_global("ultralytics.nn.tasks.DetectionModel"), kind_of_global("posix.system")
        ('record', None)
    """
    module, _, name = qualified.rpartition(".")
    module, name = python3_name(module, name)
    if f"{module}.{name}" in ALLOWED or _torch_attribute(module, name) is not None:
        return "allowed"
    if module.split(".")[0] in OWN_PACKAGES or _is_torch_nn_module(module, name):
        return "record"
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch zip checkpoint's ``data.pkl``: allowed globals, inert records, storages from ``archive``."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix = archive, prefix
        self._records: dict[str, type] = {}
        self._storages: dict[str, torch.storage.TypedStorage] = {}

    def find_class(self, module: str, name: str):
        module, name = python3_name(module, name)
        qualified = f"{module}.{name}"
        if qualified in ALLOWED:
            return _Handle(ALLOWED[qualified])
        value = _torch_attribute(module, name)
        if value is not None:
            return value
        if kind_of_global(qualified) == "record":
            if qualified not in self._records:
                self._records[qualified] = type(name, (InertRecord,), {"qualname": qualified})
            return self._records[qualified]
        raise UnsafeGlobal(qualified)

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and len(saved_id) == 5 and saved_id[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unknown persistent id {str(saved_id)[:80]}: not a torch storage")
        _, storage_type, key, _location, numel = saved_id
        if not isinstance(storage_type, _StorageDtype) or not isinstance(numel, int):
            raise pickle.UnpicklingError(f"storage {key!r} names no torch storage type")
        key = key.decode() if isinstance(key, bytes) else str(key)
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, storage_type.dtype, numel)
        return self._storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.storage.TypedStorage:
        raw = bytearray(self._archive.read(f"{self._prefix}/data/{key}"))
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) != numel * itemsize:
            raise pickle.UnpicklingError(f"storage {key} holds {len(raw)} bytes, not {numel} x {itemsize}: "
                                         "the file is truncated or corrupt")
        flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        return torch.storage.TypedStorage(wrap_storage=flat.untyped_storage(), dtype=dtype, _internal=True)


def _data_pickle(archive: zipfile.ZipFile) -> str:
    """The prefix of the torch zip's ``<prefix>/data.pkl`` (``archive``, or the saved file's stem)."""
    names = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(names) != 1:
        raise pickle.UnpicklingError(f"a torch zip checkpoint has one <archive>/data.pkl; found {names or 'none'}")
    prefix = names[0].split("/")[0]
    byteorder = f"{prefix}/byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder).strip() not in (b"little", b""):
        raise pickle.UnpicklingError("the checkpoint was saved on a big-endian machine; save it again on this one")
    return prefix


def unpickle_inert(path: str | Path):
    """The object a torch zip checkpoint pickles, its model classes as :class:`InertRecord`; runs nothing.

    Raises:
        UnsafeGlobal: the pickle names a global outside :data:`ALLOWED` and the inert classes.
        pickle.UnpicklingError, zipfile.BadZipFile, EOFError: a truncated or corrupt file.
    """
    with zipfile.ZipFile(path) as archive:
        prefix = _data_pickle(archive)
        return RestrictedUnpickler(archive.read(f"{prefix}/data.pkl"), archive, prefix).load()


def _children(record: InertRecord, kind: str) -> dict:
    value = record.attributes.get(kind) or {}
    if not isinstance(value, dict):
        raise ValueError(f"{record.qualname}.{kind} is a {type(value).__name__}, not a dict: not a torch module")
    return value


def module_state_dict(record: InertRecord, prefix: str = "", _path: tuple = ()) -> dict[str, torch.Tensor]:
    """An inert module's state dict as ``nn.Module.state_dict`` orders and names it, tensors as stored.

    Parameters, then persistent buffers, then each child under ``name.``; ``None`` entries skipped.
    """
    if id(record) in _path or len(_path) > MAX_DEPTH:
        raise ValueError(f"the module tree at {prefix or 'the root'} loops or nests over {MAX_DEPTH} deep")
    skipped = record.attributes.get("_non_persistent_buffers_set") or set()
    tensors = [*_children(record, "_parameters").items(),
               *((k, v) for k, v in _children(record, "_buffers").items() if k not in skipped)]
    out = {}
    for name, tensor in tensors:
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{prefix}{name} is a {type(tensor).__name__}, not a tensor")
        out[prefix + name] = tensor.detach()
    for name, child in _children(record, "_modules").items():
        if child is None:
            continue
        if not isinstance(child, InertRecord):
            raise ValueError(f"{prefix}{name} is a {type(child).__name__}, not a module")
        out.update(module_state_dict(child, f"{prefix}{name}.", (*_path, id(record))))
    return out


def plain(value, depth: int = 0):
    """Metadata as plain Python (str, numbers, lists, dicts): tensors as lists, records as their class name."""
    if depth > 20:
        return "..."
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {k if isinstance(k, (str, int)) else str(k): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() > PLAIN_NUMEL:
        return f"<tensor {list(value.shape)} {str(value.dtype).removeprefix('torch.')}>"
    if isinstance(value, (torch.Tensor, np.generic)):
        return value.tolist()
    if isinstance(value, InertRecord):
        return f"<{value.qualname}>"
    return str(value)


def class_names(names) -> list[str] | None:
    """Class names in index order from Ultralytics' ``{0: 'person', ...}`` or YOLOv5's list."""
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    return None


@dataclass(frozen=True)
class YoloCheckpoint:
    """A whole-model checkpoint read inertly: ``state_dict`` (float32), ``names`` and plain ``metadata``.

    ``metadata`` has ``names``, ``nc``, ``task``, ``model_class``, ``weights_from`` (``"ema"`` or
    ``"model"``), ``stored_dtype``, ``yaml``, ``stride``, ``train_args`` (YOLOv5's ``opt``), and
    the file's own keys such as ``date``, ``version``, ``epoch``, ``best_fitness``.
    """

    state_dict: dict[str, torch.Tensor]
    names: list[str] | None
    metadata: dict = field(default_factory=dict)


def _model_record(obj) -> tuple[InertRecord, str] | None:
    """The model (``ema`` first, as Ultralytics loads it, then ``model``) and where it was found."""
    if isinstance(obj, InertRecord):
        return obj, ""
    if isinstance(obj, dict):
        for key in MODEL_KEYS:
            if isinstance(obj.get(key), InertRecord):
                return obj[key], key
    return None


def as_yolo_checkpoint(obj) -> YoloCheckpoint | None:
    """The :class:`YoloCheckpoint` in an :func:`unpickle_inert` result, or ``None`` if it holds no model."""
    found = _model_record(obj)
    if found is None:
        return None
    record, key = found
    attrs = record.attributes
    stored = module_state_dict(record)
    state_dict = {k: t.float() if t.is_floating_point() else t for k, t in stored.items()}
    names = class_names(attrs.get("names"))
    yaml = attrs.get("yaml") if isinstance(attrs.get("yaml"), dict) else {}
    nc = next((n for n in (attrs.get("nc"), yaml.get("nc")) if isinstance(n, int)), len(names) if names else None)
    dtypes = {str(t.dtype).removeprefix("torch.") for t in stored.values() if t.is_floating_point()}
    metadata = {k: plain(v) for k, v in (obj.items() if isinstance(obj, dict) else ()) if k not in SKIPPED_KEYS}
    if "train_args" not in metadata and isinstance(metadata.get("opt"), dict):
        metadata["train_args"] = metadata["opt"]  # YOLOv5 keeps its arguments as 'opt'
    short = record.qualname.rsplit(".", 1)[-1]
    metadata.update(names=names, nc=nc, task=TASKS.get(short), model_class=record.qualname, weights_from=key,
                    stored_dtype=sorted(dtypes), yaml=plain(yaml), stride=plain(attrs.get("stride")))
    return YoloCheckpoint(state_dict, names, metadata)


def read_yolo_checkpoint(path: str | Path) -> YoloCheckpoint:
    """Read an Ultralytics or YOLOv5 ``.pt`` (any whole-model torch zip checkpoint) without running it.

    Raises:
        UnsafeGlobal: the file names a callable outside the allow-list (nothing was called).
        ValueError: the file holds no model under ``ema``/``model`` (nor is one).
    """
    ckpt = as_yolo_checkpoint(unpickle_inert(path))
    if ckpt is None:
        raise ValueError(f"{path} holds no model: expected a pickled module, or a dict with one under 'ema' or 'model'")
    return ckpt
