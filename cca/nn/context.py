"""The other context modules CCNet's tables compare against: PSPNet's pyramid pooling and
DeepLabv3's ASPP. Both take ``(N, C, H, W)`` and return ``(N, out_channels, H, W)``.

Branches that pool to a single value per channel (pyramid bin 1, ASPP image pooling) use a
biased 1x1 convolution + ReLU without BatchNorm: BatchNorm over one value per channel is undefined
at batch size 1 (one crop per GPU, as in the paper's Cityscapes setup without SyncBN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cca._checks import check_nchw, positive_int

__all__ = ["ASPP", "PyramidPooling", "conv_bn_relu"]


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1, relu: bool = True
) -> nn.Sequential:
    """``Conv2d (no bias, 'same' padding) -> BatchNorm2d [-> ReLU]``: ``(N, in, H, W) -> (N, out, H, W)``."""
    padding = dilation * (kernel_size - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _pooled_branch(in_channels: int, out_channels: int, bins: int) -> nn.Sequential:
    """Adaptive average pooling to ``bins x bins`` then a 1x1 projection (BN only when ``bins > 1``)."""
    if bins == 1:
        proj = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=True), nn.ReLU(inplace=True))
    else:
        proj = conv_bn_relu(in_channels, out_channels)
    return nn.Sequential(nn.AdaptiveAvgPool2d(bins), *proj)


class PyramidPooling(nn.Module):
    """Pyramid pooling module (Zhao et al., PSPNet): adaptive average pooling to ``b x b`` for each
    of ``bins`` (1, 2, 3, 6), a 1x1 projection to ``in_channels // len(bins)`` each, bilinear
    upsampling, concatenation with the input and a 3x3 conv-BN-ReLU to ``out_channels``
    (default ``in_channels``). ``(N, C, H, W) -> (N, out_channels, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int | None = None, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", in_channels if out_channels is None else out_channels)
        if not bins:
            raise ValueError(f"bins must be a non-empty tuple of ints >= 1, got bins={bins!r}")
        self.bins = tuple(positive_int(f"bins[{i}]", b) for i, b in enumerate(bins))
        inner = max(1, in_channels // len(self.bins))
        self.stages = nn.ModuleList(_pooled_branch(in_channels, inner, b) for b in self.bins)
        self.bottleneck = conv_bn_relu(in_channels + inner * len(self.bins), self.out_channels, kernel_size=3)

    def forward(self, x: Tensor) -> Tensor:
        check_nchw("x", x, self.in_channels, owner=type(self).__name__)
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False) for stage in self.stages]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al., DeepLabv3) at output stride 8: a 1x1 branch,
    one 3x3 branch per dilation in ``rates`` (12, 24, 36), and image-level pooling, each to
    ``inner_channels`` (default ``out_channels // 2``), concatenated and projected by a 1x1
    conv-BN-ReLU to ``out_channels`` (default ``in_channels``). ``(N, C, H, W) -> (N, out_channels, H, W)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        rates: tuple[int, ...] = (12, 24, 36),
        inner_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", in_channels if out_channels is None else out_channels)
        inner = positive_int(
            "inner_channels", max(1, self.out_channels // 2) if inner_channels is None else inner_channels
        )
        self.rates = tuple(positive_int(f"rates[{i}]", r) for i, r in enumerate(rates))
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, inner)] + [conv_bn_relu(in_channels, inner, 3, rate) for rate in self.rates]
        )
        self.image_pool = _pooled_branch(in_channels, inner, 1)
        self.project = conv_bn_relu(inner * (len(self.rates) + 2), self.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        check_nchw("x", x, self.in_channels, owner=type(self).__name__)
        size = x.shape[-2:]
        outs = [branch(x) for branch in self.branches]
        outs.append(self.image_pool(x).expand(-1, -1, *size))
        return self.project(torch.cat(outs, dim=1))
