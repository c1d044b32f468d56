// Fast CPU path of the 2D criss-cross primitives (float32/float64, T == 1), on strided BLAS GEMMs.
//
// Volumes are (N, C, H, W) contiguous, attention/affinity maps (N, L, H, W) with L = H + W - 1 in
// the slot order of criss_cross.h. The three primitives of criss_cross_cpu.cpp:
//   weight(a, b)[n, i, u]          = <a[n, :, u], b[n, :, pos_i(u)]>
//   apply(w, v, false)[n, c, u]    = sum_i w[n, i, u] v[n, c, pos_i(u)]
//   apply(w, v, true)[n, c, p]     = sum_{u : p in cross(u)} w[n, slot_u(p), u] v[n, c, u]
#pragma once

#include <ATen/core/Tensor.h>

namespace cca {
namespace cpu2d {

// Whether the fast path serves this dtype (float32, float64).
bool supports(const at::Tensor& t);

// a, b (N, C, H, W) contiguous -> (N, L, H, W).
at::Tensor weight(const at::Tensor& a, const at::Tensor& b);

// w (N, L, H, W), v (N, C, H, W), both contiguous -> (N, C, H, W).
at::Tensor apply(const at::Tensor& w, const at::Tensor& v, bool transpose);

}  // namespace cpu2d
}  // namespace cca
