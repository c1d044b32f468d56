"""cca: criss-cross attention (CCNet) operators, models and the paper's experiments.

The operators are imported with the package; the submodules (``cca.nn``, ``cca.models``,
``cca.data``, ``cca.engine``, ``cca.losses``, ``cca.profiling``, ``cca.reports``, ``cca.info``) load
on first attribute access, so ``import cca; cca.nn.RCCA(64)`` works and ``import cca`` stays light.
"""

from __future__ import annotations

import importlib
import sys

try:
    import torch  # noqa: F401
except ModuleNotFoundError as _missing:
    if _missing.name != "torch":
        raise
    # name="cca": `python -m cca ...` then reports it in one line instead of a traceback
    raise ModuleNotFoundError(
        f"cca needs PyTorch, which {sys.executable} does not have; use the project's environment: "
        ".nox/cca-env/bin/python (created by the first `nox` session)", name="cca"
    ) from None

from cca.ops import (
    ca_map,
    ca_weight,
    criss_cross_attention,
    criss_cross_attention_3d,
    criss_cross_attention_map,
    criss_cross_attention_map_3d,
)

__version__ = "0.1.0"

_SUBMODULES = ("data", "engine", "info", "losses", "models", "nn", "ops", "profiling", "reports")

__all__ = [
    "__version__",
    "ca_map",
    "ca_weight",
    "criss_cross_attention",
    "criss_cross_attention_3d",
    "criss_cross_attention_map",
    "criss_cross_attention_map_3d",
    *_SUBMODULES,
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
