// Device code of the criss-cross CUDA kernels: the __global__ functions only, no launch syntax.
//
// Compiled by nvcc through criss_cross_cuda.cu (the launchers: guards, streams, grid sizes, <<<>>>),
// and, unchanged, as ordinary C++ after csrc/testing/cuda_emulation.h by the test-only extension
// (tests/cuda_emulation.py), which runs every block and thread of a grid in turn on CPU tensors.
// So these kernels must stay within what the emulation models: no __shared__ memory, no
// __syncthreads(), no warp intrinsics (the emulation fails to compile or throws if one appears).
// (Named .h, not .cuh, so that the loader's staleness check of cca/ops/_extension.py sees edits.)
//
// Every op reduces to three primitives on volumes (N, C, T, H, W) (2D is T == 1), with
// L = cross_length(T, H, W) slots per pixel (order in criss_cross.h):
//   weight_fwd(a, b)[n, i, u] = sum_c a[n, c, u] b[n, c, pos_i(u)]                    (N, L, T, H, W)
//   map_fwd(w, v)[n, c, u]    = sum_i w[n, i, u] v[n, c, pos_i(u)]                     (N, C, T, H, W)
//   map_bwd_v(w, g)[n, c, p]  = sum_{u : p in cross(u)} w[n, slot_u(p), u] g[n, c, u]  (N, C, T, H, W)
// composed into the eight ops in ops_composition.h.
//
// One thread per output element, x the fastest-varying index so that the loads of a pixel
// neighbourhood coalesce; sums accumulate in at::opmath_type (float for half/bfloat16); no
// atomics, so the results are deterministic; 64-bit index math throughout. No temporaries beyond
// the outputs themselves.
#pragma once

#if !defined(__CUDACC__) && !defined(__HIPCC__) && !defined(CCA_CUDA_EMULATION)
#error "csrc/cuda/kernels.h is device code: compile it with nvcc, or include csrc/testing/cuda_emulation.h first"
#endif

#include <ATen/OpMathType.h>

#include <cstdint>

#include "criss_cross.h"

namespace cca {

// Grid-stride loop over [0, total) with 64-bit indices.
#define CCA_CUDA_LOOP(idx, total)                                                                 \
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < (total); \
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x)

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

}  // namespace cca
