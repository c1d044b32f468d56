"""Criss-cross attention modules: CCA, its recurrent form RCCA, their 3D (video) versions
(``...3d``, as ``nn.Conv3d``) and the row-only / column-only variants used as ablations."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cca._checks import check_tensor, non_negative_int, positive_int
from cca.ops import (
    ca_map,
    ca_weight,
    criss_cross_attention,
    criss_cross_attention_3d,
    criss_cross_attention_map,
    criss_cross_attention_map_3d,
)
from cca.ops.reference import position_softmax

__all__ = [
    "DIRECTIONS",
    "RCCA",
    "RCCA3d",
    "CrissCrossAttention",
    "CrissCrossAttention3d",
    "DirectionalAttention",
    "directional_mask",
]

DIRECTIONS = ("both", "horizontal", "vertical")


def _reduced(in_channels: int, reduction: int) -> int:
    return max(1, positive_int("in_channels", in_channels) // positive_int("reduction", reduction))


class CrissCrossAttention(nn.Module):
    """One criss-cross attention block (CCNet, Huang et al.): ``H' = gamma * CCA(Q, K, V) + H``.

    Q and K are 1x1 convolutions to ``in_channels // reduction`` channels, V a 1x1 convolution to
    ``in_channels``; ``gamma`` is a learned scalar initialised to 0, so the block starts as the
    identity. Input and output ``(N, C, H, W)``; :meth:`attention_map` gives ``(N, H+W-1, H, W)``.
    """

    conv_cls: type[nn.Module] = nn.Conv2d
    layout = "(N, C, H, W)"

    def __init__(self, in_channels: int, reduction: int = 8) -> None:
        super().__init__()
        inner = _reduced(in_channels, reduction)
        self.in_channels = in_channels
        self.reduction = reduction
        self.query = self.conv_cls(in_channels, inner, 1)
        self.key = self.conv_cls(in_channels, inner, 1)
        self.value = self.conv_cls(in_channels, in_channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def _check(self, x: Tensor) -> None:
        check_tensor("x", x, self.layout, channels=self.in_channels, owner=type(self).__name__)

    def _attend(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        return criss_cross_attention(query, key, value)

    def _map(self, query: Tensor, key: Tensor) -> Tensor:
        return criss_cross_attention_map(query, key)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return self.gamma * self._attend(self.query(x), self.key(x), self.value(x)) + x

    def attention_map(self, x: Tensor) -> Tensor:
        """Softmaxed attention ``(N, H+W-1, H, W)`` (3D: ``(N, T+H+W-2, T, H, W)``) of input ``x``;
        slot order as :func:`cca.criss_cross_attention_map`."""
        self._check(x)
        return self._map(self.query(x), self.key(x))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, reduction={self.reduction}"


class CrissCrossAttention3d(CrissCrossAttention):
    """Criss-cross attention over video features ``(N, C, T, H, W)``: each position attends to its
    row, its column and the same pixel in the other frames (``T + H + W - 2`` positions).
    Same parameters as :class:`CrissCrossAttention` with 1x1x1 convolutions."""

    conv_cls = nn.Conv3d
    layout = "(N, C, T, H, W)"

    def _attend(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        return criss_cross_attention_3d(query, key, value)

    def _map(self, query: Tensor, key: Tensor) -> Tensor:
        return criss_cross_attention_map_3d(query, key)


def directional_mask(direction: str, height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """Boolean ``(H+W-1, 1|H, W)`` mask of the criss-cross slots a direction keeps (broadcasts to
    ``(N, H+W-1, H, W)``): ``"horizontal"`` the row of ``u`` (slots ``0..W-1``, ``u`` included),
    ``"vertical"`` the column of ``u`` (slot ``x`` = ``u`` itself, then slots ``W..H+W-2``),
    ``"both"`` every slot."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got direction={direction!r}")
    slot = torch.arange(height + width - 1, device=device).view(-1, 1, 1)
    if direction == "both":
        return torch.ones_like(slot, dtype=torch.bool).expand(-1, 1, width)
    if direction == "horizontal":
        return (slot < width).expand(-1, 1, width)
    x = torch.arange(width, device=device).view(1, 1, -1)
    return (slot >= width) | (slot == x)


class DirectionalAttention(CrissCrossAttention):
    """Criss-cross attention restricted to one direction (an ablation of CCA): ``"horizontal"``
    attends over the row of each pixel only, ``"vertical"`` over its column only. Implemented by
    masking the criss-cross affinity (``-inf`` outside the direction) before the softmax, with the
    same parameters and identity start (``gamma = 0``) as :class:`CrissCrossAttention`.
    Input and output ``(N, C, H, W)``; :meth:`attention_map` ``(N, H+W-1, H, W)`` with zeros in the
    masked slots."""

    def __init__(self, in_channels: int, direction: str = "horizontal", reduction: int = 8) -> None:
        if direction not in ("horizontal", "vertical"):
            raise ValueError(f"direction must be 'horizontal' or 'vertical', got direction={direction!r}")
        super().__init__(in_channels, reduction)
        self.direction = direction

    def _map(self, query: Tensor, key: Tensor) -> Tensor:
        energy = ca_weight(query, key)
        keep = directional_mask(self.direction, query.shape[2], query.shape[3], device=query.device)
        return position_softmax(energy.masked_fill(~keep, float("-inf")))

    def _attend(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        return ca_map(self._map(query, key), value)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, direction={self.direction!r}"


class RCCA(nn.Module):
    """Recurrent criss-cross attention: the same :class:`CrissCrossAttention` (attribute ``cca``)
    applied ``recurrence`` times with shared weights. ``R = 2`` gives every pixel context from the
    whole image; ``R = 0`` is the identity (the no-attention ablation).

    Input and output ``(N, C, H, W)`` (:class:`RCCA3d` for video ``(N, C, T, H, W)``).
    ``direction="horizontal"|"vertical"`` uses :class:`DirectionalAttention` instead.
    """

    def __init__(self, in_channels: int, recurrence: int = 2, reduction: int = 8, direction: str = "both") -> None:
        super().__init__()
        self.recurrence = non_negative_int("recurrence", recurrence)
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got direction={direction!r}")
        self.cca = self._block(in_channels, reduction, direction)

    def _block(self, in_channels: int, reduction: int, direction: str) -> CrissCrossAttention:
        if direction == "both":
            return CrissCrossAttention(in_channels, reduction)
        return DirectionalAttention(in_channels, direction, reduction)

    def forward(self, x: Tensor) -> Tensor:
        if self.recurrence == 0:
            self.cca._check(x)
        for _ in range(self.recurrence):
            x = self.cca(x)
        return x

    def attention_maps(self, x: Tensor) -> list[Tensor]:
        """The attention map of each loop, ``[(N, H+W-1, H, W)] * recurrence`` (3D:
        ``[(N, T+H+W-2, T, H, W)] * recurrence``), for visualisation."""
        maps = []
        for _ in range(self.recurrence):
            maps.append(self.cca.attention_map(x))
            x = self.cca(x)
        return maps

    def extra_repr(self) -> str:
        return f"recurrence={self.recurrence}"


class RCCA3d(RCCA):
    """Recurrent 3D criss-cross attention over video features ``(N, C, T, H, W)``: the same
    :class:`CrissCrossAttention3d` applied ``recurrence`` times with shared weights."""

    def __init__(self, in_channels: int, recurrence: int = 2, reduction: int = 8) -> None:
        super().__init__(in_channels, recurrence, reduction)

    def _block(self, in_channels: int, reduction: int, direction: str) -> CrissCrossAttention:
        return CrissCrossAttention3d(in_channels, reduction)
