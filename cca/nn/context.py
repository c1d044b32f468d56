"""The other context modules CCNet's tables compare against: PSPNet's pyramid pooling and
DeepLabv3's ASPP. Both take ``(N, C, H, W)`` and return ``(N, out_channels, H, W)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PyramidPooling", "ASPP", "conv_bn_relu"]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class PyramidPooling(nn.Module):
    """Pyramid pooling module (Zhao et al., PSPNet): adaptive average pooling to ``bins`` x ``bins``,
    1x1 conv to ``in_channels // len(bins)`` each, upsampled and concatenated with the input, then a
    3x3 conv to ``out_channels``. ``(N, C, H, W) -> (N, out_channels, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int | None = None, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        inner = max(1, in_channels // len(bins))
        self.out_channels = out_channels or in_channels
        self.bins = tuple(bins)
        self.stages = nn.ModuleList(conv_bn_relu(in_channels, inner) for _ in self.bins)
        self.bottleneck = conv_bn_relu(in_channels + inner * len(self.bins), self.out_channels, kernel_size=3)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(stage(F.adaptive_avg_pool2d(x, b)), size=size, mode="bilinear", align_corners=False)
            for b, stage in zip(self.bins, self.stages, strict=True)
        ]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al., DeepLabv3) for output stride 8: a 1x1 branch,
    three 3x3 branches with ``rates`` (12, 24, 36), image-level pooling, concatenated and projected
    by a 1x1 conv to ``out_channels``. ``(N, C, H, W) -> (N, out_channels, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int | None = None, rates: tuple[int, ...] = (12, 24, 36)) -> None:
        super().__init__()
        self.out_channels = out_channels or in_channels
        inner = max(1, self.out_channels // 2)
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, inner)] + [conv_bn_relu(in_channels, inner, 3, rate) for rate in rates]
        )
        self.image_pool = conv_bn_relu(in_channels, inner)
        self.project = conv_bn_relu(inner * (len(rates) + 2), self.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = self.image_pool(F.adaptive_avg_pool2d(x, 1))
        outs = [branch(x) for branch in self.branches]
        outs.append(pooled.expand(-1, -1, *size))
        return self.project(torch.cat(outs, dim=1))
