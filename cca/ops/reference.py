"""Pure-PyTorch criss-cross attention: the ground truth every kernel is tested against.

Works for any floating dtype on any device (no hard-coded ``.cuda()``), 2D and 3D, forward and
the backward formulas (``*_backward``, the contract of the compiled ``cca::*_backward`` ops).

Position order of the criss-cross set of pixel ``u = (t, y, x)`` (slot ``i``):

* ``0 <= i < W``: the whole row, ``(t, y, i)`` (``u`` itself is slot ``x``, counted once);
* ``W <= i < W + H - 1``: the other pixels of the column, ``(t, j, x)`` for ``j != y`` in
  increasing ``j``;
* 3D only, ``W + H - 1 <= i < W + H + T - 2``: the other frames, ``(s, y, x)`` for ``s != t``.

So a 2D map has ``H + W - 1`` slots and a 3D map ``T + H + W - 2``. The same order is used by
the compiled kernels (``csrc/criss_cross.h``). A 2D map is the 3D one with ``T = 1``.

The aggregation runs one product per axis (row, column, time) over whole lines. ``u`` lies on
each of them, but has one weight; it is shared between the lines in exact binary fractions
(1/2 row + 1/2 column, or 1/2 + 1/4 + 1/4), never given as a zero: ``0 x inf`` would turn an
infinite value at ``u`` into NaN where the sum over the criss-cross set is infinite.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "ca_map_2d",
    "ca_map_2d_backward",
    "ca_map_3d",
    "ca_map_3d_backward",
    "ca_weight_2d",
    "ca_weight_2d_backward",
    "ca_weight_3d",
    "ca_weight_3d_backward",
    "criss_cross_attention_2d",
    "criss_cross_attention_3d",
    "others_index",
    "position_softmax",
]


def others_index(size: int, device: torch.device) -> Tensor:
    """``(size - 1, size)`` long tensor: entry ``[j', y]`` is the ``j'``-th position ``!= y``."""
    jp = torch.arange(size - 1, device=device).unsqueeze(1)
    y = torch.arange(size, device=device).unsqueeze(0)
    return jp + (jp >= y).long()


def position_softmax(energy: Tensor) -> Tensor:
    """Softmax over the position dim (dim 1), in float32 at least (stable for half precision)."""
    if energy.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(energy.float(), dim=1).to(energy.dtype)
    return torch.softmax(energy, dim=1)


def _drop_self(full: Tensor, dim_other: int, dim_self: int) -> Tensor:
    """Select, along ``dim_other``, the entries whose index differs from the ``dim_self`` index."""
    size = full.shape[dim_other]
    idx = others_index(size, full.device)  # (size-1, size) over (other, self)
    shape = [1] * full.dim()
    shape[dim_other], shape[dim_self] = size - 1, size
    target = list(full.shape)
    target[dim_other] = size - 1
    return torch.gather(full, dim_other, idx.view(shape).expand(target))


def _add_self(part: Tensor, dim_other: int, dim_self: int, diagonal: Tensor) -> Tensor:
    """Inverse of :func:`_drop_self`: scatter into a full line, ``diagonal`` where other == self
    (``diagonal`` has ``part``'s shape without ``dim_other``)."""
    size = part.shape[dim_self]
    idx = others_index(size, part.device)
    shape = [1] * part.dim()
    shape[dim_other], shape[dim_self] = size - 1, size
    eye = torch.eye(size, dtype=part.dtype, device=part.device).view(
        [size if d in (dim_other, dim_self) else 1 for d in range(part.dim())]
    )
    full = eye * diagonal.unsqueeze(dim_other)
    return full.scatter(dim_other, idx.view(shape).expand(part.shape), part)


# --------------------------------------------------------------------------- volumes (N, C, T, H, W)
def _weight(query: Tensor, key: Tensor) -> Tensor:
    """Affinity of volumes: ``(N, C', T, H, W) x2 -> (N, T + H + W - 2, T, H, W)``."""
    row = torch.einsum("nctyx,nctyi->nityx", query, key)  # (N, W, T, H, W)
    col = torch.einsum("nctyx,nctjx->njtyx", query, key)  # (N, H, T, H, W)
    tim = torch.einsum("nctyx,ncsyx->nstyx", query, key)  # (N, T, T, H, W)
    return torch.cat([row, _drop_self(col, 1, 3), _drop_self(tim, 1, 2)], dim=1)


def _lines(attention: Tensor, time: int, height: int, width: int) -> list[tuple[str, Tensor]]:
    """The slot layout ``(N, L, T, H, W)`` as full-line weights ``[partner, own pixel]`` per axis
    (``row (N, W, ...)``, ``col (N, H, ...)``, ``tim (N, T, ...)``; axes of size 1 left out), with
    ``u``'s own weight shared between the lines in exact binary fractions."""
    row = attention[:, :width]
    col = attention[:, width : width + height - 1]
    tim = attention[:, width + height - 1 :]
    axes = (("col", col, (1, 3), height), ("tim", tim, (1, 2), time))
    extra = [(name, part, dims) for name, part, dims, size in axes if size > 1]
    if not extra:
        return [("row", row)]
    own = torch.diagonal(row, dim1=1, dim2=4)  # (N, T, H, W): the weight of u itself
    slot = torch.arange(width, device=row.device)
    is_own = (slot.view(-1, 1) == slot.view(1, -1)).view(1, width, 1, 1, width)
    lines = [("row", torch.where(is_own, row * 0.5, row))]
    share = 0.5 if len(extra) == 1 else 0.25
    for name, part, (dim_other, dim_self) in extra:
        lines.append((name, _add_self(part, dim_other, dim_self, own * share)))
    return lines


_GATHER = {"row": "nityx,nctyi->nctyx", "col": "njtyx,nctjx->nctyx", "tim": "nstyx,ncsyx->nctyx"}
_SCATTER = {"row": "nityx,nctyx->nctyi", "col": "njtyx,nctyx->nctjx", "tim": "nstyx,nctyx->ncsyx"}


def _map(attention: Tensor, value: Tensor) -> Tensor:
    """Aggregation of volumes: ``out[u] = sum_i attention[i, u] value[pos_i(u)]``."""
    lines = _lines(attention, *value.shape[2:])
    out = torch.einsum(_GATHER[lines[0][0]], lines[0][1], value)
    for name, weights in lines[1:]:
        out = out + torch.einsum(_GATHER[name], weights, value)
    return out


def _adjoint(weights: Tensor, x: Tensor) -> Tensor:
    """Adjoint of the aggregation in its value: ``out[p] = sum_{u, i: pos_i(u) = p} weights[i, u] x[u]``;
    ``(N, L, T, H, W), (N, C, T, H, W) -> (N, C, T, H, W)``."""
    lines = _lines(weights, *x.shape[2:])
    out = torch.einsum(_SCATTER[lines[0][0]], lines[0][1], x)
    for name, line in lines[1:]:
        out = out + torch.einsum(_SCATTER[name], line, x)
    return out


def _volume(fn, *tensors: Tensor):
    """Run a volume function on 2D tensors ``(N, C, H, W)`` as ``T = 1`` volumes."""
    out = fn(*(t.unsqueeze(2) for t in tensors))
    return tuple(o.squeeze(2) for o in out) if isinstance(out, tuple) else out.squeeze(2)


def _weight_backward(grad: Tensor, query: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
    return _map(grad, key), _adjoint(grad, query)


def _map_backward(grad: Tensor, attention: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    return _weight(grad, value), _adjoint(attention, grad)


# --------------------------------------------------------------------------- the ops' contract
def ca_weight_2d(query: Tensor, key: Tensor) -> Tensor:
    """Affinity ``(N, C', H, W), (N, C', H, W) -> (N, H + W - 1, H, W)``."""
    return _volume(_weight, query, key)


def ca_map_2d(attention: Tensor, value: Tensor) -> Tensor:
    """Aggregation ``(N, H + W - 1, H, W), (N, C, H, W) -> (N, C, H, W)``."""
    return _volume(_map, attention, value)


def ca_weight_3d(query: Tensor, key: Tensor) -> Tensor:
    """Affinity ``(N, C', T, H, W), (N, C', T, H, W) -> (N, T + H + W - 2, T, H, W)``."""
    return _weight(query, key)


def ca_map_3d(attention: Tensor, value: Tensor) -> Tensor:
    """Aggregation ``(N, T + H + W - 2, T, H, W), (N, C, T, H, W) -> (N, C, T, H, W)``."""
    return _map(attention, value)


def ca_weight_2d_backward(grad: Tensor, query: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
    """``(d affinity (N, H+W-1, H, W), query, key) -> (d query, d key)``."""
    return _volume(_weight_backward, grad, query, key)


def ca_map_2d_backward(grad: Tensor, attention: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """``(d out (N, C, H, W), attention, value) -> (d attention, d value)``."""
    return _volume(_map_backward, grad, attention, value)


def ca_weight_3d_backward(grad: Tensor, query: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
    """``(d affinity (N, T+H+W-2, T, H, W), query, key) -> (d query, d key)``."""
    return _weight_backward(grad, query, key)


def ca_map_3d_backward(grad: Tensor, attention: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """``(d out (N, C, T, H, W), attention, value) -> (d attention, d value)``."""
    return _map_backward(grad, attention, value)


def criss_cross_attention_2d(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """``softmax(ca_weight) -> ca_map``: ``(N, C', H, W) x2, (N, C, H, W) -> (N, C, H, W)``."""
    return ca_map_2d(position_softmax(ca_weight_2d(query, key)), value)


def criss_cross_attention_3d(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """3D version: ``(N, C', T, H, W) x2, (N, C, T, H, W) -> (N, C, T, H, W)``."""
    return ca_map_3d(position_softmax(ca_weight_3d(query, key)), value)
