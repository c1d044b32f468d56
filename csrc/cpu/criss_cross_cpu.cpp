// CPU kernels of criss-cross attention.
//
// Every op reduces to three primitives on volumes (N, C, T, H, W) (2D is T == 1):
//   weight_fwd(a, b)[n, i, u] = <a[n, :, u], b[n, :, pos_i(u)]>
//   map_fwd(w, v)[n, c, u]    = sum_i w[n, i, u] v[n, c, pos_i(u)]
//   map_bwd_v(w, g)[n, c, p]  = sum_{u : p in cross(u)} w[n, slot_u(p), u] g[n, c, u]
// so that ca_weight = weight_fwd, ca_map = map_fwd and their backward ops are
//   d(ca_weight)(dw, q, k) = (map_fwd(dw, k), map_bwd_v(dw, q))
//   d(ca_map)(dout, a, v)  = (weight_fwd(dout, v), map_bwd_v(a, dout)).
//
// The heavy lifting is batched BLAS on channels-last chunks of the inputs: along each axis (row,
// column, time) the interactions of a line with itself form a small matrix product, e.g. per row
// (t, y): (W, C) x (C, W). The slot
// layout of the attention map is converted to and from these "line matrices" by two
// at::parallel_for loops that use the index math of criss_cross.h (cross_position for the
// assembly, cross_slot for the disassembly), the same functions the CUDA kernels use.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "criss_cross.h"
#include "cpu/simd.h"

namespace cca {
namespace {

// Line matrices of a volume: row (N, T, H, W, W), column (N, T, W, H, H), time (N, H, W, T, T),
// indexed [..., own coordinate, partner coordinate]. col/tim are undefined when H == 1 / T == 1.
struct Lines {
  at::Tensor row, col, tim;
};

struct Dims {
  int64_t N, T, H, W, L;
  explicit Dims(const at::Tensor& volume)
      : N(volume.size(0)), T(volume.size(2)), H(volume.size(3)), W(volume.size(4)),
        L(cross_length(volume.size(2), volume.size(3), volume.size(4))) {}
};

// Grain so that one task touches at least ~32k elements.
int64_t grain(int64_t inner) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(inner, 1));
}

// Channels are processed in chunks of kChannelChunk: every product below is a sum over channels
// (affinity) or acts on each channel on its own (aggregation), so a chunk at a time gives the same
// result while every temporary stays chunk-sized (cache-resident) instead of value-sized.
constexpr int64_t kChannelChunk = 32;

// Channels [c0, c0 + cs) of a volume (N, C, T, H, W), channels-last: (N, T, H, W, cs) contiguous.
// In this layout every line (row, column or time) is a (len, cs) matrix with unit stride along
// channels, so the per-line products run on batched BLAS without per-batch copies.
at::Tensor channel_chunk(const at::Tensor& x, int64_t c0, int64_t cs) {
  return x.narrow(1, c0, cs).permute({0, 2, 3, 4, 1}).contiguous();
}

// Per-line views of a channels-last volume x (N, T, H, W, C) for one batch index:
// column lines of frame (n, t): (W, H, C); time lines of sample n: (H * W, T, C).
at::Tensor column_lines(const at::Tensor& x, int64_t n, int64_t t) {
  return x.select(0, n).select(0, t).permute({1, 0, 2});
}

at::Tensor time_lines(const at::Tensor& x, int64_t n) {
  const at::Tensor xn = x.select(0, n);  // (T, H, W, C)
  return xn.permute({1, 2, 0, 3}).view({xn.size(1) * xn.size(2), xn.size(0), xn.size(3)});
}

// out = a @ b (first chunk) or out += a @ b; out contiguous.
void accumulate(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool first) {
  if (first) {
    at::bmm_out(out, a, b);
  } else {
    out.baddbmm_(a, b);
  }
}

// E[..., own, partner] = <a[:, own], b[:, partner]> along every axis, a and b (N, C, T, H, W).
Lines line_products(const at::Tensor& a, const at::Tensor& b, const Dims& d) {
  Lines e;
  e.row = at::empty({d.N, d.T, d.H, d.W, d.W}, a.options());
  if (d.H > 1) {
    e.col = at::empty({d.N, d.T, d.W, d.H, d.H}, a.options());
  }
  if (d.T > 1) {
    e.tim = at::empty({d.N, d.H, d.W, d.T, d.T}, a.options());
  }
  const int64_t C = a.size(1), rows = d.N * d.T * d.H;
  for (int64_t c0 = 0; c0 < C; c0 += kChannelChunk) {
    const int64_t cs = std::min(kChannelChunk, C - c0);
    const bool first = c0 == 0;
    const at::Tensor ac = channel_chunk(a, c0, cs), bc = channel_chunk(b, c0, cs);
    at::Tensor row = e.row.view({rows, d.W, d.W});
    accumulate(row, ac.view({rows, d.W, cs}), bc.view({rows, d.W, cs}).transpose(1, 2), first);
    for (int64_t n = 0; e.col.defined() && n < d.N; ++n) {
      for (int64_t t = 0; t < d.T; ++t) {
        at::Tensor col = e.col.select(0, n).select(0, t);
        accumulate(col, column_lines(ac, n, t), column_lines(bc, n, t).transpose(1, 2), first);
      }
    }
    for (int64_t n = 0; e.tim.defined() && n < d.N; ++n) {
      at::Tensor tim = e.tim.select(0, n).view({d.H * d.W, d.T, d.T});
      accumulate(tim, time_lines(ac, n), time_lines(bc, n).transpose(1, 2), first);
    }
  }
  return e;
}

// Both conversions below run one task per (n, t, y) and, inside, pixel x then slot i: the line
// matrices are then read/written contiguously and the slot planes touched by one pixel (one cache
// line each) stay hot across consecutive x, so neither side is walked with a large stride.

// Offset of entry [own, partner] of the line matrix of pixel (n, t, y, x) along `axis`.
inline int64_t line_offset(int axis, int64_t partner, int64_t n, int64_t t, int64_t y, int64_t x, const Dims& d) {
  if (axis == kRow) {
    return (((n * d.T + t) * d.H + y) * d.W + x) * d.W + partner;
  }
  if (axis == kCol) {
    return (((n * d.T + t) * d.W + x) * d.H + y) * d.H + partner;
  }
  return (((n * d.H + y) * d.W + x) * d.T + t) * d.T + partner;
}

// Slot layout (N, L, T, H, W) <- line matrices, reading slot i of pixel u at cross_position.
template <typename scalar_t>
void assemble(const Lines& e, scalar_t* w, const Dims& d) {
  const int64_t T = d.T, H = d.H, W = d.W, L = d.L, plane = T * H * W;
  const scalar_t* lines[3] = {e.row.data_ptr<scalar_t>(), e.col.defined() ? e.col.data_ptr<scalar_t>() : nullptr,
                              e.tim.defined() ? e.tim.data_ptr<scalar_t>() : nullptr};
  at::parallel_for(0, d.N * T * H, grain(W * L), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {  // r = (n * T + t) * H + y
      const int64_t y = r % H, t = (r / H) % T, n = r / (H * T);
      scalar_t* out = w + n * L * plane + (t * H + y) * W;
      for (int64_t x = 0; x < W; ++x) {
        for (int64_t i = 0; i < L; ++i) {
          const CrossPosition p = cross_position(i, t, y, x, H, W);
          out[i * plane + x] = lines[p.axis][line_offset(p.axis, p.coord, n, t, y, x, d)];
        }
      }
    }
  });
}

// Line matrices <- slot layout; entry [own, partner] is the weight of slot cross_slot(partner)
// of the pixel at `own`. u lies on every line but has one weight (slot x): it is shared between
// the lines in exact binary fractions (row 1/2, column/time 1/2, or 1/4 each with both), never
// written as 0, since 0 x inf would turn an infinite value at u into NaN.
template <typename scalar_t>
void disassemble(const scalar_t* w, const Lines& a, const Dims& d) {
  const int64_t T = d.T, H = d.H, W = d.W, L = d.L, plane = T * H * W;
  scalar_t* lines[3] = {a.row.data_ptr<scalar_t>(), a.col.defined() ? a.col.data_ptr<scalar_t>() : nullptr,
                        a.tim.defined() ? a.tim.data_ptr<scalar_t>() : nullptr};
  const int64_t sizes[3] = {W, H, T};
  const int n_lines = 1 + (lines[kCol] != nullptr) + (lines[kTime] != nullptr);
  const scalar_t share[3] = {scalar_t(n_lines == 1 ? 1.0 : 0.5), scalar_t(n_lines == 3 ? 0.25 : 0.5),
                             scalar_t(n_lines == 3 ? 0.25 : 0.5)};
  at::parallel_for(0, d.N * T * H, grain(W * L), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {  // r = (n * T + t) * H + y
      const int64_t y = r % H, t = (r / H) % T, n = r / (H * T);
      const scalar_t* in = w + n * L * plane + (t * H + y) * W;
      for (int64_t x = 0; x < W; ++x) {
        const int64_t own[3] = {x, y, t};
        const scalar_t self = in[x * plane + x];  // slot x: u itself
        for (int axis : {kRow, kCol, kTime}) {
          if (lines[axis] == nullptr) {
            continue;
          }
          scalar_t* line = lines[axis] + line_offset(axis, 0, n, t, y, x, d);
          for (int64_t c = 0; c < sizes[axis]; ++c) {
            line[c] = c == own[axis] ? scalar_t(self * share[axis])
                                     : in[cross_slot(axis, c, own[axis], H, W) * plane + x];
          }
        }
      }
    }
  });
}

// a, b (N, C, T, H, W) -> slot layout (N, L, T, H, W).
at::Tensor weight_fwd(const at::Tensor& a, const at::Tensor& b, const Dims& d) {
  const Lines e = line_products(a, b, d);
  at::Tensor w = at::empty({d.N, d.L, d.T, d.H, d.W}, a.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "cca_weight_fwd_cpu",
                                  [&] { assemble<scalar_t>(e, w.data_ptr<scalar_t>(), d); });
  return w;
}

Lines to_lines(const at::Tensor& w, const Dims& d) {
  Lines a;
  a.row = at::empty({d.N, d.T, d.H, d.W, d.W}, w.options());
  if (d.H > 1) {
    a.col = at::empty({d.N, d.T, d.W, d.H, d.H}, w.options());
  }
  if (d.T > 1) {
    a.tim = at::empty({d.N, d.H, d.W, d.T, d.T}, w.options());
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "cca_disassemble_cpu",
                                  [&] { disassemble<scalar_t>(w.data_ptr<scalar_t>(), a, d); });
  return a;
}

// v (N, C, T, H, W) -> (N, C, T, H, W):
// transpose == false: out[c, u] = sum_partner A[u, partner] v[c, partner]   (map_fwd)
// transpose == true:  out[c, p] = sum_own A[own, p] v[c, own]               (map_bwd_v)
at::Tensor apply_lines(const Lines& a, const at::Tensor& v, bool transpose, const Dims& d) {
  auto mat = [&](const at::Tensor& m) { return transpose ? m.transpose(-1, -2) : m; };
  const int64_t C = v.size(1), rows = d.N * d.T * d.H;
  at::Tensor out = at::empty({d.N, C, d.T, d.H, d.W}, v.options());
  const at::Tensor row_lines = mat(a.row.view({rows, d.W, d.W}));
  for (int64_t c0 = 0; c0 < C; c0 += kChannelChunk) {
    const int64_t cs = std::min(kChannelChunk, C - c0);
    const at::Tensor vc = channel_chunk(v, c0, cs);  // (N, T, H, W, cs)
    at::Tensor part = at::bmm(row_lines, vc.view({rows, d.W, cs})).view({d.N, d.T, d.H, d.W, cs});
    for (int64_t n = 0; a.col.defined() && n < d.N; ++n) {
      for (int64_t t = 0; t < d.T; ++t) {
        column_lines(part, n, t).add_(at::bmm(mat(a.col.select(0, n).select(0, t)), column_lines(vc, n, t)));
      }
    }
    for (int64_t n = 0; a.tim.defined() && n < d.N; ++n) {
      const at::Tensor tim = mat(a.tim.select(0, n).view({d.H * d.W, d.T, d.T}));
      time_lines(part, n).add_(at::bmm(tim, time_lines(vc, n)));
    }
    out.narrow(1, c0, cs).copy_(part.permute({0, 4, 1, 2, 3}));
  }
  return out;
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor for the CPU kernel, got device ", t.device());
}

// ------------------------------------------------------------------------------------ 3D ops
at::Tensor ca_weight_3d_cpu(const at::Tensor& query, const at::Tensor& key) {
  const at::NoGradGuard no_grad;  // internal ATen calls record no history (autograd lives in Python)
  check_weight_inputs(query, key);
  check_cpu(query, "query");
  return weight_fwd(query, key, Dims(query));
}

std::tuple<at::Tensor, at::Tensor> ca_weight_3d_backward_cpu(const at::Tensor& grad, const at::Tensor& query,
                                                             const at::Tensor& key) {
  const at::NoGradGuard no_grad;  // internal ATen calls record no history (autograd lives in Python)
  check_weight_inputs(query, key);
  check_cpu(query, "query");
  check_weight_grad(grad, query);
  const Dims d(query);
  const Lines a = to_lines(grad.contiguous(), d);
  return {apply_lines(a, key, false, d), apply_lines(a, query, true, d)};
}

at::Tensor ca_map_3d_cpu(const at::Tensor& attention, const at::Tensor& value) {
  const at::NoGradGuard no_grad;  // internal ATen calls record no history (autograd lives in Python)
  check_map_inputs(attention, value);
  check_cpu(value, "value");
  const Dims d(value);
  return apply_lines(to_lines(attention.contiguous(), d), value, false, d);
}

std::tuple<at::Tensor, at::Tensor> ca_map_3d_backward_cpu(const at::Tensor& grad, const at::Tensor& attention,
                                                          const at::Tensor& value) {
  const at::NoGradGuard no_grad;  // internal ATen calls record no history (autograd lives in Python)
  check_map_inputs(attention, value);
  check_cpu(value, "value");
  check_grad(grad, value, "value");
  const Dims d(value);
  at::Tensor grad_value = apply_lines(to_lines(attention.contiguous(), d), grad, true, d);
  at::Tensor grad_attention = weight_fwd(grad, value, d);
  return {grad_attention, grad_value};
}

// ------------------------------------------------------------------------------------ 2D ops
// float32/float64 on a CPU with AVX2 + FMA: the vectorised kernels of simd.cpp; otherwise the
// generic ones above, on the 2D map as a volume with T == 1.
at::Tensor ca_weight_2d_cpu(const at::Tensor& query, const at::Tensor& key) {
  const at::Tensor q = as_volume(query, "query"), k = as_volume(key, "key");
  check_weight_inputs(q, k);
  check_cpu(query, "query");
  if (simd::usable(query)) {
    return simd::weight(query, key);
  }
  return ca_weight_3d_cpu(q, k).squeeze(2);
}

std::tuple<at::Tensor, at::Tensor> ca_weight_2d_backward_cpu(const at::Tensor& grad, const at::Tensor& query,
                                                             const at::Tensor& key) {
  const at::Tensor g = as_volume(grad, "grad"), q = as_volume(query, "query"), k = as_volume(key, "key");
  check_weight_inputs(q, k);
  check_cpu(query, "query");
  check_weight_grad(g, q);
  if (simd::usable(query)) {
    return {simd::map(grad, key), simd::map_t(grad, query)};
  }
  auto [gq, gk] = ca_weight_3d_backward_cpu(g, q, k);
  return {gq.squeeze(2), gk.squeeze(2)};
}

at::Tensor ca_map_2d_cpu(const at::Tensor& attention, const at::Tensor& value) {
  const at::Tensor a = as_volume(attention, "attention"), v = as_volume(value, "value");
  check_map_inputs(a, v);
  check_cpu(value, "value");
  if (simd::usable(value)) {
    return simd::map(attention, value);
  }
  return ca_map_3d_cpu(a, v).squeeze(2);
}

std::tuple<at::Tensor, at::Tensor> ca_map_2d_backward_cpu(const at::Tensor& grad, const at::Tensor& attention,
                                                          const at::Tensor& value) {
  const at::Tensor g = as_volume(grad, "grad"), a = as_volume(attention, "attention"), v = as_volume(value, "value");
  check_map_inputs(a, v);
  check_cpu(value, "value");
  check_grad(g, v, "value");
  if (simd::usable(value)) {
    return {simd::weight(grad, value), simd::map_t(attention, grad)};
  }
  auto [ga, gv] = ca_map_3d_backward_cpu(g, a, v);
  return {ga.squeeze(2), gv.squeeze(2)};
}

}  // namespace
}  // namespace cca

TORCH_LIBRARY_IMPL(cca, CPU, m) {
  m.impl("ca_weight_2d", &cca::ca_weight_2d_cpu);
  m.impl("ca_weight_2d_backward", &cca::ca_weight_2d_backward_cpu);
  m.impl("ca_map_2d", &cca::ca_map_2d_cpu);
  m.impl("ca_map_2d_backward", &cca::ca_map_2d_backward_cpu);
  m.impl("ca_weight_3d", &cca::ca_weight_3d_cpu);
  m.impl("ca_weight_3d_backward", &cca::ca_weight_3d_backward_cpu);
  m.impl("ca_map_3d", &cca::ca_map_3d_cpu);
  m.impl("ca_map_3d_backward", &cca::ca_map_3d_backward_cpu);
}
