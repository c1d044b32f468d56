"""Atomic file output: a kill or a full disk never leaves a half-written file in place.

Every generated file of the package (results, configs, reports, CSV) goes through here: the text is
written to a temporary file of its own in the same directory (``.<name>.<random>.tmp``, so two writers of
one file never share it), flushed to disk and ``os.replace``-d over the target: the last writer wins whole.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; a full disk raises ``OSError`` naming the device and file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on the device holding {path.parent} while writing {path}") from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def temporary_beside(path: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new file of its own next to ``path`` (``.<name>.<random><suffix>``, the mode of an ordinary new file),
    open for writing: ``(fd, its path)``. Two writers of one target never share it."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600
    except OSError:
        os.close(fd)
        os.unlink(name)
        raise
    return fd, Path(name)


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it; set back at once (here, at import: no thread races it)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def finite_or_none(value: Any) -> Any:
    """``value`` with NaN/inf floats (nested in dicts and lists too) replaced by ``None`` (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """``data`` as indented JSON, atomically; NaN/inf become ``null``; other objects their ``str``."""
    return atomic_write_text(path, json.dumps(finite_or_none(data), indent=2, default=str) + "\n")
