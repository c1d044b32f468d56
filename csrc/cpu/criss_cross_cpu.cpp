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
// The heavy lifting is BLAS on a channels-last copy of the inputs: along each axis (row, column,
// time) the interactions of a line with itself form a small matrix product, e.g. per row (t, y):
// (W, C) x (C, W). The slot
// layout of the attention map is converted to and from these "line matrices" by two
// at::parallel_for loops that use the index math of criss_cross.h (cross_position for the
// assembly, cross_slot for the disassembly), the same functions the CUDA kernels use.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "criss_cross.h"

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

// Channels-last copy (N, T, H, W, C) of a volume (N, C, T, H, W); free when already channels-last.
// In this layout every line (row, column or time) of every channel is a (len, C) matrix with unit
// stride along C, so all the per-line products below run on BLAS without per-batch copies, and
// the column/time contributions accumulate in place (beta = 1).
at::Tensor to_channels_last(const at::Tensor& x) {
  return x.permute({0, 2, 3, 4, 1}).contiguous();
}

at::Tensor from_channels_last(const at::Tensor& x) {
  return x.permute({0, 4, 1, 2, 3}).contiguous();
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

// E[..., own, partner] = <a[:, own], b[:, partner]> along every axis; a, b channels-last.
Lines line_products(const at::Tensor& a, const at::Tensor& b, const Dims& d) {
  Lines e;
  const int64_t C = a.size(4);
  e.row = at::bmm(a.view({d.N * d.T * d.H, d.W, C}), b.view({d.N * d.T * d.H, d.W, C}).transpose(1, 2))
              .view({d.N, d.T, d.H, d.W, d.W});
  if (d.H > 1) {
    e.col = at::empty({d.N, d.T, d.W, d.H, d.H}, a.options());
    for (int64_t n = 0; n < d.N; ++n) {
      for (int64_t t = 0; t < d.T; ++t) {
        at::Tensor out = e.col.select(0, n).select(0, t);
        at::bmm_out(out, column_lines(a, n, t), column_lines(b, n, t).transpose(1, 2));
      }
    }
  }
  if (d.T > 1) {
    e.tim = at::empty({d.N, d.H, d.W, d.T, d.T}, a.options());
    for (int64_t n = 0; n < d.N; ++n) {
      at::Tensor out = e.tim.select(0, n).view({d.H * d.W, d.T, d.T});
      at::bmm_out(out, time_lines(a, n), time_lines(b, n).transpose(1, 2));
    }
  }
  return e;
}

// Slot layout (N, L, T, H, W) <- line matrices, reading slot i of pixel u at cross_position.
template <typename scalar_t>
void assemble(const Lines& e, scalar_t* w, const Dims& d) {
  const int64_t T = d.T, H = d.H, W = d.W, L = d.L;
  const scalar_t* row = e.row.data_ptr<scalar_t>();
  const scalar_t* col = e.col.defined() ? e.col.data_ptr<scalar_t>() : nullptr;
  const scalar_t* tim = e.tim.defined() ? e.tim.data_ptr<scalar_t>() : nullptr;
  at::parallel_for(0, d.N * L * T * H, grain(W), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t y = r % H, t = (r / H) % T, i = (r / (H * T)) % L, n = r / (H * T * L);
      scalar_t* out = w + r * W;
      for (int64_t x = 0; x < W; ++x) {
        const CrossPosition p = cross_position(i, t, y, x, H, W);
        if (p.axis == kRow) {
          out[x] = row[(((n * T + t) * H + y) * W + x) * W + p.coord];
        } else if (p.axis == kCol) {
          out[x] = col[(((n * T + t) * W + x) * H + y) * H + p.coord];
        } else {
          out[x] = tim[(((n * H + y) * W + x) * T + t) * T + p.coord];
        }
      }
    }
  });
}

// Line matrices <- slot layout; entry [own, partner] is the weight of slot cross_slot(partner)
// of the pixel at `own`, and 0 on the diagonal of the column/time matrices (u counted once).
template <typename scalar_t>
void disassemble(const scalar_t* w, const Lines& a, const Dims& d) {
  const int64_t T = d.T, H = d.H, W = d.W, L = d.L;
  auto w_at = [&](int64_t n, int64_t slot, int64_t t, int64_t y, int64_t x) {
    return w[(((n * L + slot) * T + t) * H + y) * W + x];
  };
  scalar_t* row = a.row.data_ptr<scalar_t>();
  at::parallel_for(0, d.N * T * H * W, grain(W), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {  // r = ((n * T + t) * H + y) * W + x
      const int64_t x = r % W, y = (r / W) % H, t = (r / (W * H)) % T, n = r / (W * H * T);
      for (int64_t i = 0; i < W; ++i) {
        row[r * W + i] = w_at(n, cross_slot(kRow, i, x, H, W), t, y, x);
      }
    }
  });
  if (a.col.defined()) {
    scalar_t* col = a.col.data_ptr<scalar_t>();
    at::parallel_for(0, d.N * T * W * H, grain(H), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {  // r = ((n * T + t) * W + x) * H + y
        const int64_t y = r % H, x = (r / H) % W, t = (r / (H * W)) % T, n = r / (H * W * T);
        for (int64_t j = 0; j < H; ++j) {
          col[r * H + j] = j == y ? scalar_t(0) : w_at(n, cross_slot(kCol, j, y, H, W), t, y, x);
        }
      }
    });
  }
  if (a.tim.defined()) {
    scalar_t* tim = a.tim.data_ptr<scalar_t>();
    at::parallel_for(0, d.N * H * W * T, grain(T), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {  // r = ((n * H + y) * W + x) * T + t
        const int64_t t = r % T, x = (r / T) % W, y = (r / (T * W)) % H, n = r / (T * W * H);
        for (int64_t s = 0; s < T; ++s) {
          tim[r * T + s] = s == t ? scalar_t(0) : w_at(n, cross_slot(kTime, s, t, H, W), t, y, x);
        }
      }
    });
  }
}

// a, b channels-last (N, T, H, W, C) -> slot layout (N, L, T, H, W).
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

// v channels-last (N, T, H, W, C); returns channels-last (N, T, H, W, C):
// transpose == false: out[u, c] = sum_partner A[u, partner] v[partner, c]   (map_fwd)
// transpose == true:  out[p, c] = sum_own A[own, p] v[own, c]               (map_bwd_v)
at::Tensor apply_lines(const Lines& a, const at::Tensor& v, bool transpose, const Dims& d) {
  auto mat = [&](const at::Tensor& m) { return transpose ? m.transpose(-1, -2) : m; };
  const int64_t C = v.size(4);
  at::Tensor out = at::empty({d.N, d.T, d.H, d.W, C}, v.options());
  at::Tensor out_rows = out.view({d.N * d.T * d.H, d.W, C});
  at::bmm_out(out_rows, mat(a.row.view({d.N * d.T * d.H, d.W, d.W})), v.view({d.N * d.T * d.H, d.W, C}));
  if (a.col.defined()) {
    for (int64_t n = 0; n < d.N; ++n) {
      for (int64_t t = 0; t < d.T; ++t) {
        at::Tensor out_lines = column_lines(out, n, t);
        out_lines.baddbmm_(mat(a.col.select(0, n).select(0, t)), column_lines(v, n, t));
      }
    }
  }
  if (a.tim.defined()) {
    for (int64_t n = 0; n < d.N; ++n) {
      at::Tensor out_lines = time_lines(out, n);  // a view: the (H, W) dims merge without a copy
      out_lines.baddbmm_(mat(a.tim.select(0, n).view({d.H * d.W, d.T, d.T})),
                                                   time_lines(v, n));
    }
  }
  return out;
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor for the CPU kernel, got device ", t.device());
}

// ------------------------------------------------------------------------------------ 3D ops
at::Tensor ca_weight_3d_cpu(const at::Tensor& query, const at::Tensor& key) {
  check_weight_inputs(query, key);
  check_cpu(query, "query");
  return weight_fwd(to_channels_last(query), to_channels_last(key), Dims(query));
}

std::tuple<at::Tensor, at::Tensor> ca_weight_3d_backward_cpu(const at::Tensor& grad, const at::Tensor& query,
                                                             const at::Tensor& key) {
  check_weight_inputs(query, key);
  check_cpu(query, "query");
  check_weight_grad(grad, query);
  const Dims d(query);
  const Lines a = to_lines(grad.contiguous(), d);
  return {from_channels_last(apply_lines(a, to_channels_last(key), false, d)),
          from_channels_last(apply_lines(a, to_channels_last(query), true, d))};
}

at::Tensor ca_map_3d_cpu(const at::Tensor& attention, const at::Tensor& value) {
  check_map_inputs(attention, value);
  check_cpu(value, "value");
  const Dims d(value);
  return from_channels_last(apply_lines(to_lines(attention.contiguous(), d), to_channels_last(value), false, d));
}

std::tuple<at::Tensor, at::Tensor> ca_map_3d_backward_cpu(const at::Tensor& grad, const at::Tensor& attention,
                                                          const at::Tensor& value) {
  check_map_inputs(attention, value);
  check_cpu(value, "value");
  check_grad(grad, value, "value");
  const Dims d(value);
  const at::Tensor g = to_channels_last(grad);
  at::Tensor grad_attention = weight_fwd(g, to_channels_last(value), d);
  at::Tensor grad_value = from_channels_last(apply_lines(to_lines(attention.contiguous(), d), g, true, d));
  return {grad_attention, grad_value};
}

// ------------------------------------------------------------------------------------ 2D ops
at::Tensor ca_weight_2d_cpu(const at::Tensor& query, const at::Tensor& key) {
  return ca_weight_3d_cpu(as_volume(query, "query"), as_volume(key, "key")).squeeze(2);
}

std::tuple<at::Tensor, at::Tensor> ca_weight_2d_backward_cpu(const at::Tensor& grad, const at::Tensor& query,
                                                             const at::Tensor& key) {
  auto [gq, gk] = ca_weight_3d_backward_cpu(as_volume(grad, "grad"), as_volume(query, "query"), as_volume(key, "key"));
  return {gq.squeeze(2), gk.squeeze(2)};
}

at::Tensor ca_map_2d_cpu(const at::Tensor& attention, const at::Tensor& value) {
  return ca_map_3d_cpu(as_volume(attention, "attention"), as_volume(value, "value")).squeeze(2);
}

std::tuple<at::Tensor, at::Tensor> ca_map_2d_backward_cpu(const at::Tensor& grad, const at::Tensor& attention,
                                                          const at::Tensor& value) {
  auto [ga, gv] =
      ca_map_3d_backward_cpu(as_volume(grad, "grad"), as_volume(attention, "attention"), as_volume(value, "value"));
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
