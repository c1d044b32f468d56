"""Training and evaluation engine: settings, torchrun/DDP training, evaluation, metrics, inference.

Submodules load on first use (``import cca.engine`` stays light)::

    from cca.engine import presets, train
    cfg = presets.get_config("smoke")
    train.train(cfg)
"""

from __future__ import annotations

import importlib

_SUBMODULES = (
    "builders",
    "checkpoint",
    "config",
    "distributed",
    "evaluate",
    "inference",
    "lock",
    "loop",
    "metrics",
    "parsing",
    "presets",
    "runlog",
    "runtime",
    "sampling",
    "schedule",
    "train",
)

__all__ = list(_SUBMODULES)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
