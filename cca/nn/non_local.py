"""Non-local block (Wang et al., CVPR 2018), embedded-Gaussian form, as CCNet compares against it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cca._checks import check_nchw, positive_int

__all__ = ["NonLocal2d", "non_local_attention"]


def non_local_attention(theta: Tensor, phi: Tensor, g: Tensor) -> Tensor:
    """``y_i = sum_j softmax_j(theta_i . phi_j) g_j`` over all ``HW`` positions (no scaling):
    ``(N, C', H, W), (N, C', H, W), (N, C'', H, W) -> (N, C'', H, W)``."""
    n, _, h, w = theta.shape
    affinity = torch.bmm(theta.flatten(2).transpose(1, 2), phi.flatten(2))  # (N, HW_i, HW_j)
    attention = torch.softmax(affinity, dim=-1)
    out = torch.bmm(g.flatten(2), attention.transpose(1, 2))  # (N, C'', HW_i)
    return out.view(n, g.shape[1], h, w)


class NonLocal2d(nn.Module):
    """Embedded-Gaussian non-local block: ``z = BN(W_z y) + x`` with
    ``y_i = sum_j softmax_j(theta(x_i)^T phi(x_j)) g(x_j)`` over all ``H*W`` positions.

    theta, phi and g are 1x1 convolutions to ``in_channels // reduction`` channels (no subsampling,
    as in the paper's comparison); the output 1x1 convolution + BatchNorm, whose weight starts at 0
    (as Wang et al.), maps back to ``in_channels`` so the block starts as the identity.
    Input/output ``(N, C, H, W)``; memory ``O((HW)^2)`` for the ``(N, HW, HW)`` attention.
    """

    def __init__(self, in_channels: int, reduction: int = 2) -> None:
        super().__init__()
        inner = max(1, positive_int("in_channels", in_channels) // positive_int("reduction", reduction))
        self.in_channels = in_channels
        self.reduction = reduction
        self.theta = nn.Conv2d(in_channels, inner, 1)
        self.phi = nn.Conv2d(in_channels, inner, 1)
        self.g = nn.Conv2d(in_channels, inner, 1)
        self.out = nn.Conv2d(inner, in_channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(in_channels)
        nn.init.zeros_(self.norm.weight)

    def forward(self, x: Tensor) -> Tensor:
        check_nchw("x", x, self.in_channels, owner=type(self).__name__)
        y = non_local_attention(self.theta(x), self.phi(x), self.g(x))
        return self.norm(self.out(y)) + x

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, reduction={self.reduction}"
