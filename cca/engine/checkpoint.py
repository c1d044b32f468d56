"""Checkpoints written atomically, and the RNG states a resumed run needs to repeat the same steps.

A checkpoint is a dict saved with ``torch.save``: ``model`` (unwrapped from DDP), ``optimizer``,
``scheduler``, ``scaler``, ``iteration`` (optimiser steps done), ``data`` (sampler epoch and position),
``rng`` (one entry per rank: python, numpy, torch CPU, CUDA, each a tensor), ``config`` (a plain dict) and
bookkeeping: only tensors, numbers, strings, lists and dicts, so :func:`load` reads it with
``torch.load(weights_only=True)`` and a crafted file cannot run code when it is loaded.
:func:`save` writes to a temporary file in the same directory and ``os.replace``-s it, so a kill at
any moment leaves either the previous or the new file, never a torn one; the file it replaces is kept as
``<name>.prev`` and :func:`load_or_fallback` reads it (with a warning) when ``<name>`` is unreadable or
missing (a kill between the two renames leaves only ``<name>.prev``). A full
disk raises ``OSError`` "no space left on the device holding DIR while writing FILE".
"""

from __future__ import annotations

import errno
import io
import logging
import os
import pickle
import random
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("cca.engine")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable (truncated, corrupt) or incompatible with the run."""


def previous_path(path: str | Path) -> Path:
    """Where :func:`save` keeps the checkpoint it replaced: ``<name>.prev``."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


def save(state: dict[str, Any], path: str | Path, keep_previous: bool = True) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same directory, fsync, ``os.replace``).

    The file it replaces becomes ``<name>.prev`` when ``keep_previous``. A full disk raises ``OSError``
    (``errno.ENOSPC``) naming the device's directory and the file; the existing checkpoint is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # serialise first: a write error is then an OSError, not torch's "unexpected pos"
    torch.save(state, buffer)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.is_file():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except OSError as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if err.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on the device holding {path.parent} while writing {path}") from None
        raise
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# torch.load(weights_only=True) on garbage bytes can also raise IndexError/KeyError/TypeError/struct.error
_UNREADABLE = (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError, IndexError,
               KeyError, TypeError, struct.error)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`.

    Raises ``FileNotFoundError`` naming the path, or :class:`CheckpointError` (one line naming the file)
    when it is truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise _unreadable(path, err) from None
        raise CheckpointError(
            f"{path} holds objects other than tensors, numbers, strings, lists and dicts; it was not loaded, since "
            "loading it could run code (not a checkpoint written by cca, or written by an older version)"
        ) from None
    except _UNREADABLE as err:
        raise _unreadable(path, err) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def _unreadable(path: Path, err: BaseException) -> CheckpointError:
    first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    return CheckpointError(
        f"checkpoint {path} is unreadable (truncated or corrupt: {first}); restore it, or delete the run "
        "directory to start over"
    )


def load_or_fallback(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path]:
    """:func:`load` ``path``; if it is unreadable or missing, the previous checkpoint ``<name>.prev`` with a warning.

    Returns ``(state, the path read)``; raises :class:`CheckpointError` naming both files if neither reads, and
    ``FileNotFoundError`` when ``path`` is missing and there is no previous checkpoint.
    """
    path = Path(path)
    try:
        return load(path, map_location), path
    except (CheckpointError, FileNotFoundError) as err:
        previous = previous_path(path)
        if not previous.is_file():
            raise
        try:
            state = load(previous, map_location)
        except CheckpointError:
            raise CheckpointError(f"{err}; the previous checkpoint {previous} is unreadable too") from None
        why = "is unreadable" if isinstance(err, CheckpointError) else "is a directory" if path.is_dir() else "is missing"
        log.warning("warning: %s %s; falling back to the previous checkpoint %s (iteration %s)",
                    path, why, previous, state.get("iteration", "?"))
        return state, previous


def holds_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` or its previous checkpoint ``<name>.prev`` exists: a run's state is there."""
    path = Path(path)
    return path.exists() or previous_path(path).exists()


def rng_state(device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """The RNG states of this process as tensors: python ``random``, numpy, torch CPU and (if used) CUDA.

    Python's and numpy's Mersenne twisters are stored as int64 tensors (``python``: version, 624 words and
    position, then the cached gaussian as a float64 tensor ``python_gauss`` (NaN: none); ``numpy``: 624
    words, position, has-gauss; ``numpy_gauss``), so a checkpoint loads with ``weights_only=True``.
    """
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    if kind != "MT19937":
        raise ValueError(f"numpy's global generator must be MT19937, got {kind!r}")
    state: dict[str, torch.Tensor] = {
        "python": torch.tensor([version, *words], dtype=torch.int64),
        "python_gauss": torch.tensor(float("nan") if gauss is None else gauss, dtype=torch.float64),
        "numpy": torch.tensor([*keys.tolist(), pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor(cached, dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what :func:`rng_state` returned."""
    python = state["python"].tolist()
    gauss = float(state["python_gauss"])
    random.setstate((python[0], tuple(python[1:]), None if gauss != gauss else gauss))
    numpy = state["numpy"].tolist()
    np.random.set_state(("MT19937", np.array(numpy[:624], dtype=np.uint32), numpy[624], numpy[625],
                         float(state["numpy_gauss"])))
    torch.set_rng_state(state["torch"].cpu())
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
