"""Triton backward kernels of the fused criss-cross attention (FlashAttention-2 on lines).

Same line addressing and tiles as :mod:`cca.ops._triton_fwd`. With ``P = exp(s - lse)`` recomputed
from ``q``, ``k`` and the saved per-pixel ``lse`` (the pixel itself at half weight in each pass),
``D = rowsum(dO * O)``, ``dP = dO v^T`` and ``dS = P (dP - D)``:
``dq = dS k``, ``dk = dS^T q``, ``dv = P^T dO``, each the sum of a row pass and a column pass.

Every output element is written by exactly one program per pass (``dq``: the program of its query
block; ``dk``/``dv``: the program of its key block, which loops over the query blocks of its
lines), so there are no atomics and the result is deterministic. The first pass (rows) writes a
float32 partial; the second (columns) reads it back, adds its own and writes the gradient in the
input's dtype (in place when that is float32). ``dP`` needs every value channel: the ``dq`` and
``dk`` programs loop over channel blocks; ``dv`` has a grid axis over channel blocks and recomputes
``P`` per block (``C'`` multiply-adds per entry, against ``BC`` for the aggregation itself).
"""

from __future__ import annotations

import triton
import triton.language as tl

from cca.ops._triton_fwd import _dot, _energy_log2, _tile_3d, _tile_3d_t


@triton.jit
def delta_kernel(do_ptr, o_ptr, delta_ptr, c_v, hw, BP: tl.constexpr, BC: tl.constexpr):
    """``delta[n, p] = sum_c dO[n, c, p] * O[n, c, p]`` in float32; grid ``(cdiv(hw, BP), N)``."""
    n = tl.program_id(1).to(tl.int64)
    pix = tl.program_id(0) * BP + tl.arange(0, BP)
    pix_ok = pix < hw
    total = tl.zeros((BP,), tl.float32)
    for start in range(0, c_v, BC):
        chans = start + tl.arange(0, BC)
        offs = n * c_v * hw + chans[:, None] * hw + pix[None, :]
        ok = (chans < c_v)[:, None] & pix_ok[None, :]
        do = tl.load(do_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        o = tl.load(o_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        total += tl.sum(do * o, 0)
    tl.store(delta_ptr + n * hw + pix, total, mask=pix_ok)


@triton.jit
def _grad_energy(q, k_t, lse2, delta, do_ptr, v_ptr, v_base, lines, qpos, kpos, line_ok, q_ok, k_ok,
                 line_len, c_v, hw, s_line, s_pos,
                 BC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``(P, dS)``, both ``(BL, BM, BN)`` float32, for one query tile against one key tile;
    ``P`` is 0 for queries past the line's end."""
    s = _energy_log2(q, k_t, qpos, kpos, line_len, PRECISION, UPCAST)
    p = tl.exp2(s - lse2[:, :, None])
    p = tl.where((line_ok[:, None] & q_ok[None, :])[:, :, None], p, 0.0)
    dp = tl.zeros(p.shape, tl.float32)
    for start in range(0, c_v, BC):
        chans = start + tl.arange(0, BC)
        c_ok = chans < c_v
        do = _tile_3d(do_ptr, v_base, lines, qpos, chans, s_line, s_pos, hw,
                      line_ok[:, None, None] & q_ok[None, :, None] & c_ok[None, None, :])
        v_t = _tile_3d_t(v_ptr, v_base, lines, chans, kpos, s_line, s_pos, hw,
                         line_ok[:, None, None] & c_ok[None, :, None] & k_ok[None, None, :])
        dp += _dot(do, v_t, PRECISION, UPCAST)
    return p, p * (dp - delta[:, :, None])


@triton.jit
def _query_stats(lse_ptr, delta_ptr, n, lines, qpos, line_ok, q_ok, hw, s_line, s_pos):
    """Per-query ``lse`` in log2 units and ``delta``, ``(BL, BM)`` float32."""
    pix = n * hw + lines[:, None] * s_line + qpos[None, :] * s_pos
    ok = line_ok[:, None] & q_ok[None, :]
    lse2 = tl.load(lse_ptr + pix, mask=ok, other=0.0) * 1.4426950408889634
    return lse2, tl.load(delta_ptr + pix, mask=ok, other=0.0)


@triton.jit
def _store_grad(grad, partial_ptr, out_ptr, offs, ok, ACCUMULATE: tl.constexpr):
    """Write ``grad`` (+ the first pass's float32 partial when ``ACCUMULATE``) in ``out``'s dtype."""
    if ACCUMULATE:
        grad += tl.load(partial_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, grad.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def line_dq(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, partial_ptr, dq_ptr,
            n_lines, line_len, c_qk, c_v, hw, s_line, s_pos,
            ACCUMULATE: tl.constexpr, BL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
            BD: tl.constexpr, BC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``dq`` of one pass; a program owns ``BL`` lines x ``BM`` queries and loops over the keys.
    Grid ``(cdiv(n_lines, BL) * cdiv(line_len, BM), 1, N)``."""
    pid = tl.program_id(0)
    n = tl.program_id(2).to(tl.int64)
    n_qblocks = tl.cdiv(line_len, BM)
    lines = (pid // n_qblocks) * BL + tl.arange(0, BL)
    qpos = (pid % n_qblocks) * BM + tl.arange(0, BM)
    dims = tl.arange(0, BD)
    line_ok = lines < n_lines
    q_ok = qpos < line_len
    d_ok = dims < c_qk
    qk_base = n * c_qk * hw
    q_mask = line_ok[:, None, None] & q_ok[None, :, None] & d_ok[None, None, :]
    q = _tile_3d(q_ptr, qk_base, lines, qpos, dims, s_line, s_pos, hw, q_mask)
    lse2, delta = _query_stats(lse_ptr, delta_ptr, n, lines, qpos, line_ok, q_ok, hw, s_line, s_pos)
    dq = tl.zeros((BL, BM, BD), tl.float32)
    for start in range(0, line_len, BN):
        kpos = start + tl.arange(0, BN)
        k_ok = kpos < line_len
        k_t = _tile_3d_t(k_ptr, qk_base, lines, dims, kpos, s_line, s_pos, hw,
                         line_ok[:, None, None] & d_ok[None, :, None] & k_ok[None, None, :])
        _, ds = _grad_energy(q, k_t, lse2, delta, do_ptr, v_ptr, n * c_v * hw, lines, qpos, kpos, line_ok,
                             q_ok, k_ok, line_len, c_v, hw, s_line, s_pos, BC, PRECISION, UPCAST)
        dq += _dot(ds.to(q.dtype), tl.permute(k_t, (0, 2, 1)), PRECISION, UPCAST)
    offs = qk_base + lines[:, None, None] * s_line + qpos[None, :, None] * s_pos + dims[None, None, :] * hw
    _store_grad(dq, partial_ptr, dq_ptr, offs, q_mask, ACCUMULATE)


@triton.jit
def line_dk(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, partial_ptr, dk_ptr,
            n_lines, line_len, c_qk, c_v, hw, s_line, s_pos,
            ACCUMULATE: tl.constexpr, BL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
            BD: tl.constexpr, BC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``dk`` of one pass; a program owns ``BL`` lines x ``BN`` keys and loops over the queries.
    Grid ``(cdiv(n_lines, BL) * cdiv(line_len, BN), 1, N)``."""
    pid = tl.program_id(0)
    n = tl.program_id(2).to(tl.int64)
    n_kblocks = tl.cdiv(line_len, BN)
    lines = (pid // n_kblocks) * BL + tl.arange(0, BL)
    kpos = (pid % n_kblocks) * BN + tl.arange(0, BN)
    dims = tl.arange(0, BD)
    line_ok = lines < n_lines
    k_ok = kpos < line_len
    d_ok = dims < c_qk
    qk_base = n * c_qk * hw
    k_t = _tile_3d_t(k_ptr, qk_base, lines, dims, kpos, s_line, s_pos, hw,
                     line_ok[:, None, None] & d_ok[None, :, None] & k_ok[None, None, :])
    dk = tl.zeros((BL, BN, BD), tl.float32)
    for start in range(0, line_len, BM):
        qpos = start + tl.arange(0, BM)
        q_ok = qpos < line_len
        q = _tile_3d(q_ptr, qk_base, lines, qpos, dims, s_line, s_pos, hw,
                     line_ok[:, None, None] & q_ok[None, :, None] & d_ok[None, None, :])
        lse2, delta = _query_stats(lse_ptr, delta_ptr, n, lines, qpos, line_ok, q_ok, hw, s_line, s_pos)
        _, ds = _grad_energy(q, k_t, lse2, delta, do_ptr, v_ptr, n * c_v * hw, lines, qpos, kpos, line_ok,
                             q_ok, k_ok, line_len, c_v, hw, s_line, s_pos, BC, PRECISION, UPCAST)
        dk += _dot(tl.permute(ds, (0, 2, 1)).to(q.dtype), q, PRECISION, UPCAST)
    offs = qk_base + lines[:, None, None] * s_line + kpos[None, :, None] * s_pos + dims[None, None, :] * hw
    _store_grad(dk, partial_ptr, dk_ptr, offs, line_ok[:, None, None] & k_ok[None, :, None] & d_ok[None, None, :],
                ACCUMULATE)


@triton.jit
def line_dv(q_ptr, k_ptr, do_ptr, lse_ptr, partial_ptr, dv_ptr,
            n_lines, line_len, c_qk, c_v, hw, s_line, s_pos,
            ACCUMULATE: tl.constexpr, BL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
            BD: tl.constexpr, BC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``dv`` of one pass for ``BC`` channels; a program owns ``BL`` lines x ``BN`` keys and loops
    over the queries. Grid ``(cdiv(n_lines, BL) * cdiv(line_len, BN), cdiv(c_v, BC), N)``."""
    pid = tl.program_id(0)
    cb = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    n_kblocks = tl.cdiv(line_len, BN)
    lines = (pid // n_kblocks) * BL + tl.arange(0, BL)
    kpos = (pid % n_kblocks) * BN + tl.arange(0, BN)
    dims = tl.arange(0, BD)
    chans = cb * BC + tl.arange(0, BC)
    line_ok = lines < n_lines
    k_ok = kpos < line_len
    d_ok = dims < c_qk
    c_ok = chans < c_v
    qk_base = n * c_qk * hw
    v_base = n * c_v * hw
    k_t = _tile_3d_t(k_ptr, qk_base, lines, dims, kpos, s_line, s_pos, hw,
                     line_ok[:, None, None] & d_ok[None, :, None] & k_ok[None, None, :])
    dv = tl.zeros((BL, BN, BC), tl.float32)
    for start in range(0, line_len, BM):
        qpos = start + tl.arange(0, BM)
        q_ok = qpos < line_len
        q = _tile_3d(q_ptr, qk_base, lines, qpos, dims, s_line, s_pos, hw,
                     line_ok[:, None, None] & q_ok[None, :, None] & d_ok[None, None, :])
        pix = n * hw + lines[:, None] * s_line + qpos[None, :] * s_pos
        lse2 = tl.load(lse_ptr + pix, mask=line_ok[:, None] & q_ok[None, :], other=0.0) * 1.4426950408889634
        s = _energy_log2(q, k_t, qpos, kpos, line_len, PRECISION, UPCAST)
        p = tl.exp2(s - lse2[:, :, None])
        p = tl.where((line_ok[:, None] & q_ok[None, :])[:, :, None], p, 0.0)
        do = _tile_3d(do_ptr, v_base, lines, qpos, chans, s_line, s_pos, hw,
                      line_ok[:, None, None] & q_ok[None, :, None] & c_ok[None, None, :])
        dv += _dot(tl.permute(p, (0, 2, 1)).to(do.dtype), do, PRECISION, UPCAST)
    offs = v_base + lines[:, None, None] * s_line + kpos[None, :, None] * s_pos + chans[None, None, :] * hw
    _store_grad(dv, partial_ptr, dv_ptr, offs, line_ok[:, None, None] & k_ok[None, :, None] & c_ok[None, None, :],
                ACCUMULATE)
