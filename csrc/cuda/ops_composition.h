// The eight ops of criss-cross attention composed from the three primitives of kernels.h, shared by
// the CUDA launchers (criss_cross_cuda.cu) and the CPU emulation of the CUDA kernels
// (csrc/testing/emulated_ops.cpp), so that the emulated tests also cover the composition:
//   ca_weight = weight_fwd, ca_map = map_fwd,
//   d(ca_weight)(dw, q, k) = (map_fwd(dw, k), map_bwd_v(dw, q)),
//   d(ca_map)(dout, a, v)  = (weight_fwd(dout, v), map_bwd_v(a, dout)).
// 2D tensors (N, C, H, W) run as (N, C, 1, H, W).
//
// Backend provides: Guard (constructed from the device of the inputs, held while kernels run),
// check_device(tensor, name), and what primitives.h needs (new_output, launch).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

#include "checks.h"
#include "cuda/primitives.h"

namespace cca {

template <typename Backend>
struct CrissCrossOps {
  using Pair = std::tuple<at::Tensor, at::Tensor>;
  using P = Primitives<Backend>;

  // query/key (N, C', T, H, W) -> (N, L, T, H, W)
  static at::Tensor ca_weight_3d(const at::Tensor& query, const at::Tensor& key) {
    check_weight_inputs(query, key);
    Backend::check_device(query, "query");
    const typename Backend::Guard guard(query.device());
    return P::weight_fwd(query.contiguous(), key.contiguous());
  }

  static Pair ca_weight_3d_backward(const at::Tensor& grad, const at::Tensor& query, const at::Tensor& key) {
    check_weight_inputs(query, key);
    Backend::check_device(query, "query");
    check_weight_grad(grad, query);
    const typename Backend::Guard guard(query.device());
    const at::Tensor dw = grad.contiguous();
    return {P::map_fwd(dw, key.contiguous()), P::map_bwd_v(dw, query.contiguous())};
  }

  // attention (N, L, T, H, W), value (N, C, T, H, W) -> (N, C, T, H, W)
  static at::Tensor ca_map_3d(const at::Tensor& attention, const at::Tensor& value) {
    check_map_inputs(attention, value);
    Backend::check_device(value, "value");
    const typename Backend::Guard guard(value.device());
    return P::map_fwd(attention.contiguous(), value.contiguous());
  }

  static Pair ca_map_3d_backward(const at::Tensor& grad, const at::Tensor& attention, const at::Tensor& value) {
    check_map_inputs(attention, value);
    Backend::check_device(value, "value");
    check_grad(grad, value, "value");
    const typename Backend::Guard guard(value.device());
    const at::Tensor dout = grad.contiguous();
    return {P::weight_fwd(dout, value.contiguous()), P::map_bwd_v(attention.contiguous(), dout)};
  }

  static at::Tensor ca_weight_2d(const at::Tensor& query, const at::Tensor& key) {
    return ca_weight_3d(as_volume(query, "query"), as_volume(key, "key")).squeeze(2);
  }

  static Pair ca_weight_2d_backward(const at::Tensor& grad, const at::Tensor& query, const at::Tensor& key) {
    auto [gq, gk] = ca_weight_3d_backward(as_volume(grad, "grad"), as_volume(query, "query"), as_volume(key, "key"));
    return {gq.squeeze(2), gk.squeeze(2)};
  }

  static at::Tensor ca_map_2d(const at::Tensor& attention, const at::Tensor& value) {
    return ca_map_3d(as_volume(attention, "attention"), as_volume(value, "value")).squeeze(2);
  }

  static Pair ca_map_2d_backward(const at::Tensor& grad, const at::Tensor& attention, const at::Tensor& value) {
    auto [ga, gv] =
        ca_map_3d_backward(as_volume(grad, "grad"), as_volume(attention, "attention"), as_volume(value, "value"));
    return {ga.squeeze(2), gv.squeeze(2)};
  }
};

}  // namespace cca
