"""The softmax over a slot buffer's last dim, in place, and its backward: shared by the 2D and 3D GEMM
backends (:mod:`cca.ops.gemm_backend`, :mod:`cca.ops.gemm_backend_3d`)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["softmax_", "softmax_backward"]


def softmax_(scores: Tensor) -> Tensor:
    """Softmax over the last dim, in place; float16/bfloat16 accumulate in float32 as the reference does."""
    if scores.dtype in (torch.float16, torch.bfloat16) and scores.device.type != "cuda":
        scores.copy_(torch.softmax(scores.float(), dim=-1))  # the CPU half kernels: keep float32 exactly
        return scores
    return torch._softmax(scores, -1, False, out=scores)


def softmax_backward(grad: Tensor, attention: Tensor) -> Tensor:
    """``attention * (grad - sum(attention * grad))`` over the last dim (float32 sums for half dtypes, as the
    CUDA kernel does internally)."""
    if attention.dtype in (torch.float16, torch.bfloat16) and attention.device.type != "cuda":
        p = attention.float()
        g = grad.float()
        return (p * (g - (p * g).sum(-1, keepdim=True))).to(attention.dtype)
    return torch._softmax_backward_data(grad, attention, -1, attention.dtype)
