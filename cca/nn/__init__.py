"""Modules: criss-cross attention (2D, recurrent, 3D, one-direction ablations), non-local, and the
context baselines the paper compares (pyramid pooling, ASPP). All map ``(N, C, H, W)`` features to
``(N, C, H, W)`` (the 3D ones, ``CrissCrossAttention3d`` and ``RCCA3d``: ``(N, C, T, H, W)``)."""

from __future__ import annotations

from torch import nn

from cca.nn.context import ASPP, PyramidPooling, conv_bn_relu
from cca.nn.criss_cross import (
    DIRECTIONS,
    RCCA,
    CrissCrossAttention,
    CrissCrossAttention3d,
    DirectionalAttention,
    RCCA3d,
    directional_mask,
)
from cca.nn.non_local import NonLocal2d, non_local_attention

__all__ = [
    "ASPP",
    "CONTEXT_BLOCKS",
    "DIRECTIONS",
    "RCCA",
    "RCCA3d",
    "CrissCrossAttention",
    "CrissCrossAttention3d",
    "DirectionalAttention",
    "NonLocal2d",
    "PyramidPooling",
    "build_context_block",
    "conv_bn_relu",
    "directional_mask",
    "non_local_attention",
]

CONTEXT_BLOCKS = ("fcn", "cca", "rcca", "nonlocal", "psp", "aspp", "horizontal", "vertical")


def build_context_block(name: str, in_channels: int, **kwargs) -> nn.Module:
    """A context block by name (see ``CONTEXT_BLOCKS``) on ``(N, in_channels, H, W)`` features,
    returning ``(N, in_channels, H, W)`` (``psp``/``aspp``: ``out_channels``, default ``in_channels``).

    * ``fcn``: identity, no context module (the FCN baseline; model ``fcn`` of :data:`cca.models.MODELS`);
    * ``cca``: one :class:`CrissCrossAttention` (``reduction``);
    * ``rcca``: :class:`RCCA` (``recurrence=2``, ``reduction``);
    * ``nonlocal``: embedded-Gaussian :class:`NonLocal2d` (``reduction=2``);
    * ``psp`` / ``aspp``: :class:`PyramidPooling` / :class:`ASPP` (``out_channels``, ``bins`` / ``rates``);
    * ``horizontal`` / ``vertical``: RCCA attending over the row / the column only
      (``recurrence=1``, ``reduction``), the one-direction ablation.

    Unknown names raise ``ValueError`` listing the known ones; unknown keyword arguments ``TypeError``.
    """
    if name == "fcn":
        if kwargs:
            raise TypeError(f"context block 'fcn' takes no keyword arguments, got {sorted(kwargs)}")
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
    if name in ("horizontal", "vertical"):
        kwargs.setdefault("recurrence", 1)
        return RCCA(in_channels, direction=name, **kwargs)
    raise ValueError(f"unknown context block {name!r}; expected one of {CONTEXT_BLOCKS}")
