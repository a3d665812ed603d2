"""What a pickle references, read from its opcodes without unpickling it.

Every ``module.name`` that a ``GLOBAL``/``STACK_GLOBAL`` opcode would import is listed with
:mod:`pickletools`; nothing is imported or called, so this is safe on any file.

Example:
    >>> import pickle, collections
    >>> pickle_globals(pickle.dumps(collections.OrderedDict(), protocol=2))
    ['collections.OrderedDict']
"""
from __future__ import annotations

import _compat_pickle
import io
import pickletools
import zipfile
from pathlib import Path

import torch

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def python3_name(module: str, name: str) -> tuple[str, str]:
    """Python 2 names (``__builtin__.set``) as Python 3's, as :class:`pickle.Unpickler` maps them."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def pickle_streams(path: Path, kind: str) -> list[bytes]:
    """The pickle byte streams inside a file: ``*/data.pkl`` of a torch zip, or the file itself.

    Raises ``zipfile.BadZipFile``, ``EOFError`` or ``OSError`` for a truncated or corrupt zip.
    """
    if kind == "torch-zip":
        with zipfile.ZipFile(path) as archive:
            return [archive.read(n) for n in archive.namelist() if n.endswith(".pkl")]
    return [path.read_bytes()]


def pickle_globals(data: bytes) -> list[str]:
    """Every ``module.name`` that GLOBAL / STACK_GLOBAL opcodes would import (Python 3 names), read without executing.

    A stream may hold several pickles back to back (the legacy torch format does); reading stops
    at the first byte that is not a pickle.
    """
    found, stream = [], io.BytesIO(data)
    while stream.tell() < len(data):
        strings, memo = [], {}
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name in _STRING_OPS:
                    strings.append(arg if isinstance(arg, str) else str(arg))
                elif op.name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE") and strings:
                    memo[len(memo) if op.name == "MEMOIZE" else arg] = strings[-1]
                elif op.name in ("BINGET", "LONG_BINGET", "GET") and arg in memo:
                    strings.append(memo[arg])
                elif op.name in ("GLOBAL", "INST"):
                    found.append(".".join(python3_name(*arg.partition(" ")[::2])))
                elif op.name == "STACK_GLOBAL":
                    found.append(".".join(python3_name(*strings[-2:])) if len(strings) >= 2 else "<unknown>")
                if op.name == "STOP":
                    break
        except Exception:  # raw tensor bytes after the pickles, or a cut-off stream
            break
    return list(dict.fromkeys(found))


def weights_only_globals() -> set[str]:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except ImportError:  # older torch: the names a plain state_dict needs
        allowed = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter"}
    for obj in torch.serialization.get_safe_globals():
        if not isinstance(obj, tuple):
            allowed.add(f"{obj.__module__}.{obj.__qualname__}")
    return allowed
