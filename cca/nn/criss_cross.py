"""Criss-cross attention modules: CCA, its recurrent form RCCA, and the 3D (video) version."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cca.ops import (
    criss_cross_attention,
    criss_cross_attention_3d,
    criss_cross_attention_map,
    criss_cross_attention_map_3d,
)

__all__ = ["CrissCrossAttention", "RCCA", "CrissCrossAttention3d"]


def _reduced(in_channels: int, reduction: int) -> int:
    if in_channels < 1 or reduction < 1:
        raise ValueError(f"in_channels and reduction must be >= 1, got in_channels={in_channels}, reduction={reduction}")
    return max(1, in_channels // reduction)


class CrissCrossAttention(nn.Module):
    """One criss-cross attention block (CCNet, Huang et al.): ``H' = gamma * CCA(Q, K, V) + H``.

    Q and K are 1x1 convolutions to ``in_channels // reduction`` channels, V a 1x1 convolution to
    ``in_channels``; ``gamma`` is a learned scalar initialised to 0, so the block starts as the
    identity. Input and output ``(N, C, H, W)``.
    """

    conv_cls = nn.Conv2d

    def __init__(self, in_channels: int, reduction: int = 8) -> None:
        super().__init__()
        inner = _reduced(in_channels, reduction)
        self.in_channels = in_channels
        self.query = self.conv_cls(in_channels, inner, 1)
        self.key = self.conv_cls(in_channels, inner, 1)
        self.value = self.conv_cls(in_channels, in_channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def _check(self, x: Tensor) -> None:
        ndim = 4 if self.conv_cls is nn.Conv2d else 5
        if x.dim() != ndim or x.shape[1] != self.in_channels:
            layout = "(N, C, H, W)" if ndim == 4 else "(N, C, T, H, W)"
            raise ValueError(f"{type(self).__name__} expects {layout} with C={self.in_channels}, got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        attention = criss_cross_attention if self.conv_cls is nn.Conv2d else criss_cross_attention_3d
        return self.gamma * attention(self.query(x), self.key(x), self.value(x)) + x

    def attention_map(self, x: Tensor) -> Tensor:
        """Softmaxed attention ``(N, H+W-1, H, W)`` (3D: ``(N, T+H+W-2, T, H, W)``) of input ``x``."""
        self._check(x)
        attention_map = criss_cross_attention_map if self.conv_cls is nn.Conv2d else criss_cross_attention_map_3d
        return attention_map(self.query(x), self.key(x))


class CrissCrossAttention3d(CrissCrossAttention):
    """Criss-cross attention over video features ``(N, C, T, H, W)``: each position attends to its
    row, its column and the same pixel in the other frames (``T + H + W - 2`` positions)."""

    conv_cls = nn.Conv3d


class RCCA(nn.Module):
    """Recurrent criss-cross attention: the same :class:`CrissCrossAttention` applied ``recurrence``
    times with shared weights. ``R = 2`` gives every pixel context from the whole image; ``R = 0`` is
    the identity (the no-attention ablation). Input and output ``(N, C, H, W)`` (or ``(N, C, T, H, W)``
    with ``video=True``).
    """

    def __init__(self, in_channels: int, recurrence: int = 2, reduction: int = 8, video: bool = False) -> None:
        super().__init__()
        if not isinstance(recurrence, int) or recurrence < 0:
            raise ValueError(f"recurrence must be an integer >= 0, got recurrence={recurrence!r}")
        self.recurrence = recurrence
        block = CrissCrossAttention3d if video else CrissCrossAttention
        self.cca = block(in_channels, reduction)

    def forward(self, x: Tensor) -> Tensor:
        for _ in range(self.recurrence):
            x = self.cca(x)
        return x

    def attention_maps(self, x: Tensor) -> list[Tensor]:
        """The attention map of each loop, ``[(N, H+W-1, H, W)] * recurrence``, for visualisation."""
        maps = []
        for _ in range(self.recurrence):
            maps.append(self.cca.attention_map(x))
            x = self.cca(x)
        return maps
