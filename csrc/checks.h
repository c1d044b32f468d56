// Input checks shared by the CPU and CUDA entry points: every op validates its tensors with
// TORCH_CHECK before touching memory, so bad input raises a Python exception, never a crash.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "criss_cross.h"

namespace cca {

inline void check_volume(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.defined(), name, " is undefined");
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dims, got ", t.dim(), " (shape ", t.sizes(), ")");
  TORCH_CHECK(t.is_floating_point(), name, " must be floating point, got ", t.scalar_type());
  TORCH_CHECK(t.numel() > 0, name, " must not be empty, got shape ", t.sizes());
}

inline void check_pair(const at::Tensor& a, const char* na, const at::Tensor& b, const char* nb) {
  TORCH_CHECK(a.device() == b.device(), na, " and ", nb, " must be on the same device, got ", a.device(), " and ",
              b.device());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), na, " and ", nb, " must have the same dtype, got ",
              a.scalar_type(), " and ", b.scalar_type());
}

// query/key (N, C', T, H, W): same shape.
inline void check_weight_inputs(const at::Tensor& query, const at::Tensor& key) {
  check_volume(query, "query", 5);
  check_volume(key, "key", 5);
  check_pair(query, "query", key, "key");
  TORCH_CHECK(query.sizes() == key.sizes(), "key must have the shape of query, got ", key.sizes(), " and ",
              query.sizes());
}

// attention (N, L, T, H, W) with L = W + H + T - 2, value (N, C, T, H, W).
inline void check_map_inputs(const at::Tensor& attention, const at::Tensor& value) {
  check_volume(attention, "attention", 5);
  check_volume(value, "value", 5);
  check_pair(attention, "attention", value, "value");
  const int64_t T = value.size(2), H = value.size(3), W = value.size(4);
  TORCH_CHECK(attention.size(0) == value.size(0) && attention.size(1) == W + H + T - 2 &&
                  attention.size(2) == T && attention.size(3) == H && attention.size(4) == W,
              "attention must have shape [", value.size(0), ", ", W + H + T - 2, ", ", T, ", ", H, ", ", W,
              "] for value of shape ", value.sizes(), ", got ", attention.sizes());
}

inline void check_grad(const at::Tensor& grad, const at::Tensor& like, const char* what) {
  TORCH_CHECK(grad.defined(), "grad of ", what, " is undefined");
  check_pair(grad, "grad", like, what);
  TORCH_CHECK(grad.sizes() == like.sizes(), "grad must have the shape of ", what, " ", like.sizes(), ", got ",
              grad.sizes());
}

// grad of the affinity: (N, L, T, H, W) for query (N, C', T, H, W).
inline void check_weight_grad(const at::Tensor& grad, const at::Tensor& query) {
  TORCH_CHECK(grad.defined(), "grad of the affinity is undefined");
  check_pair(grad, "grad", query, "query");
  const int64_t N = query.size(0), T = query.size(2), H = query.size(3), W = query.size(4);
  const int64_t L = cross_length(T, H, W);
  TORCH_CHECK(grad.dim() == 5 && grad.size(0) == N && grad.size(1) == L && grad.size(2) == T && grad.size(3) == H &&
                  grad.size(4) == W,
              "grad must have shape [", N, ", ", L, ", ", T, ", ", H, ", ", W, "], got ", grad.sizes());
}

// 2D tensors (N, C, H, W) are run as (N, C, 1, H, W).
inline at::Tensor as_volume(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), name, " is undefined");
  TORCH_CHECK(t.dim() == 4, name, " must have 4 dims (N, C, H, W), got ", t.dim(), " (shape ", t.sizes(), ")");
  return t.unsqueeze(2);
}

}  // namespace cca
