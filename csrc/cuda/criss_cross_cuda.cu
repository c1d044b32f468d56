// CUDA kernels of criss-cross attention, for float, double, half and bfloat16.
//
// Every op reduces to three primitives on volumes (N, C, T, H, W) (2D is T == 1), with
// L = cross_length(T, H, W) slots per pixel (order in criss_cross.h):
//   weight_fwd(a, b)[n, i, u] = sum_c a[n, c, u] b[n, c, pos_i(u)]                    (N, L, T, H, W)
//   map_fwd(w, v)[n, c, u]    = sum_i w[n, i, u] v[n, c, pos_i(u)]                     (N, C, T, H, W)
//   map_bwd_v(w, g)[n, c, p]  = sum_{u : p in cross(u)} w[n, slot_u(p), u] g[n, c, u]  (N, C, T, H, W)
// so that ca_weight = weight_fwd, ca_map = map_fwd and their backward ops are
//   d(ca_weight)(dw, q, k) = (map_fwd(dw, k), map_bwd_v(dw, q))
//   d(ca_map)(dout, a, v)  = (weight_fwd(dout, v), map_bwd_v(a, dout)).
// (tests/test_cuda.py checks these identities against the reference with autograd.)
//
// One thread per output element, x the fastest-varying index so that the loads of a pixel
// neighbourhood coalesce; sums accumulate in at::opmath_type (float for half/bfloat16); no
// atomics, so the results are deterministic; 64-bit index math throughout. No temporaries beyond
// the outputs themselves.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "checks.h"
#include "criss_cross.h"

namespace cca {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;  // a grid-stride loop covers the rest

// Grid-stride loop over [0, total) with 64-bit indices.
#define CCA_CUDA_LOOP(idx, total)                                                                 \
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < (total); \
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x)

dim3 blocks_for(int64_t total) {
  return dim3(static_cast<unsigned int>(std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks)));
}

// w[n, i, t, y, x] = sum_c a[n, c, t, y, x] * b[n, c, pos_i(t, y, x)]; idx runs over w (N, L, T, H, W).
template <typename scalar_t>
__global__ void weight_fwd_kernel(int64_t total, const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                                  scalar_t* __restrict__ w, int64_t C, int64_t T, int64_t H, int64_t W, int64_t L) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t plane = T * H * W;
  CCA_CUDA_LOOP(idx, total) {
    const int64_t x = idx % W;
    int64_t r = idx / W;
    const int64_t y = r % H;
    r /= H;
    const int64_t t = r % T;
    r /= T;
    const int64_t i = r % L;
    const int64_t n = r / L;
    const CrossPosition p = cross_position(i, t, y, x, H, W);
    const scalar_t* ap = a + n * C * plane + offset(t, y, x, H, W);
    const scalar_t* bp = b + n * C * plane + offset(p.t, p.y, p.x, H, W);
    acc_t sum = acc_t(0);
    for (int64_t c = 0; c < C; ++c) {
      sum += static_cast<acc_t>(ap[c * plane]) * static_cast<acc_t>(bp[c * plane]);
    }
    w[idx] = static_cast<scalar_t>(sum);
  }
}

// out[n, c, t, y, x] = sum_i w[n, i, t, y, x] * v[n, c, pos_i(t, y, x)]; idx runs over out (N, C, T, H, W).
// The slots are walked axis by axis (row, column, time) with cross_slot, which avoids a branch per slot.
template <typename scalar_t>
__global__ void map_fwd_kernel(int64_t total, const scalar_t* __restrict__ w, const scalar_t* __restrict__ v,
                               scalar_t* __restrict__ out, int64_t C, int64_t T, int64_t H, int64_t W, int64_t L) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t plane = T * H * W;
  CCA_CUDA_LOOP(idx, total) {
    const int64_t x = idx % W;
    int64_t r = idx / W;
    const int64_t y = r % H;
    r /= H;
    const int64_t t = r % T;
    r /= T;
    const int64_t c = r % C;
    const int64_t n = r / C;
    const scalar_t* wp = w + n * L * plane + offset(t, y, x, H, W);  // slot i at wp[i * plane]
    const scalar_t* vp = v + (n * C + c) * plane;
    acc_t sum = acc_t(0);
    for (int64_t xp = 0; xp < W; ++xp) {  // row (t, y, x'), u itself included once
      sum += static_cast<acc_t>(wp[cross_slot(kRow, xp, x, H, W) * plane]) *
             static_cast<acc_t>(vp[offset(t, y, xp, H, W)]);
    }
    for (int64_t yp = 0; yp < H; ++yp) {  // column (t, y', x), y' != y
      if (yp != y) {
        sum += static_cast<acc_t>(wp[cross_slot(kCol, yp, y, H, W) * plane]) *
               static_cast<acc_t>(vp[offset(t, yp, x, H, W)]);
      }
    }
    for (int64_t tp = 0; tp < T; ++tp) {  // time (t', y, x), t' != t
      if (tp != t) {
        sum += static_cast<acc_t>(wp[cross_slot(kTime, tp, t, H, W) * plane]) *
               static_cast<acc_t>(vp[offset(tp, y, x, H, W)]);
      }
    }
    out[idx] = static_cast<scalar_t>(sum);
  }
}

// dv[n, c, p] = sum over the pixels u whose cross contains p of w[n, slot_u(p), u] * g[n, c, u]:
// u runs over the row of p (p is slot p.x of each), the other pixels of its column and the other
// frames. idx runs over dv (N, C, T, H, W). This gathers instead of scattering, so no atomics.
template <typename scalar_t>
__global__ void map_bwd_v_kernel(int64_t total, const scalar_t* __restrict__ w, const scalar_t* __restrict__ g,
                                 scalar_t* __restrict__ dv, int64_t C, int64_t T, int64_t H, int64_t W, int64_t L) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t plane = T * H * W;
  CCA_CUDA_LOOP(idx, total) {
    const int64_t x = idx % W;
    int64_t r = idx / W;
    const int64_t y = r % H;
    r /= H;
    const int64_t t = r % T;
    r /= T;
    const int64_t c = r % C;
    const int64_t n = r / C;
    const scalar_t* wn = w + n * L * plane;
    const scalar_t* gp = g + (n * C + c) * plane;
    acc_t sum = acc_t(0);
    for (int64_t xp = 0; xp < W; ++xp) {  // u = (t, y, x'): p is in its row at slot x
      const int64_t u = offset(t, y, xp, H, W);
      sum += static_cast<acc_t>(wn[cross_slot(kRow, x, xp, H, W) * plane + u]) * static_cast<acc_t>(gp[u]);
    }
    for (int64_t yp = 0; yp < H; ++yp) {  // u = (t, y', x), y' != y: p is in its column
      if (yp != y) {
        const int64_t u = offset(t, yp, x, H, W);
        sum += static_cast<acc_t>(wn[cross_slot(kCol, y, yp, H, W) * plane + u]) * static_cast<acc_t>(gp[u]);
      }
    }
    for (int64_t tp = 0; tp < T; ++tp) {  // u = (t', y, x), t' != t: p is in its time line
      if (tp != t) {
        const int64_t u = offset(tp, y, x, H, W);
        sum += static_cast<acc_t>(wn[cross_slot(kTime, t, tp, H, W) * plane + u]) * static_cast<acc_t>(gp[u]);
      }
    }
    dv[idx] = static_cast<scalar_t>(sum);
  }
}

// ------------------------------------------------------------------------------ launchers
// All take contiguous tensors on the current device (the callers hold the device guard).

// a, b (N, C, T, H, W) -> (N, L, T, H, W).
at::Tensor weight_fwd(const at::Tensor& a, const at::Tensor& b) {
  const int64_t N = a.size(0), C = a.size(1), T = a.size(2), H = a.size(3), W = a.size(4);
  const int64_t L = cross_length(T, H, W);
  at::Tensor w = at::empty({N, L, T, H, W}, a.options());
  const int64_t total = w.numel();
  if (total == 0) {
    return w;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "cca_weight_fwd_cuda", [&] {
    weight_fwd_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        total, a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), w.mutable_data_ptr<scalar_t>(), C, T, H,
        W, L);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return w;
}

// w (N, L, T, H, W), v (N, C, T, H, W) -> (N, C, T, H, W).
at::Tensor map_fwd(const at::Tensor& w, const at::Tensor& v) {
  const int64_t C = v.size(1), T = v.size(2), H = v.size(3), W = v.size(4);
  const int64_t L = cross_length(T, H, W);
  at::Tensor out = at::empty(v.sizes(), v.options());
  const int64_t total = out.numel();
  if (total == 0) {
    return out;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "cca_map_fwd_cuda", [&] {
    map_fwd_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        total, w.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), C, T, H,
        W, L);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

// w (N, L, T, H, W), g (N, C, T, H, W) -> (N, C, T, H, W).
at::Tensor map_bwd_v(const at::Tensor& w, const at::Tensor& g) {
  const int64_t C = g.size(1), T = g.size(2), H = g.size(3), W = g.size(4);
  const int64_t L = cross_length(T, H, W);
  at::Tensor dv = at::empty(g.sizes(), g.options());
  const int64_t total = dv.numel();
  if (total == 0) {
    return dv;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "cca_map_bwd_v_cuda", [&] {
    map_bwd_v_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        total, w.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), dv.mutable_data_ptr<scalar_t>(), C, T, H,
        W, L);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return dv;
}

// ------------------------------------------------------------------------------ checks
void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor for the CUDA kernel, got device ", t.device());
}

// ------------------------------------------------------------------------------ 3D ops
at::Tensor ca_weight_3d_cuda(const at::Tensor& query, const at::Tensor& key) {
  check_weight_inputs(query, key);
  check_cuda(query, "query");
  const c10::cuda::CUDAGuard device_guard(query.device());
  return weight_fwd(query.contiguous(), key.contiguous());
}

std::tuple<at::Tensor, at::Tensor> ca_weight_3d_backward_cuda(const at::Tensor& grad, const at::Tensor& query,
                                                              const at::Tensor& key) {
  check_weight_inputs(query, key);
  check_cuda(query, "query");
  check_weight_grad(grad, query);
  const c10::cuda::CUDAGuard device_guard(query.device());
  const at::Tensor dw = grad.contiguous();
  return {map_fwd(dw, key.contiguous()), map_bwd_v(dw, query.contiguous())};
}

at::Tensor ca_map_3d_cuda(const at::Tensor& attention, const at::Tensor& value) {
  check_map_inputs(attention, value);
  check_cuda(value, "value");
  const c10::cuda::CUDAGuard device_guard(value.device());
  return map_fwd(attention.contiguous(), value.contiguous());
}

std::tuple<at::Tensor, at::Tensor> ca_map_3d_backward_cuda(const at::Tensor& grad, const at::Tensor& attention,
                                                           const at::Tensor& value) {
  check_map_inputs(attention, value);
  check_cuda(value, "value");
  check_grad(grad, value, "value");
  const c10::cuda::CUDAGuard device_guard(value.device());
  const at::Tensor dout = grad.contiguous();
  return {weight_fwd(dout, value.contiguous()), map_bwd_v(attention.contiguous(), dout)};
}

// ------------------------------------------------------------------------------ 2D ops
at::Tensor ca_weight_2d_cuda(const at::Tensor& query, const at::Tensor& key) {
  return ca_weight_3d_cuda(as_volume(query, "query"), as_volume(key, "key")).squeeze(2);
}

std::tuple<at::Tensor, at::Tensor> ca_weight_2d_backward_cuda(const at::Tensor& grad, const at::Tensor& query,
                                                              const at::Tensor& key) {
  auto [gq, gk] =
      ca_weight_3d_backward_cuda(as_volume(grad, "grad"), as_volume(query, "query"), as_volume(key, "key"));
  return {gq.squeeze(2), gk.squeeze(2)};
}

at::Tensor ca_map_2d_cuda(const at::Tensor& attention, const at::Tensor& value) {
  return ca_map_3d_cuda(as_volume(attention, "attention"), as_volume(value, "value")).squeeze(2);
}

std::tuple<at::Tensor, at::Tensor> ca_map_2d_backward_cuda(const at::Tensor& grad, const at::Tensor& attention,
                                                           const at::Tensor& value) {
  auto [ga, gv] =
      ca_map_3d_backward_cuda(as_volume(grad, "grad"), as_volume(attention, "attention"), as_volume(value, "value"));
  return {ga.squeeze(2), gv.squeeze(2)};
}

}  // namespace
}  // namespace cca

TORCH_LIBRARY_IMPL(cca, CUDA, m) {
  m.impl("ca_weight_2d", &cca::ca_weight_2d_cuda);
  m.impl("ca_weight_2d_backward", &cca::ca_weight_2d_backward_cuda);
  m.impl("ca_map_2d", &cca::ca_map_2d_cuda);
  m.impl("ca_map_2d_backward", &cca::ca_map_2d_backward_cuda);
  m.impl("ca_weight_3d", &cca::ca_weight_3d_cuda);
  m.impl("ca_weight_3d_backward", &cca::ca_weight_3d_backward_cuda);
  m.impl("ca_map_3d", &cca::ca_map_3d_cuda);
  m.impl("ca_map_3d_backward", &cca::ca_map_3d_backward_cuda);
}
