"""Atomic file writing: a crash or an exception never leaves a half-written file.

Every writer in the project goes through :func:`atomic_write`: the content is
written to a temporary sibling (same directory, so the final ``os.replace`` is
an atomic rename on POSIX), flushed to disk, and renamed over the target.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_bytes", "jsonable"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place.

    The temporary name keeps ``path``'s suffix, so writers that choose a format
    from the suffix (``np.save``, PIL, ``torch.save``) behave as for ``path``.
    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes | str) -> Path:
    """Atomically write ``data`` (``str`` is UTF-8 encoded) to ``path``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    return atomic_write(path, lambda t: t.write_bytes(payload))


def jsonable(x):
    """``x`` with tuples as lists and paths as strings, recursively, ready for ``json.dumps``
    (e.g. ``dataclasses.asdict`` of a config)."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x
