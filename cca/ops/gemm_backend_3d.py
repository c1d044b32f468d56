"""3D criss-cross attention as batched matrix products: the GEMM backend for volumes ``(N, C, T, H, W)``.

The 2D design of :mod:`cca.ops.gemm_backend` with a third line: the slot buffer ``S (N, T, H, W, L)``,
``L = W + H + T``, holds for voxel ``u = (t, y, x)`` its row ``(t, y, i)``, its column ``(t, j, x)`` and its
time line ``(s, y, x)``, ``u`` itself in all three: masked (``-inf``) in the column and time parts before the
one softmax, so it counts once, then its weight ``p`` shared as ``p/2`` (row), ``p/4`` (column), ``p/4``
(time), exact in binary (the reference shares it the same way when all three axes are longer than 1).
Products: rows one ``bmm`` over ``N T H``; columns one per ``(n, t)`` over ``W``; time lines one per image
over ``H W``. Same semantics as :func:`cca.ops.reference.criss_cross_attention_3d`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from cca.ops._gemm_softmax import softmax_, softmax_backward

__all__ = ["criss_cross_attention_3d", "slot_attention_3d"]


def _channels_last(t: Tensor) -> Tensor:
    """``(N, C, T, H, W)`` -> contiguous ``(N, T, H, W, C)``."""
    return t.permute(0, 2, 3, 4, 1).contiguous()


def _to_ncthw(t: Tensor) -> Tensor:
    return t.permute(0, 4, 1, 2, 3).contiguous()


def _time_view(t: Tensor) -> Tensor:
    """``(T, H, W, X)`` (one image) -> the ``(H W, T, X)`` view batched over pixels."""
    tt, h, w, x = t.shape
    return t.permute(1, 2, 0, 3).reshape(h * w, tt, x)


def _parts(buffer: Tensor, image: int | None = None):
    """The row, column and time parts of the slot buffer (of one image when ``image`` is given)."""
    w, h = buffer.shape[-2], buffer.shape[-3]
    b = buffer if image is None else buffer[image]
    return b[..., :w], b[..., w : w + h], b[..., w + h :]


def _energies(a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    """``out[n, t, y, x, slot] = <a[u], b[pos_slot(u)]>``; ``a, b (N, T, H, W, C)``, ``out (N, T, H, W, L)``."""
    n, tt, h, w, c = a.shape
    size = w + h + tt
    torch.bmm(a.view(-1, w, c), b.view(-1, w, c).transpose(1, 2), out=out.view(-1, w, size)[:, :, :w])
    for image in range(n):
        _, columns, times = _parts(out, image)
        for t in range(tt):
            torch.bmm(a[image, t].transpose(0, 1), b[image, t].permute(1, 2, 0), out=columns[t].transpose(0, 1))
        torch.bmm(_time_view(a[image]), _time_view(b[image]).transpose(1, 2), out=_time_view(times))
    return out


def _aggregate(weights: Tensor, x: Tensor) -> Tensor:
    """``out[u] = sum_slot weights[u, slot] x[pos_slot(u)]``; ``x (N, T, H, W, C)`` -> ``(N, T, H, W, C)``."""
    n, tt, h, w, c = x.shape
    rows = weights.reshape(-1, w, w + h + tt)[:, :, :w]
    out = torch.bmm(rows, x.view(-1, w, c)).view(n, tt, h, w, c)
    for image in range(n):
        _, columns, times = _parts(weights, image)
        for t in range(tt):
            out[image, t].transpose(0, 1).baddbmm_(columns[t].transpose(0, 1), x[image, t].transpose(0, 1))
        _time_view(out[image]).baddbmm_(_time_view(times), _time_view(x[image]))
    return out


def _aggregate_adjoint(weights: Tensor, x: Tensor) -> Tensor:
    """Adjoint of :func:`_aggregate` in ``x``: ``out[p] = sum_{u, slot: pos_slot(u) = p} weights[u, slot] x[u]``."""
    n, tt, h, w, c = x.shape
    rows = weights.reshape(-1, w, w + h + tt)[:, :, :w].transpose(1, 2)
    out = torch.bmm(rows, x.view(-1, w, c)).view(n, tt, h, w, c)
    for image in range(n):
        _, columns, times = _parts(weights, image)
        for t in range(tt):
            out[image, t].transpose(0, 1).baddbmm_(columns[t].permute(1, 2, 0), x[image, t].transpose(0, 1))
        _time_view(out[image]).baddbmm_(_time_view(times).transpose(1, 2), _time_view(x[image]))
    return out


def _self_slots(buffer: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Views of the voxel's own slots: row ``(N, T, H, W)``, column ``(N, T, W, H)``, time ``(N, H, W, T)``."""
    row, column, time = _parts(buffer)
    return (torch.diagonal(row, dim1=3, dim2=4), torch.diagonal(column, dim1=2, dim2=4),
            torch.diagonal(time, dim1=1, dim2=4))


def slot_attention_3d(query: Tensor, key: Tensor) -> Tensor:
    """The attention in the slot layout ``(N, T, H, W, W + H + T)``, the voxel's weight shared 1/2, 1/4, 1/4."""
    n, _, tt, h, w = query.shape
    scores = query.new_empty((n, tt, h, w, w + h + tt))
    _energies(_channels_last(query), _channels_last(key), scores)
    row, column, time = _self_slots(scores)
    column.fill_(float("-inf"))
    time.fill_(float("-inf"))
    softmax_(scores)
    row.mul_(0.5)
    column.copy_(row.transpose(2, 3)).mul_(0.5)
    time.copy_(row.permute(0, 2, 3, 1)).mul_(0.5)
    return scores


class _GemmAttention3d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        attention = slot_attention_3d(query, key)
        ctx.save_for_backward(query, key, value, attention)
        return _to_ncthw(_aggregate(attention, _channels_last(value)))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        query, key, value, attention = ctx.saved_tensors
        need_q, need_k, need_v = ctx.needs_input_grad
        grad_cl = _channels_last(grad)
        grad_value = _to_ncthw(_aggregate_adjoint(attention, grad_cl)) if need_v else None
        if not (need_q or need_k):
            return None, None, grad_value
        grad_scores = softmax_backward(_energies(grad_cl, _channels_last(value), torch.empty_like(attention)), attention)
        grad_query = _to_ncthw(_aggregate(grad_scores, _channels_last(key))) if need_q else None
        grad_key = _to_ncthw(_aggregate_adjoint(grad_scores, _channels_last(query))) if need_k else None
        return grad_query, grad_key, grad_value


def criss_cross_attention_3d(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """3D criss-cross attention by batched matmuls, autograd-enabled: ``(N, C', T, H, W) x2, (N, C, T, H, W)
    -> (N, C, T, H, W)``, contiguous."""
    return _GemmAttention3d.apply(query, key, value)
