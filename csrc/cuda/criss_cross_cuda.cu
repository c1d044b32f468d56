// Launchers of the criss-cross CUDA kernels (device code in kernels.h): the device guard, the
// current stream, grid sizes (launch_config.h), <<<>>>, launch checks, and registration of the
// eight ops for the CUDA dispatch key. Output shapes, dtype dispatch and kernel arguments are in
// primitives.h and the composition of the ops in ops_composition.h, shared with the CPU emulation
// of these kernels (csrc/testing/emulated_ops.cpp, tested by tests/test_cuda_emulated.py); what
// only a GPU can check is in tests/test_cuda.py.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>

#include "cuda/kernels.h"
#include "cuda/launch_config.h"
#include "cuda/ops_composition.h"

namespace cca {
namespace {

struct CudaBackend {
  using Guard = c10::cuda::CUDAGuard;  // the ops run on the inputs' device

  static void check_device(const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor for the CUDA kernel, got device ", t.device());
  }

  static at::Tensor new_output(at::IntArrayRef sizes, const at::Tensor& like) {
    return at::empty(sizes, like.options());  // every element is written by the kernel
  }

  // kernel(total, args...) on the current stream, one thread per element up to kMaxBlocks blocks.
  template <typename Kernel, typename... Args>
  static void launch(int64_t total, Kernel kernel, Args... args) {
    const dim3 grid(static_cast<unsigned int>(grid_blocks(total)));
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    kernel<<<grid, kThreads, 0, stream>>>(total, args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
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
