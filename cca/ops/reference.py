"""Pure-PyTorch criss-cross attention: the ground truth every kernel is tested against.

Works for any floating dtype on any device (no hard-coded ``.cuda()``), 2D and 3D.

Position order of the criss-cross set of pixel ``u = (t, y, x)`` (slot ``i``):

* ``0 <= i < W``: the whole row, ``(t, y, i)`` (``u`` itself is slot ``x``, counted once);
* ``W <= i < W + H - 1``: the other pixels of the column, ``(t, j, x)`` for ``j != y`` in
  increasing ``j``;
* 3D only, ``W + H - 1 <= i < W + H + T - 2``: the other frames, ``(s, y, x)`` for ``s != t``.

So a 2D map has ``H + W - 1`` slots and a 3D map ``T + H + W - 2``. The same order is used by
the compiled kernels (``csrc/criss_cross.h``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "ca_weight_2d",
    "ca_map_2d",
    "ca_weight_3d",
    "ca_map_3d",
    "criss_cross_attention_2d",
    "criss_cross_attention_3d",
    "others_index",
]


def others_index(size: int, device: torch.device) -> Tensor:
    """``(size - 1, size)`` long tensor: entry ``[j', y]`` is the ``j'``-th position ``!= y``."""
    jp = torch.arange(size - 1, device=device).unsqueeze(1)
    y = torch.arange(size, device=device).unsqueeze(0)
    return jp + (jp >= y).long()


def _drop_self(full: Tensor, dim_other: int, dim_self: int) -> Tensor:
    """Select, along ``dim_other``, the entries whose index differs from the ``dim_self`` index."""
    size = full.shape[dim_other]
    idx = others_index(size, full.device)  # (size-1, size) over (other, self)
    shape = [1] * full.dim()
    shape[dim_other], shape[dim_self] = size - 1, size
    target = list(full.shape)
    target[dim_other] = size - 1
    return torch.gather(full, dim_other, idx.view(shape).expand(target))


def _add_self(part: Tensor, dim_other: int, dim_self: int) -> Tensor:
    """Inverse of :func:`_drop_self`: scatter into a full line with zeros where other == self."""
    size = part.shape[dim_self]
    idx = others_index(size, part.device)
    shape = [1] * part.dim()
    shape[dim_other], shape[dim_self] = size - 1, size
    target = list(part.shape)
    target[dim_other] = size
    full = part.new_zeros(target)
    return full.scatter(dim_other, idx.view(shape).expand(part.shape), part)


def ca_weight_2d(query: Tensor, key: Tensor) -> Tensor:
    """Affinity ``(N, C', H, W), (N, C', H, W) -> (N, H + W - 1, H, W)``."""
    row = torch.einsum("ncyx,ncyi->niyx", query, key)  # (N, W, H, W)
    col = torch.einsum("ncyx,ncjx->njyx", query, key)  # (N, H, H, W)
    return torch.cat([row, _drop_self(col, 1, 2)], dim=1)


def ca_map_2d(attention: Tensor, value: Tensor) -> Tensor:
    """Aggregation ``(N, H + W - 1, H, W), (N, C, H, W) -> (N, C, H, W)``."""
    width = value.shape[3]
    row, col = attention[:, :width], attention[:, width:]
    out = torch.einsum("niyx,ncyi->ncyx", row, value)
    return out + torch.einsum("njyx,ncjx->ncyx", _add_self(col, 1, 2), value)


def ca_weight_3d(query: Tensor, key: Tensor) -> Tensor:
    """Affinity ``(N, C', T, H, W), (N, C', T, H, W) -> (N, T + H + W - 2, T, H, W)``."""
    row = torch.einsum("nctyx,nctyi->nityx", query, key)  # (N, W, T, H, W)
    col = torch.einsum("nctyx,nctjx->njtyx", query, key)  # (N, H, T, H, W)
    tim = torch.einsum("nctyx,ncsyx->nstyx", query, key)  # (N, T, T, H, W)
    return torch.cat([row, _drop_self(col, 1, 3), _drop_self(tim, 1, 2)], dim=1)


def ca_map_3d(attention: Tensor, value: Tensor) -> Tensor:
    """Aggregation ``(N, T + H + W - 2, T, H, W), (N, C, T, H, W) -> (N, C, T, H, W)``."""
    _, _, _, height, width = value.shape
    row = attention[:, :width]
    col = attention[:, width : width + height - 1]
    tim = attention[:, width + height - 1 :]
    out = torch.einsum("nityx,nctyi->nctyx", row, value)
    out = out + torch.einsum("njtyx,nctjx->nctyx", _add_self(col, 1, 3), value)
    return out + torch.einsum("nstyx,ncsyx->nctyx", _add_self(tim, 1, 2), value)


def _softmax(energy: Tensor) -> Tensor:
    """Softmax over the position dim, in float32 at least (stable for half precision)."""
    if energy.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(energy.float(), dim=1).to(energy.dtype)
    return torch.softmax(energy, dim=1)


def criss_cross_attention_2d(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """``softmax(ca_weight) -> ca_map``: ``(N, C', H, W) x2, (N, C, H, W) -> (N, C, H, W)``."""
    return ca_map_2d(_softmax(ca_weight_2d(query, key)), value)


def criss_cross_attention_3d(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """3D version: ``(N, C', T, H, W) x2, (N, C, T, H, W) -> (N, C, T, H, W)``."""
    return ca_map_3d(_softmax(ca_weight_3d(query, key)), value)
