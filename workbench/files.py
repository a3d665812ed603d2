"""Writing a file without losing the one already there: checks first, then a temporary file renamed into place.

Example:
    >>> import tempfile
    >>> path = writable_path(tempfile.mkdtemp() + "/notes.txt")
    >>> write_atomically(path, lambda tmp: open(tmp, "w").write("hello"))
    >>> path.read_text()
    'hello'
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def writable_path(path) -> Path:
    """``path`` as a ``Path`` whose folder exists and which is not a folder itself (checked before writing)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a file name (str or Path), got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot save to {path}: it is a folder; give a file name, "
                                f"e.g. {path / 'w.safetensors'}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save to {path}: the folder {path.parent} does not exist; create it first "
                                f"(Path({str(path.parent)!r}).mkdir(parents=True))")
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"cannot save to {path}: the file is read-only; choose another path or make it writable")
    return path


def write_atomically(path: Path, write: Callable[[str], object]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it over ``path``: a failure leaves any
    existing file whole, removes the temporary file, and raises an ``OSError`` that names ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()  # as open() would create it
    try:
        write(tmp)
        os.chmod(tmp, mode)  # after writing: a writer may have replaced the file with its own
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(err, Exception):
            raise
        reason = str(err).replace(tmp, str(path))
        raise OSError(f"could not save to {path} ({type(err).__name__}: {reason}); any file already there "
                      f"is unchanged: check the disk space and permissions, or choose another path") from None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
