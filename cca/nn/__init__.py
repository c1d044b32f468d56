"""Modules: criss-cross attention (2D, recurrent, 3D), non-local, and the context baselines."""

from __future__ import annotations

from torch import nn

from cca.nn.context import ASPP, PyramidPooling
from cca.nn.criss_cross import RCCA, CrissCrossAttention, CrissCrossAttention3d
from cca.nn.non_local import NonLocal2d

__all__ = [
    "ASPP",
    "CONTEXT_BLOCKS",
    "CrissCrossAttention",
    "CrissCrossAttention3d",
    "NonLocal2d",
    "PyramidPooling",
    "RCCA",
    "build_context_block",
]

CONTEXT_BLOCKS = ("none", "cca", "rcca", "nonlocal", "psp", "aspp")


def build_context_block(name: str, in_channels: int, **kwargs) -> nn.Module:
    """A context block by name (see ``CONTEXT_BLOCKS``) on ``(N, in_channels, H, W)`` features.

    ``cca``: one criss-cross attention; ``rcca``: recurrent (``recurrence=2``); ``nonlocal``:
    embedded-Gaussian non-local; ``psp``/``aspp``: pyramid pooling / ASPP; ``none``: identity.
    Extra keyword arguments go to the module (e.g. ``recurrence``, ``reduction``, ``out_channels``).
    """
    if name == "none":
        return nn.Identity()
    if name == "cca":
        return CrissCrossAttention(in_channels, **kwargs)
    if name == "rcca":
        return RCCA(in_channels, **kwargs)
    if name == "nonlocal":
        return NonLocal2d(in_channels, **kwargs)
    if name == "psp":
        return PyramidPooling(in_channels, **kwargs)
    if name == "aspp":
        return ASPP(in_channels, **kwargs)
    raise ValueError(f"unknown context block {name!r}; expected one of {CONTEXT_BLOCKS}")
