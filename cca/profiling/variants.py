"""Why our non-local memory differs from the paper's: the same increment under other assumptions.

The paper's efficiency table gives the memory that +NL, +NL x2 and +RCCA add to the ResNet-50 baseline
network (``memory_increment_mb`` of ``experiments/paper/table05_efficiency.csv``), without saying how
memory was measured or which non-local code was used. Each variant
below changes one assumption and is measured with :func:`cca.profiling.network.network_increment`,
never tuned to hit the paper:

* the non-local block as 2018 implementations wrote it:
  ``nl_2018_matmul`` (the widely used PyTorch port of Wang et al.'s code, 2018: ``theta``/``phi``/``g`` to
  C/2 channels, ``f = matmul(theta^T, phi)``, ``softmax``, ``matmul(f, g^T)``, ``W`` conv + BN),
  ``nl_2018_scaled`` (the self-attention block of OCNet, 2018, by the CCNet group: shared key/query
  1x1 conv + BN + ReLU to C/2, value 1x1 conv, ``sim = (C/2)^-0.5 * matmul(q, k)``, softmax,
  ``W`` conv), ``nl_no_reduction`` (``g`` and the inner products on all C channels) and
  ``nl_subsampled`` (2x2 max pooling on ``phi`` and ``g``, the original code's option);
* the step: training (forward + backward) or inference (forward alone);
* the batch: one crop or two per GPU (the training batch of the official code over its GPUs:
  ``batch`` in ``experiments/paper/official_code.csv``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cca.nn import NonLocal2d

__all__ = ["NONLOCAL_VARIANTS", "build_variant"]


class NonLocal2018Matmul(nn.Module):
    """The 2018 PyTorch port of the embedded-Gaussian non-local block (matmul on permuted views),
    optionally with 2x2 max pooling on ``phi`` and ``g``. ``(N, C, H, W) -> (N, C, H, W)``."""

    def __init__(self, channels: int, reduction: int = 2, sub_sample: bool = False) -> None:
        super().__init__()
        inner = max(1, channels // reduction)
        self.inner = inner
        self.g = nn.Conv2d(channels, inner, 1)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.pool = nn.MaxPool2d(2) if sub_sample else nn.Identity()
        self.W = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        g_x = self.pool(self.g(x)).view(n, self.inner, -1).permute(0, 2, 1)
        theta_x = self.theta(x).view(n, self.inner, -1).permute(0, 2, 1)
        phi_x = self.pool(self.phi(x)).view(n, self.inner, -1)
        f = torch.matmul(theta_x, phi_x)
        f_div_c = F.softmax(f, dim=-1)
        y = torch.matmul(f_div_c, g_x).permute(0, 2, 1).contiguous().view(n, self.inner, h, w)
        return self.W(y) + x


class SelfAttention2018(nn.Module):
    """OCNet's (2018) self-attention block: shared key/query projection (1x1 conv + BN + ReLU),
    scaled dot product, softmax, aggregation of a 1x1-conv value, 1x1 output conv; plus the input."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        self.key_channels = max(1, channels // reduction)
        self.value_channels = self.key_channels
        self.f_key = nn.Sequential(
            nn.Conv2d(channels, self.key_channels, 1), nn.BatchNorm2d(self.key_channels), nn.ReLU(inplace=True)
        )
        self.f_value = nn.Conv2d(channels, self.value_channels, 1)
        self.W = nn.Conv2d(self.value_channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        value = self.f_value(x).view(n, self.value_channels, -1).permute(0, 2, 1)
        key = self.f_key(x)
        query = key.view(n, self.key_channels, -1).permute(0, 2, 1)
        key = key.view(n, self.key_channels, -1)
        sim = (self.key_channels**-0.5) * torch.matmul(query, key)
        sim = F.softmax(sim, dim=-1)
        context = torch.matmul(sim, value).permute(0, 2, 1).contiguous().view(n, self.value_channels, h, w)
        return self.W(context) + x


NONLOCAL_VARIANTS = {
    "nonlocal": "ours: cca.nn.NonLocal2d (embedded Gaussian, C/2 inner channels, bmm, BN on the output)",
    "nl_2018_matmul": "2018 PyTorch port of Wang et al. (matmul on permuted views, C/2, W conv + BN)",
    "nl_2018_scaled": "OCNet 2018 self-attention (shared key/query conv-BN-ReLU, scaled dot product, C/2)",
    "nl_no_reduction": "ours with all C channels inside (reduction 1)",
    "nl_subsampled": "2018 port with 2x2 max pooling on phi and g (sub_sample=True)",
}


def build_variant(name: str, channels: int) -> nn.Module:
    """The non-local variant ``name`` (a key of :data:`NONLOCAL_VARIANTS`) on ``channels`` channels."""
    builders = {
        "nonlocal": lambda: NonLocal2d(channels),
        "nl_2018_matmul": lambda: NonLocal2018Matmul(channels),
        "nl_2018_scaled": lambda: SelfAttention2018(channels),
        "nl_no_reduction": lambda: NonLocal2d(channels, reduction=1),
        "nl_subsampled": lambda: NonLocal2018Matmul(channels, sub_sample=True),
    }
    if name not in builders:
        raise ValueError(f"unknown non-local variant {name!r}; valid variants: {', '.join(builders)}")
    return builders[name]()
