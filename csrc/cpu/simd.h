// Vectorised (AVX2 + FMA) CPU kernels of the 2D criss-cross ops, float32 and float64.
//
// The slot layout of the attention map, (N, H+W-1, H, W), is contiguous along x for every
// (slot, y): so is every operand of the three primitives below, and each runs as register-tiled
// matrix products whose vector lanes are consecutive pixels x of a row, straight on the ops'
// tensors (no transposed or channels-last copies):
//   weight(a, b)[s, y, x] = <a[:, y, x], b[:, pos_s(y, x)]>              (ca_weight; grad of ca_map)
//   map(w, v)[c, y, x]    = sum_s w[s, y, x] v[c, pos_s(y, x)]           (ca_map; grad of query)
//   map_t(w, g)[c, p]     = sum_{u : p in cross(u)} w[slot_u(p), u] g[c, u]  (grad of value / key)
// Each is a row part (the W slots of the row, u itself included) and a column part (the H - 1
// other pixels of the column): u is counted once and never multiplied by a zero weight, so an
// infinite value gives what the brute-force sum gives.
//
// Used by criss_cross_cpu.cpp for 2D float32/float64 inputs when the CPU has AVX2 and FMA and
// CCA_CPU_SIMD is not "0"; everything else runs on the generic kernels there.
#pragma once

#include <ATen/core/Tensor.h>

namespace cca {
namespace simd {

// True when the running CPU has AVX2 and FMA, the dtype is float32 or float64 and the
// environment variable CCA_CPU_SIMD is not "0" (read at every call, so tests can switch).
bool usable(const at::Tensor& t);

// (N, C', H, W) x2 -> (N, H+W-1, H, W).
at::Tensor weight(const at::Tensor& a, const at::Tensor& b);
// (N, H+W-1, H, W), (N, C, H, W) -> (N, C, H, W).
at::Tensor map(const at::Tensor& attention, const at::Tensor& value);
// (N, H+W-1, H, W), (N, C, H, W) -> (N, C, H, W): the adjoint of map in its value argument.
at::Tensor map_t(const at::Tensor& attention, const at::Tensor& grad);

}  // namespace simd
}  // namespace cca
