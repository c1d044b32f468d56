"""Non-local block (Wang et al., CVPR 2018), embedded-Gaussian form, as CCNet compares against it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["NonLocal2d", "non_local_attention"]


def non_local_attention(theta: Tensor, phi: Tensor, g: Tensor) -> Tensor:
    """``softmax(theta^T phi) g`` over all ``HW`` positions: ``(N, C', H, W) x2, (N, C'', H, W) -> (N, C'', H, W)``."""
    n, _, h, w = theta.shape
    affinity = torch.bmm(theta.flatten(2).transpose(1, 2), phi.flatten(2))  # (N, HW, HW)
    attention = torch.softmax(affinity, dim=-1)
    out = torch.bmm(g.flatten(2), attention.transpose(1, 2))  # (N, C'', HW)
    return out.view(n, g.shape[1], h, w)


class NonLocal2d(nn.Module):
    """Embedded-Gaussian non-local block: ``z = BN(W_z y) + x`` with
    ``y_i = sum_j softmax_j(theta(x_i)^T phi(x_j)) g(x_j)`` over all ``H*W`` positions.

    theta, phi and g are 1x1 convolutions to ``in_channels // reduction`` channels (no subsampling,
    as in the paper's comparison); the output 1x1 convolution + BatchNorm, whose weight starts at 0,
    maps back to ``in_channels`` so the block starts as the identity. Input/output ``(N, C, H, W)``.
    """

    def __init__(self, in_channels: int, reduction: int = 2) -> None:
        super().__init__()
        if in_channels < 1 or reduction < 1:
            raise ValueError(f"in_channels and reduction must be >= 1, got {in_channels}, {reduction}")
        inner = max(1, in_channels // reduction)
        self.in_channels = in_channels
        self.theta = nn.Conv2d(in_channels, inner, 1)
        self.phi = nn.Conv2d(in_channels, inner, 1)
        self.g = nn.Conv2d(in_channels, inner, 1)
        self.out = nn.Conv2d(inner, in_channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(in_channels)
        nn.init.zeros_(self.norm.weight)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"NonLocal2d expects (N, C, H, W) with C={self.in_channels}, got {tuple(x.shape)}")
        y = non_local_attention(self.theta(x), self.phi(x), self.g(x))
        return self.norm(self.out(y)) + x
