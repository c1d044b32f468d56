// The three primitives of kernels.h as tensor functions: output shapes, dtype dispatch and the kernel
// arguments, shared by the CUDA launchers (criss_cross_cuda.cu) and the CPU emulation
// (csrc/testing/emulated_ops.cpp), so that the emulated tests also cover what is passed to the kernels.
//
// Backend provides new_output(sizes, like) (the output tensor) and launch(total, kernel, args...),
// which runs kernel(total, args...) over a grid for `total` output elements (grid size from
// launch_config.h). All inputs are contiguous (N, C, T, H, W) volumes on the backend's device.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "criss_cross.h"
#include "cuda/kernels.h"

namespace cca {

template <typename Backend>
struct Primitives {
  // a, b (N, C, T, H, W) -> w (N, L, T, H, W).
  static at::Tensor weight_fwd(const at::Tensor& a, const at::Tensor& b) {
    const int64_t N = a.size(0), C = a.size(1), T = a.size(2), H = a.size(3), W = a.size(4);
    const int64_t L = cross_length(T, H, W);
    at::Tensor w = Backend::new_output({N, L, T, H, W}, a);
    const int64_t total = w.numel();
    if (total == 0) {
      return w;
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "cca_weight_fwd", [&] {
      Backend::launch(total, &weight_fwd_kernel<scalar_t>, a.const_data_ptr<scalar_t>(),
                      b.const_data_ptr<scalar_t>(), w.mutable_data_ptr<scalar_t>(), C, T, H, W, L);
    });
    return w;
  }

  // w (N, L, T, H, W), v (N, C, T, H, W) -> out (N, C, T, H, W).
  static at::Tensor map_fwd(const at::Tensor& w, const at::Tensor& v) {
    const int64_t C = v.size(1), T = v.size(2), H = v.size(3), W = v.size(4);
    const int64_t L = cross_length(T, H, W);
    at::Tensor out = Backend::new_output(v.sizes(), v);
    const int64_t total = out.numel();
    if (total == 0) {
      return out;
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "cca_map_fwd", [&] {
      Backend::launch(total, &map_fwd_kernel<scalar_t>, w.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
                      out.mutable_data_ptr<scalar_t>(), C, T, H, W, L);
    });
    return out;
  }

  // w (N, L, T, H, W), g (N, C, T, H, W) -> dv (N, C, T, H, W).
  static at::Tensor map_bwd_v(const at::Tensor& w, const at::Tensor& g) {
    const int64_t C = g.size(1), T = g.size(2), H = g.size(3), W = g.size(4);
    const int64_t L = cross_length(T, H, W);
    at::Tensor dv = Backend::new_output(g.sizes(), g);
    const int64_t total = dv.numel();
    if (total == 0) {
      return dv;
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "cca_map_bwd_v", [&] {
      Backend::launch(total, &map_bwd_v_kernel<scalar_t>, w.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
                      dv.mutable_data_ptr<scalar_t>(), C, T, H, W, L);
    });
    return dv;
  }
};

}  // namespace cca
