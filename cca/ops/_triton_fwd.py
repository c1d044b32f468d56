"""Triton forward kernel of the fused criss-cross attention: one pass over lines (rows or columns).

Imported only by :mod:`cca.ops.triton_kernels`, on first use. Whether the kernels compile for a GPU
or run in Triton's interpreter on CPU tensors was decided when Triton was imported
(``TRITON_INTERPRET=1``): ``INTERPRET`` below records it.

A *line* is a row (``n_lines = H``, ``line_len = W``, ``s_line = W``, ``s_pos = 1``) or a column
(``n_lines = W``, ``line_len = H``, ``s_line = 1``, ``s_pos = W``) of a contiguous ``(N, C, H, W)``
tensor; channel ``c`` of pixel ``(line, pos)`` of image ``n`` sits at
``n * C * H * W + c * H * W + line * s_line + pos * s_pos``. A program owns ``BL`` lines x ``BM``
query positions x ``BC`` value channels; its tiles are 3D, ``(BL, BM, .)``, and every energy and
aggregation is a batched ``tl.dot`` (batch = the ``BL`` lines). Whichever of the line and position
axes has stride 1 makes the loads coalesced: along the position for rows, along the lines (``BL``
neighbouring columns read together) for columns. So no transpose and no extra HBM traffic.

Energies are kept in log2 units (``s * log2(e)``, then ``exp2``). The pixel itself lies on both its
row and its column: each pass gives it half its weight (``-1`` in log2 units), so it counts once in
total and both passes see it with a positive weight (``0 * inf`` never turns an infinite value into
NaN; the reference shares the pixel's weight the same way).
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Batched ``a @ b`` with float32 accumulation; a batch of one (the row pass) as a plain 2D
    ``tl.dot``. ``UPCAST`` multiplies in float32 (exact for bfloat16 operands: the interpreter's
    ``tl.dot`` reads bfloat16 bits as integers)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    precision: tl.constexpr = "ieee" if UPCAST else PRECISION
    if a.shape[0] == 1:
        flat = tl.dot(tl.reshape(a, (a.shape[1], a.shape[2])), tl.reshape(b, (b.shape[1], b.shape[2])),
                      input_precision=precision, out_dtype=tl.float32)
        return tl.reshape(flat, (1, a.shape[1], b.shape[2]))
    return tl.dot(a, b, input_precision=precision, out_dtype=tl.float32)


@triton.jit
def _energy_log2(q, k_t, qpos, kpos, line_len, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``(BL, BM, BD) x (BL, BD, BN) -> (BL, BM, BN)`` energies in log2 units; the pixel itself
    halved, keys past the line's end ``-inf``."""
    s = _dot(q, k_t, PRECISION, UPCAST) * 1.4426950408889634
    s = tl.where(qpos[None, :, None] == kpos[None, None, :], s - 1.0, s)
    return tl.where((kpos < line_len)[None, None, :], s, float("-inf"))


@triton.jit
def _tile_3d(ptr, base, lines, pos, chans, s_line, s_pos, hw, mask):
    """Load ``(BL, BP, BC)``: ``[line, pos, channel]``, zero where ``mask`` is False."""
    offs = base + lines[:, None, None] * s_line + pos[None, :, None] * s_pos + chans[None, None, :] * hw
    return tl.load(ptr + offs, mask=mask, other=0.0)


@triton.jit
def _tile_3d_t(ptr, base, lines, chans, pos, s_line, s_pos, hw, mask):
    """Load ``(BL, BC, BP)``: ``[line, channel, pos]`` (a key or value tile as a right operand)."""
    offs = base + lines[:, None, None] * s_line + chans[None, :, None] * hw + pos[None, None, :] * s_pos
    return tl.load(ptr + offs, mask=mask, other=0.0)


@triton.jit
def _attend_line(q, k_ptr, v_ptr, qk_base, v_base, lines, qpos, dims, chans, line_ok, d_ok, c_ok,
                 line_len, s_line, s_pos, hw, BL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                 BC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Online softmax of the queries ``q (BL, BM, BD)`` over the keys of their own lines, ``BN`` keys at a
    time: the running max ``m_i`` and sum ``l_i`` (base 2, ``(BL, BM)`` float32) and the unnormalised
    output ``acc (BL, BM, BC)`` float32."""
    m_i = tl.full((BL, BM), float("-inf"), tl.float32)
    l_i = tl.zeros((BL, BM), tl.float32)
    acc = tl.zeros((BL, BM, BC), tl.float32)
    for start in range(0, line_len, BN):
        kpos = start + tl.arange(0, BN)
        k_ok = kpos < line_len
        k_t = _tile_3d_t(k_ptr, qk_base, lines, dims, kpos, s_line, s_pos, hw,
                         line_ok[:, None, None] & d_ok[None, :, None] & k_ok[None, None, :])
        v = _tile_3d(v_ptr, v_base, lines, kpos, chans, s_line, s_pos, hw,
                     line_ok[:, None, None] & k_ok[None, :, None] & c_ok[None, None, :])
        s = _energy_log2(q, k_t, qpos, kpos, line_len, PRECISION, UPCAST)
        m_new = tl.maximum(m_i, tl.max(s, 2))
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)  # all -inf so far: weights 0, not NaN
        alpha = tl.exp2(m_i - m_sub)
        p = tl.exp2(s - m_sub[:, :, None])
        l_i = l_i * alpha + tl.sum(p, 2)
        acc = acc * alpha[:, :, None] + _dot(p.to(v.dtype), v, PRECISION, UPCAST)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit
def line_attention_fwd(
    q_ptr,
    k_ptr,
    v_ptr,
    out_ptr,
    lse_row_ptr,
    lse_ptr,
    n_lines,
    line_len,
    c_qk,
    c_v,
    hw,
    s_line,
    s_pos,
    MERGE: tl.constexpr,
    BL: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BD: tl.constexpr,
    BC: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Softmax attention of each query of a line over the keys of the same line, online over key tiles.

    First pass (``MERGE`` False, the rows): writes the normalised partial output into ``out`` and its
    log2-sum-exp2 into ``lse_row`` (``(N, H, W)`` float32). Second pass (``MERGE`` True, the columns):
    merges its own partial with the row pass's through their log-sum-exp, overwrites ``out`` with the
    final output and writes the natural-log LSE ``(N, H, W)`` float32 into ``lse``. Grid:
    ``(cdiv(n_lines, BL) * cdiv(line_len, BM), cdiv(c_v, BC), N)``.
    """
    pid = tl.program_id(0)
    cb = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    n_qblocks = tl.cdiv(line_len, BM)
    lines = (pid // n_qblocks) * BL + tl.arange(0, BL)
    qpos = (pid % n_qblocks) * BM + tl.arange(0, BM)
    dims = tl.arange(0, BD)
    chans = cb * BC + tl.arange(0, BC)
    line_ok = lines < n_lines
    q_ok = qpos < line_len
    d_ok = dims < c_qk
    c_ok = chans < c_v
    qk_base = n * c_qk * hw
    v_base = n * c_v * hw

    q = _tile_3d(q_ptr, qk_base, lines, qpos, dims, s_line, s_pos, hw,
                 line_ok[:, None, None] & q_ok[None, :, None] & d_ok[None, None, :])
    m_i, l_i, acc = _attend_line(q, k_ptr, v_ptr, qk_base, v_base, lines, qpos, dims, chans, line_ok, d_ok, c_ok,
                                 line_len, s_line, s_pos, hw, BL, BM, BN, BC, PRECISION, UPCAST)

    lse2 = m_i + tl.log2(l_i)  # -inf when every energy is -inf
    pix = n * hw + lines[:, None] * s_line + qpos[None, :] * s_pos
    pix_ok = line_ok[:, None] & q_ok[None, :]
    o_offs = v_base + lines[:, None, None] * s_line + qpos[None, :, None] * s_pos + chans[None, None, :] * hw
    o_ok = pix_ok[:, :, None] & c_ok[None, None, :]
    if MERGE:
        lse2_row = tl.load(lse_row_ptr + pix, mask=pix_ok, other=0.0)
        o_row = tl.load(out_ptr + o_offs, mask=o_ok, other=0.0).to(tl.float32)
        top = tl.maximum(lse2_row, lse2)  # both -inf: NaN below, as softmax over all -inf gives
        lse2_all = top + tl.log2(tl.exp2(lse2_row - top) + tl.exp2(lse2 - top))
        m_fin = tl.where(m_i == float("-inf"), 0.0, m_i)
        out = o_row * tl.exp2(lse2_row - lse2_all)[:, :, None] + acc * tl.exp2(m_fin - lse2_all)[:, :, None]
        tl.store(out_ptr + o_offs, out.to(out_ptr.dtype.element_ty), mask=o_ok)
        tl.store(lse_ptr + pix, lse2_all * 0.6931471805599453, mask=pix_ok & (cb == 0))
    else:
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, :, None]  # 0, not NaN: the columns may carry it
        tl.store(out_ptr + o_offs, out.to(out_ptr.dtype.element_ty), mask=o_ok)
        tl.store(lse_row_ptr + pix, lse2, mask=pix_ok & (cb == 0))


INTERPRET = type(line_attention_fwd).__name__ == "InterpretedFunction"  # TRITON_INTERPRET=1 at Triton's import
