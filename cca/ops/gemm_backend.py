"""2D criss-cross attention as batched matrix products (cuBLAS on CUDA, BLAS on CPU): the "gemm" backend.

Same semantics as :func:`cca.ops.reference.criss_cross_attention_2d`, ``(N, C', H, W) x2, (N, C, H, W) ->
(N, C, H, W)``, computed in a slot buffer ``S (N, H, W, W + H)`` whose last dim holds, for pixel ``u = (y, x)``,
the ``W`` row positions ``(y, i)`` and then the ``H`` column positions ``(j, x)``, the pixel itself included in
both: masked (``-inf``) in the column part before the softmax, so it counts once, and its weight shared
between the two slots after it. Every step is a strided batched matmul
(``torch.bmm``/``baddbmm`` with ``out=`` views of ``S``: on CUDA cuBLAS writes into the buffer, no copy):

* energies: row, one ``bmm`` over the ``N*H`` rows, ``(W, C') x (C', W)``; column, per image, a ``bmm``
  over the ``W`` columns, ``(H, C') x (C', H)``, both into ``S``;
* the self mask (a diagonal of ``S`` set to ``-inf``), one softmax over the joint ``W + H`` positions,
  in place (float32 accumulation for float16/bfloat16), and the pixel's weight halved into its two slots;
* aggregation in channels-last ``(N, H, W, C)``: a row ``bmm`` ``(W, W) x (W, C)``, then per image the column
  products accumulated into it with ``baddbmm`` (the sum fused in the GEMM), and one transpose back.

Backward (a :class:`torch.autograd.Function`, once differentiable): ``dP`` by the energy products of the
output gradient and the value, ``dS = P * (dP - sum(P dP))`` (``torch._softmax_backward_data``), then
``dq, dk, dv`` by the aggregation products and their adjoints. The attention ``S`` is the only saved tensor
beside the inputs (the size of the ``(N, H+W-1, H, W)`` map the other backends save). Any device, any
floating dtype; volumes ``(N, C, T, H, W)`` go to :mod:`cca.ops.gemm_backend_3d` (the same design with a
time line).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from cca.ops._gemm_softmax import softmax_, softmax_backward
from cca.ops.gemm_backend_3d import criss_cross_attention_3d

__all__ = ["can_run", "criss_cross_attention", "slot_attention"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def can_run(query: Tensor, key: Tensor, value: Tensor) -> str | None:
    """``None`` when this backend serves the arguments, else a one-line reason."""
    if query.dim() not in (4, 5):
        return f"the GEMM backend needs (N, C', H, W) or (N, C', T, H, W) (query.dim()={query.dim()})"
    if query.dtype not in _DTYPES:
        return f"the GEMM backend has no {query.dtype} path (expected one of {', '.join(map(str, _DTYPES))})"
    return None


def _channels_last(t: Tensor) -> Tensor:
    """``(N, C, H, W)`` -> contiguous ``(N, H, W, C)``."""
    return t.permute(0, 2, 3, 1).contiguous()


def _energies(a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    """``out[n, y, x, i] = <a[n, y, x], b[n, y, i]>`` (row, ``i < W``) and ``out[n, y, x, W + j] =
    <a[n, y, x], b[n, j, x]>`` (column); ``a, b (N, H, W, C)`` channels-last, ``out (N, H, W, W + H)``."""
    n, h, w, c = a.shape
    torch.bmm(a.view(n * h, w, c), b.view(n * h, w, c).transpose(1, 2), out=out.view(n * h, w, w + h)[:, :, :w])
    for image in range(n):  # columns: batch over x; (n, x) do not merge into one batch stride
        columns = out[image, :, :, w:].transpose(0, 1)  # (W, H_y, H_j)
        torch.bmm(a[image].transpose(0, 1), b[image].permute(1, 2, 0), out=columns)
    return out


def _self_slots(scores: Tensor) -> tuple[Tensor, Tensor]:
    """Views of the pixel's own two slots: row ``S[n, y, x, x]`` as ``(N, H, W)`` and column
    ``S[n, y, x, W + y]`` as ``(N, W, H)``."""
    w = scores.shape[2]
    return torch.diagonal(scores[..., :w], dim1=2, dim2=3), torch.diagonal(scores[..., w:], dim1=1, dim2=3)


def _share_self_(attention: Tensor) -> Tensor:
    """Give the pixel's weight ``p`` (in its row slot; its column slot is 0 after the mask) half to each slot,
    in place: exact in binary, the same sums, and never ``0 x inf`` where ``u``'s own value or gradient is
    infinite (the reference shares it the same way). The softmax backward ``P (dP - sum P dP)`` on the shared
    buffer gives each slot half of ``u``'s gradient, so dq and dk are unchanged."""
    row, column = _self_slots(attention)
    row.mul_(0.5)
    column.copy_(row.transpose(1, 2))
    return attention


def _aggregate(weights: Tensor, x: Tensor) -> Tensor:
    """``out[n, y, x] = sum_i weights[n, y, x, i] x[n, y, i] + sum_j weights[n, y, x, W + j] x[n, j, x]``;
    ``weights (N, H, W, W + H)``, ``x (N, H, W, C)`` channels-last -> ``(N, H, W, C)``."""
    n, h, w, c = x.shape
    out = torch.bmm(weights.reshape(n * h, w, w + h)[:, :, :w], x.view(n * h, w, c)).view(n, h, w, c)
    for image in range(n):
        columns = out[image].transpose(0, 1)  # (W, H_y, C)
        columns.baddbmm_(weights[image, :, :, w:].transpose(0, 1), x[image].transpose(0, 1))
    return out


def _aggregate_adjoint(weights: Tensor, x: Tensor) -> Tensor:
    """Adjoint of :func:`_aggregate` in its second argument: ``out[p] = sum_{u, s: pos_s(u) = p} weights[u, s] x[u]``."""
    n, h, w, c = x.shape
    out = torch.bmm(weights.reshape(n * h, w, w + h)[:, :, :w].transpose(1, 2), x.view(n * h, w, c)).view(n, h, w, c)
    for image in range(n):
        columns = out[image].transpose(0, 1)  # (W, H_j, C)
        columns.baddbmm_(weights[image, :, :, w:].permute(1, 2, 0), x[image].transpose(0, 1))
    return out


def slot_attention(query: Tensor, key: Tensor) -> Tensor:
    """The attention in the slot buffer layout ``(N, H, W, W + H)``, the pixel's weight shared between its
    row and column slots (:func:`_share_self_`)."""
    n, _, h, w = query.shape
    scores = query.new_empty((n, h, w, w + h))
    _energies(_channels_last(query), _channels_last(key), scores)
    _self_slots(scores)[1].fill_(float("-inf"))  # u counted once: masked in its column
    return _share_self_(softmax_(scores))


def _to_nchw(t: Tensor) -> Tensor:
    return t.permute(0, 3, 1, 2).contiguous()


class _GemmAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        attention = slot_attention(query, key)
        ctx.save_for_backward(query, key, value, attention)
        return _to_nchw(_aggregate(attention, _channels_last(value)))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        query, key, value, attention = ctx.saved_tensors
        need_q, need_k, need_v = ctx.needs_input_grad
        grad_cl = _channels_last(grad)
        grad_value = _to_nchw(_aggregate_adjoint(attention, grad_cl)) if need_v else None
        if not (need_q or need_k):
            return None, None, grad_value
        grad_attention = _energies(grad_cl, _channels_last(value), torch.empty_like(attention))
        grad_scores = softmax_backward(grad_attention, attention)
        grad_query = _to_nchw(_aggregate(grad_scores, _channels_last(key))) if need_q else None
        grad_key = _to_nchw(_aggregate_adjoint(grad_scores, _channels_last(query))) if need_k else None
        return grad_query, grad_key, grad_value


def criss_cross_attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """Criss-cross attention by batched matmuls, autograd-enabled (module doc); 3D for 5-dim inputs.

    Args:
        query: ``Tensor[N, C', H, W]`` (or ``[N, C', T, H, W]``); key: same shape; value: ``Tensor[N, C, H, W]``
            (or ``[N, C, T, H, W]``).

    Returns:
        ``Tensor[N, C, H, W]`` (or ``[N, C, T, H, W]``), contiguous.
    """
    reason = can_run(query, key, value)
    if reason is not None:
        raise ValueError(reason)
    if query.dim() == 5:
        return criss_cross_attention_3d(query, key, value)
    return _GemmAttention.apply(query, key, value)
