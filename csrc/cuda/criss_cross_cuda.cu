// Launchers of the criss-cross CUDA kernels (device code in kernels.h): dtype dispatch, the current
// stream, grid sizes (launch_config.h), <<<>>>, launch checks, and registration of the eight ops
// (composed in ops_composition.h) for the CUDA dispatch key.
//
// The same kernels and composition run on the CPU under csrc/testing/cuda_emulation.h in the test
// suite (tests/test_cuda_emulated.py); what only a GPU can check is in tests/test_cuda.py.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "criss_cross.h"
#include "cuda/kernels.h"
#include "cuda/launch_config.h"
#include "cuda/ops_composition.h"

namespace cca {
namespace {

dim3 blocks_for(int64_t total) {
  return dim3(static_cast<unsigned int>(grid_blocks(total)));
}

// All take contiguous tensors on the current device (the callers hold the device guard).
struct CudaBackend {
  using Guard = c10::cuda::CUDAGuard;

  static void check_device(const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor for the CUDA kernel, got device ", t.device());
  }

  // a, b (N, C, T, H, W) -> (N, L, T, H, W).
  static at::Tensor weight_fwd(const at::Tensor& a, const at::Tensor& b) {
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
          total, a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), w.mutable_data_ptr<scalar_t>(), C, T,
          H, W, L);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return w;
  }

  // w (N, L, T, H, W), v (N, C, T, H, W) -> (N, C, T, H, W).
  static at::Tensor map_fwd(const at::Tensor& w, const at::Tensor& v) {
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
          total, w.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), C, T,
          H, W, L);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return out;
  }

  // w (N, L, T, H, W), g (N, C, T, H, W) -> (N, C, T, H, W).
  static at::Tensor map_bwd_v(const at::Tensor& w, const at::Tensor& g) {
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
          total, w.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), dv.mutable_data_ptr<scalar_t>(), C, T,
          H, W, L);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return dv;
  }
};

using CudaOps = CrissCrossOps<CudaBackend>;

}  // namespace
}  // namespace cca

TORCH_LIBRARY_IMPL(cca, CUDA, m) {
  m.impl("ca_weight_2d", &cca::CudaOps::ca_weight_2d);
  m.impl("ca_weight_2d_backward", &cca::CudaOps::ca_weight_2d_backward);
  m.impl("ca_map_2d", &cca::CudaOps::ca_map_2d);
  m.impl("ca_map_2d_backward", &cca::CudaOps::ca_map_2d_backward);
  m.impl("ca_weight_3d", &cca::CudaOps::ca_weight_3d);
  m.impl("ca_weight_3d_backward", &cca::CudaOps::ca_weight_3d_backward);
  m.impl("ca_map_3d", &cca::CudaOps::ca_map_3d);
  m.impl("ca_map_3d_backward", &cca::CudaOps::ca_map_3d_backward);
}
