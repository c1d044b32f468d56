"""Fused criss-cross attention in Triton (FlashAttention-2 on rows and columns), forward and backward.

Each pixel ``u = (y, x)`` attends to the ``W`` pixels of its row and the ``H - 1`` other pixels of
its column (``cca.ops.reference``'s semantics, no ``1/sqrt(d)`` scaling). Every row and every
column is an attention over a line of length ``W`` or ``H``:

* forward: a row pass and a column pass, each tiled with an online softmax; the column pass merges
  the two through their log-sum-exp (the pixel itself at half weight in each, so it counts once).
  The ``(N, H+W-1, H, W)`` map never reaches memory: only the output and a per-pixel float32 LSE
  ``(N, H, W)`` are saved for backward (plus a float32 ``(N, H, W)`` row-pass LSE while it runs);
* backward: energies recomputed from ``q``, ``k`` and the LSE; ``dq``, ``dk``, ``dv`` each owned by
  one program per pass (no atomics: deterministic);
* loads: no transpose. A program holds ``BL`` lines x ``BM`` positions as 3D tiles and multiplies
  them with batched ``tl.dot`` (2D for the rows, ``BL = 1``); for rows the positions are contiguous
  (``x``), for columns ``BL`` neighbouring columns are read together, contiguous along ``x`` too.
  The alternative, one transpose of ``q``, ``k``, ``v`` (and of the column partial back), would add
  a read and a write of ``2 C' + 2 C`` channels per pixel, about as much as the two passes' own
  traffic (``4 C' + 5 C``);
* dtypes: float16 and bfloat16 multiply on tensor cores with float32 accumulation; float32 uses
  TF32 only when ``torch.backends.cuda.matmul.allow_tf32`` is True, else exact float32 (``ieee``).

Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (Triton's interpreter, slow:
for tests; the variable must be set before Triton's first import, i.e. before ``import cca``).
There the bfloat16 products are done in float32 (exact for bfloat16 operands, the accumulation
being float32 anyway): the interpreter stores bfloat16 as 16-bit integers and its ``tl.dot``
multiplies those bit patterns (a known gap: Triton's debugging guide says the interpreter does not
support bfloat16 arithmetic). Loads, stores and conversions stay bfloat16.
Block sizes are fixed per pass (below), not tuned on a GPU yet. The kernel modules are imported on
first use, never by ``import cca`` or by this module.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch
from torch import Tensor

from cca.ops._checks import check_qkv

__all__ = ["can_run", "criss_cross_attention", "saved_bytes"]

_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_QK_CHANNELS = 256  # one tile holds all of C' (CCNet: C' = C / 8 = 64)
_kernels: dict[str, object] = {}


def _interpreter_active() -> bool:
    """Whether Triton kernels run in its interpreter in this process. Triton decides when a kernel is
    decorated, its own library functions (``tl.cdiv``...) included: so ``TRITON_INTERPRET=1`` counts
    only when set before Triton's first import (``import cca`` imports it through ``torch.compiler``)."""
    if "triton" not in sys.modules:
        return os.environ.get("TRITON_INTERPRET", "0") == "1"
    import triton.language as tl

    return type(tl.cdiv).__name__ == "InterpretedFunction"


def _load():
    """The kernel modules ``(fwd, bwd)``, imported once."""
    if not _kernels:
        from cca.ops import _triton_bwd, _triton_fwd

        _kernels.update(fwd=_triton_fwd, bwd=_triton_bwd)
    return _kernels["fwd"], _kernels["bwd"]


def can_run(query, key, value) -> str | None:
    """``None`` when the fused kernels can serve these tensors, else a one-line reason."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    tensors = (query, key, value)
    if not all(isinstance(t, Tensor) for t in tensors):
        return "query, key and value must be tensors"
    if any(t.dim() != 4 for t in tensors):
        return "only 2D criss-cross attention (N, C, H, W) is fused; 3D is not"
    if query.dtype not in _FUSED_DTYPES or key.dtype != query.dtype or value.dtype != query.dtype:
        return f"dtype {query.dtype} is not fused (float32, float16 or bfloat16 only)"
    if query.shape[1] > _MAX_QK_CHANNELS:
        return f"query channels C'={query.shape[1]} exceed {_MAX_QK_CHANNELS} (one tile holds all of C')"
    device = query.device
    if key.device != device or value.device != device:
        return "query, key and value are on different devices"
    interpreted = _interpreter_active()
    if device.type == "cuda":
        return "Triton runs in its interpreter in this process (TRITON_INTERPRET=1): CPU tensors only" if interpreted else None
    if device.type == "cpu":
        if not interpreted:
            return "CPU tensors need TRITON_INTERPRET=1, set before Triton is first imported (before `import cca`)"
        return None
    return f"device {device} is neither CUDA nor CPU under TRITON_INTERPRET=1"


def _blocks(column: bool, c_qk: int, dtype: torch.dtype, interpret: bool) -> dict[str, int]:
    """Tile sizes of one pass (``BL`` lines x ``BM`` queries x ``BN`` keys, ``BD >= C'``, ``BC`` channels)
    and its launch options.

    GPU: rows ``1 x 64 x 64`` (``1 x 32 x 32`` for exact float32, whose products run on FMA units),
    coalesced along the positions; columns ``BL x 16 x 16`` with ``BL`` neighbouring columns filling one
    32-byte sector (8 in float32, 16 in 16-bit dtypes). Every ``tl.dot`` dimension is >= 16 (the
    tensor-core minimum for 16-bit inputs). Chosen from compiling for sm_90 without a GPU (registers
    and spills, C' = 64); not timed on a GPU. Interpreter: small tiles, so that tests on small images
    cross tile boundaries.
    """
    import triton

    bd = max(triton.next_power_of_2(c_qk), 16)
    if interpret:
        return {"BL": 16, "BM": 8, "BN": 8, "BD": bd, "BC": 8}
    if column:
        lines = 8 if dtype == torch.float32 else 16
        return {"BL": lines, "BM": 16, "BN": 16, "BD": bd, "BC": 16, "num_warps": lines, "num_stages": 2}
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return {"BL": 1, "BM": 32, "BN": 32, "BD": bd, "BC": 32, "num_warps": 8, "num_stages": 2}
    return {"BL": 1, "BM": 64, "BN": 64, "BD": bd, "BC": 64 if bd <= 64 else 32, "num_warps": 8, "num_stages": 2}


def _passes(height: int, width: int):
    """``(column, n_lines, line_len, s_line, s_pos)`` of the row pass, then the column pass."""
    return ((False, height, width, width, 1), (True, width, height, 1, width))


def _launch_options(dtype: torch.dtype, interpret: bool) -> dict:
    """``PRECISION``: exact float32 products unless TF32 is allowed (16-bit inputs: tensor cores either
    way, Triton's default); ``UPCAST``: the interpreter's bfloat16 workaround."""
    exact = dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32
    return {"PRECISION": "ieee" if exact else "tf32", "UPCAST": interpret and dtype == torch.bfloat16}


def _grid(n_lines: int, line_len: int, lines_per_block: int, positions_per_block: int, batch: int, channel_blocks=1):
    """``(line blocks x position blocks, channel blocks, N)``."""
    return (-(-n_lines // lines_per_block) * -(-line_len // positions_per_block), channel_blocks, batch)


def _forward(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    fwd, _ = _load()
    batch, c_qk, height, width = q.shape
    c_v = v.shape[1]
    out = torch.empty_like(v)
    lse_row = torch.empty((batch, height, width), dtype=torch.float32, device=q.device)
    lse = torch.empty_like(lse_row)
    options = _launch_options(q.dtype, fwd.INTERPRET)
    for column, n_lines, line_len, s_line, s_pos in _passes(height, width):
        blocks = _blocks(column, c_qk, q.dtype, fwd.INTERPRET)
        grid = _grid(n_lines, line_len, blocks["BL"], blocks["BM"], batch, -(-c_v // blocks["BC"]))
        fwd.line_attention_fwd[grid](
            q, k, v, out, lse_row, lse, n_lines, line_len, c_qk, c_v, height * width, s_line, s_pos,
            MERGE=column, **blocks, **options,
        )  # fmt: skip
    return out, lse


def _backward(q, k, v, out, lse, grad_out, needs: tuple[bool, bool, bool]):
    fwd, bwd = _load()
    batch, c_qk, height, width = q.shape
    c_v = v.shape[1]
    hw = height * width
    options = _launch_options(q.dtype, fwd.INTERPRET)
    delta = torch.empty((batch, height, width), dtype=torch.float32, device=q.device)
    bwd.delta_kernel[(-(-hw // 64), batch)](grad_out, out, delta, c_v, hw, BP=64, BC=16)
    grads = []
    for index, (kernel, like) in enumerate(((bwd.line_dq, q), (bwd.line_dk, k), (bwd.line_dv, v))):
        if not needs[index]:
            grads.append(None)
            continue
        grad = torch.empty_like(like)
        partial = grad if grad.dtype == torch.float32 else torch.empty(grad.shape, dtype=torch.float32, device=q.device)
        for column, n_lines, line_len, s_line, s_pos in _passes(height, width):
            blocks = _blocks(column, c_qk, q.dtype, fwd.INTERPRET)
            target = grad if column else partial
            geometry = (n_lines, line_len, c_qk, c_v, hw, s_line, s_pos)
            per_block = blocks["BM"] if kernel is bwd.line_dq else blocks["BN"]
            if kernel is bwd.line_dv:
                grid = _grid(n_lines, line_len, blocks["BL"], per_block, batch, -(-c_v // blocks["BC"]))
                args = (q, k, grad_out, lse, partial, target)
            else:
                grid = _grid(n_lines, line_len, blocks["BL"], per_block, batch)
                args = (q, k, v, grad_out, lse, delta, partial, target)
            kernel[grid](*args, *geometry, ACCUMULATE=column, **blocks, **options)
        grads.append(grad)
    return tuple(grads)


class _FusedCrissCross(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        q, k, v = (t.contiguous() for t in (query, key, value))
        out, lse = _forward(q, k, v)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        q, k, v, out, lse = ctx.saved_tensors
        return _backward(q, k, v, out, lse, grad_out.contiguous(), tuple(ctx.needs_input_grad[:3]))


def _device_guard(device: torch.device):
    if device.type == "cuda":
        return torch.cuda.device(device)
    from contextlib import nullcontext

    return nullcontext()


def criss_cross_attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """Fused criss-cross attention, autograd-enabled; the same result as ``cca.criss_cross_attention``.

    Args:
        query: ``Tensor[N, C', H, W]``, float32, float16 or bfloat16 (``C' <= 256``).
        key: ``Tensor[N, C', H, W]``.
        value: ``Tensor[N, C, H, W]``.

    Returns:
        ``Tensor[N, C, H, W]``. Runs on the tensors' device: CUDA, or CPU under ``TRITON_INTERPRET=1``.

    Raises:
        TypeError / ValueError: bad arguments, as the other backends raise them.
        NotImplementedError: valid arguments this backend cannot serve (:func:`can_run`'s reason).
    """
    check_qkv(query, key, value, 4)
    reason = can_run(query, key, value)
    if reason is not None:
        raise NotImplementedError(f"the fused Triton criss-cross attention cannot run here: {reason}")
    with _device_guard(query.device):
        return _FusedCrissCross.apply(query, key, value)


def saved_bytes(query: Tensor, value: Tensor) -> dict[str, int]:
    """The fused kernel's memory beyond its inputs and gradients, in bytes, for the memory model.

    ``out_bytes`` + ``lse_bytes``: what autograd keeps from forward to backward (the output
    ``(N, C, H, W)`` in the input dtype and the LSE ``(N, H, W)`` float32); ``map_bytes``: the
    ``(N, H+W-1, H, W)`` attention map, input dtype, that the einsum and unfused paths keep instead;
    ``forward_workspace_bytes``: the row pass's float32 LSE, freed after forward;
    ``backward_workspace_bytes``: ``D = rowsum(dO * O)`` (float32 ``(N, H, W)``) and, for 16-bit
    dtypes, the float32 row-pass partials of ``dq``, ``dk``, ``dv`` (float32 gradients accumulate in place).
    """
    batch, c_qk, height, width = query.shape
    pixels = batch * height * width
    element = value.element_size()
    partials = 0 if value.dtype == torch.float32 else pixels * (2 * c_qk + value.shape[1]) * 4
    return {
        "out_bytes": value.numel() * element,
        "lse_bytes": pixels * 4,
        "map_bytes": pixels * (height + width - 1) * element,
        "forward_workspace_bytes": pixels * 4,
        "backward_workspace_bytes": pixels * 4 + partials,
    }
