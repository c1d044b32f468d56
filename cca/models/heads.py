"""Segmentation heads on ``(N, C, h, w)`` backbone features.

Every main head returns ``(logits (N, K, h, w), feat (N, mid, h, w))``: ``feat`` is the feature
map right after the context block (what the category consistent loss acts on). Channel numbers
adapt to the backbone: ``mid = min(512, in_channels // 4)`` (512 on ResNet's 2048-channel res5,
32 on the tiny backbone's 128).

* :class:`ContextHead` (CCNet's head, with any context block of :func:`cca.nn.build_context_block`
  in the middle): 3x3 conv-BN-ReLU ``C -> mid``, the context block (``mid -> mid``), 3x3
  conv-BN-ReLU, concatenation with the head's input (``C + mid``), 3x3 bottleneck conv-BN-ReLU to
  ``mid``, ``Dropout2d(0.1)``, 1x1 classifier. The paper's context-module comparison keeps this
  head and swaps the block, so every baseline is one class: :class:`RCCAHead` (``"rcca"``),
  :class:`RCCAHead3d` (:class:`cca.nn.RCCA3d` over clips), :class:`FCNHead` (``"fcn"``: the no-context baseline), :class:`NonLocalHead` (``"nonlocal"``),
  :class:`PSPHead` (``"psp"``), :class:`ASPPHead` (``"aspp"``).
* :class:`AuxHead`: the auxiliary FCN head on res4 (3x3 conv-BN-ReLU ``C -> min(512, C // 2)``,
  dropout, classifier), returning logits only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cca._checks import check_tensor, positive_int
from cca.nn import RCCA3d, build_context_block, conv_bn_relu

__all__ = [
    "ASPPHead",
    "AuxHead",
    "ContextHead",
    "FCNHead",
    "NonLocalHead",
    "PSPHead",
    "RCCAHead",
    "RCCAHead3d",
    "head_channels",
]


def head_channels(in_channels: int) -> int:
    """Mid channels of a head on ``in_channels`` features: ``min(512, in_channels // 4)`` (at least 1)."""
    return max(1, min(512, positive_int("in_channels", in_channels) // 4))


def _check_counts(in_channels: int, num_classes: int) -> None:
    positive_int("in_channels", in_channels)
    positive_int("num_classes", num_classes)


def _check_features(head: nn.Module, x: Tensor, channels: int) -> None:
    check_tensor("x", x, "(N, C, h, w)", channels=channels, owner=type(head).__name__)


def _classifier(mid: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(mid, num_classes, 1))


class ContextHead(nn.Module):
    """CCNet's head around a ``mid -> mid`` context block (see the module docstring).

    ``context``: a name of :data:`cca.nn.CONTEXT_BLOCKS` (built by :func:`cca.nn.build_context_block`
    on ``mid`` channels with ``context_kwargs``; ``psp``/``aspp`` get ``out_channels=mid``) or a module.

    ``forward(x (N, C, h, w), frames=None) -> (logits (N, K, h, w), feat (N, mid, h, w))``. With
    ``frames=T`` the batch holds ``N = B * T`` video frames (clip-major) and the block gets
    ``(B, mid, T, h, w)`` (a 3D block, e.g. :class:`cca.nn.RCCA3d`); everything else is per frame.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        context: str | nn.Module = "rcca",
        mid_channels: int | None = None,
        dropout: float = 0.1,
        **context_kwargs,
    ) -> None:
        super().__init__()
        _check_counts(in_channels, num_classes)
        mid = head_channels(in_channels) if mid_channels is None else positive_int("mid_channels", mid_channels)
        self.in_channels, self.mid_channels, self.num_classes = in_channels, mid, num_classes
        if isinstance(context, str):
            if context in ("psp", "aspp"):
                context_kwargs.setdefault("out_channels", mid)
            context = build_context_block(context, mid, **context_kwargs)
        elif context_kwargs:
            raise TypeError(
                f"context_kwargs {sorted(context_kwargs)} need a context name, got a {type(context).__name__}"
            )
        self.conv_in = conv_bn_relu(in_channels, mid, 3)
        self.context = context
        self.conv_out = conv_bn_relu(mid, mid, 3)
        self.bottleneck = conv_bn_relu(in_channels + mid, mid, 3)
        self.classifier = _classifier(mid, num_classes, dropout)

    def _context(self, y: Tensor, frames: int | None) -> Tensor:
        if frames is None:
            return self.context(y)
        if y.shape[0] % frames:
            raise ValueError(f"batch of {y.shape[0]} frames is not a whole number of clips of frames={frames}")
        clips = y.unflatten(0, (-1, frames)).transpose(1, 2)  # (B, mid, T, h, w)
        return self.context(clips).transpose(1, 2).flatten(0, 1)

    def forward(self, x: Tensor, frames: int | None = None) -> tuple[Tensor, Tensor]:
        _check_features(self, x, self.in_channels)
        feat = self._context(self.conv_in(x), frames)
        out = self.bottleneck(torch.cat([x, self.conv_out(feat)], dim=1))
        return self.classifier(out), feat


class RCCAHead(ContextHead):
    """:class:`ContextHead` with :class:`cca.nn.RCCA` (``recurrence`` loops, shared weights,
    ``reduction`` for Q/K; ``direction="horizontal"|"vertical"``: the one-direction ablation)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        recurrence: int = 2,
        reduction: int = 8,
        mid_channels: int | None = None,
        dropout: float = 0.1,
        direction: str = "both",
    ) -> None:
        mid = head_channels(in_channels) if mid_channels is None else positive_int("mid_channels", mid_channels)
        super().__init__(in_channels, num_classes, self.attention(mid, recurrence, reduction, direction), mid, dropout)

    @staticmethod
    def attention(channels: int, recurrence: int, reduction: int, direction: str) -> nn.Module:
        """The context block on ``channels``: :class:`cca.nn.RCCA`."""
        return build_context_block("rcca", channels, recurrence=recurrence, reduction=reduction, direction=direction)


class RCCAHead3d(RCCAHead):
    """:class:`ContextHead` with :class:`cca.nn.RCCA3d`, 3D criss-cross attention over clips
    (``recurrence`` loops, ``reduction`` for Q/K): call it with ``frames=T`` on ``N = B * T`` frames."""

    @staticmethod
    def attention(channels: int, recurrence: int, reduction: int, direction: str) -> nn.Module:
        """The context block on ``channels``: :class:`cca.nn.RCCA3d` (rows, columns and frames)."""
        if direction != "both":
            raise NotImplementedError(
                f"RCCAHead3d attends over rows, columns and frames together: direction={direction!r} is not "
                "supported (only 'both')"
            )
        return RCCA3d(channels, recurrence, reduction)


class FCNHead(ContextHead):
    """:class:`ContextHead` without context (identity block): the baseline of the paper's comparisons."""

    def __init__(
        self, in_channels: int, num_classes: int, mid_channels: int | None = None, dropout: float = 0.1
    ) -> None:
        super().__init__(in_channels, num_classes, "fcn", mid_channels, dropout)


class NonLocalHead(ContextHead):
    """:class:`ContextHead` with the embedded-Gaussian :class:`cca.nn.NonLocal2d` (``reduction=2``)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        reduction: int = 2,
        mid_channels: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(in_channels, num_classes, "nonlocal", mid_channels, dropout, reduction=reduction)


class PSPHead(ContextHead):
    """:class:`ContextHead` with :class:`cca.nn.PyramidPooling` (``bins`` 1, 2, 3, 6) on ``mid`` channels."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        mid_channels: int | None = None,
        dropout: float = 0.1,
        bins: tuple[int, ...] = (1, 2, 3, 6),
    ) -> None:
        super().__init__(in_channels, num_classes, "psp", mid_channels, dropout, bins=bins)


class ASPPHead(ContextHead):
    """:class:`ContextHead` with :class:`cca.nn.ASPP` (``rates`` 12, 24, 36 at output stride 8) on ``mid`` channels."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        mid_channels: int | None = None,
        dropout: float = 0.1,
        rates: tuple[int, ...] = (12, 24, 36),
    ) -> None:
        super().__init__(in_channels, num_classes, "aspp", mid_channels, dropout, rates=rates)


class AuxHead(nn.Module):
    """Auxiliary FCN head on res4 (deep supervision, loss weight 0.4 in the paper): 3x3 conv-BN-ReLU
    ``C -> min(512, C // 2)`` (1024 -> 512 on ResNet, as the released CCNet code's ``dsn``;
    mmsegmentation uses 256: pass ``mid_channels``), ``Dropout2d(0.1)``, 1x1 classifier.
    ``(N, C, h, w) -> (N, K, h, w)``."""

    def __init__(
        self, in_channels: int, num_classes: int, mid_channels: int | None = None, dropout: float = 0.1
    ) -> None:
        super().__init__()
        _check_counts(in_channels, num_classes)
        mid = max(1, min(512, in_channels // 2)) if mid_channels is None else positive_int("mid_channels", mid_channels)
        self.in_channels, self.mid_channels, self.num_classes = in_channels, mid, num_classes
        self.conv = conv_bn_relu(in_channels, mid, 3)
        self.classifier = _classifier(mid, num_classes, dropout)

    def forward(self, x: Tensor) -> Tensor:
        _check_features(self, x, self.in_channels)
        return self.classifier(self.conv(x))
