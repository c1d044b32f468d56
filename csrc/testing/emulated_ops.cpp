// Test-only extension: the CUDA kernels of csrc/cuda/kernels.h, compiled as ordinary C++ under
// cuda_emulation.h, registered as CPU ops torch.ops.cca_cuda_emulated.* with the schemas of
// torch.ops.cca.* (float32, float64, float16, bfloat16). Kernel arguments (primitives.h), op
// composition (ops_composition.h) and grid size (launch_config.h) are the same code as in the
// real launchers (csrc/cuda/criss_cross_cuda.cu); only the backend below differs.
// Built just in time by tests/cuda_emulation.py; not part of the package or the wheel.
//
// Differences from the CUDA launchers, on purpose: the outputs are filled with NaN before the
// launch (at::empty there), so an element that no thread of the grid writes shows up; the block
// count can be capped (set_max_blocks) so that the grid-stride loop runs with each thread covering
// many elements; the last launch's blocks and threads are kept (last_launch).
#include "testing/cuda_emulation.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <atomic>
#include <limits>
#include <vector>

#include "criss_cross.h"
#include "cuda/kernels.h"
#include "cuda/launch_config.h"
#include "cuda/ops_composition.h"

namespace cca {
namespace {

std::atomic<int64_t> g_max_blocks{kMaxBlocks};
std::atomic<int64_t> g_last_blocks{0}, g_last_threads{0}, g_last_total{0};

struct EmulatedBackend {
  struct Guard {
    explicit Guard(c10::Device) {}
  };

  static void check_device(const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.is_cpu(), name, " must be a CPU tensor for the emulated CUDA kernel, got device ", t.device());
  }

  // NaN where the CUDA launcher has at::empty: an element that no thread writes shows up.
  static at::Tensor new_output(at::IntArrayRef sizes, const at::Tensor& like) {
    return at::full(sizes, std::numeric_limits<double>::quiet_NaN(), like.options());
  }

  // kernel(total, args...) over the grid of the CUDA launcher (block count capped by set_max_blocks).
  template <typename Kernel, typename... Args>
  static void launch(int64_t total, Kernel kernel, Args... args) {
    const dim3 grid(static_cast<unsigned int>(grid_blocks(total, g_max_blocks.load())));
    const cca_emulation::LaunchStats stats = cca_emulation::emulate_launch(grid, dim3(kThreads), kernel, total, args...);
    g_last_blocks = stats.blocks;
    g_last_threads = stats.threads;
    g_last_total = total;
  }
};

using EmulatedOps = CrissCrossOps<EmulatedBackend>;

// Cap on the blocks of every later launch (kMaxBlocks restores the real launchers' value); returns the old cap.
int64_t set_max_blocks(int64_t max_blocks) {
  TORCH_CHECK(max_blocks >= 1, "max_blocks must be a positive block count, got ", max_blocks);
  return g_max_blocks.exchange(max_blocks);
}

// [blocks, threads, total elements] of the last emulated launch.
std::vector<int64_t> last_launch() {
  return {g_last_blocks.load(), g_last_threads.load(), g_last_total.load()};
}

// [kThreads, kMaxBlocks, grid_blocks(total, max_blocks)]: the launch configuration code itself.
std::vector<int64_t> launch_config(int64_t total, int64_t max_blocks) {
  TORCH_CHECK(total >= 1, "total must be a positive element count, got ", total);
  TORCH_CHECK(max_blocks >= 1, "max_blocks must be a positive block count, got ", max_blocks);
  return {kThreads, kMaxBlocks, grid_blocks(total, max_blocks)};
}

// ------------------------------------------------------------------ checks of the emulation itself
// Each thread writes its (blockIdx, threadIdx) to its own row of `out` (grid * block rows of 6).
__global__ void record_builtins_kernel(int64_t* out) {
  const int64_t block = (static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const int64_t thread = (static_cast<int64_t>(threadIdx.z) * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  int64_t* row = out + 6 * (block * blockDim.x * blockDim.y * blockDim.z + thread);
  row[0] = blockIdx.x;
  row[1] = blockIdx.y;
  row[2] = blockIdx.z;
  row[3] = threadIdx.x;
  row[4] = threadIdx.y;
  row[5] = threadIdx.z;
}

__global__ void barrier_kernel() {
  __syncthreads();
}

// The built-ins seen by every thread of a (grid, block) launch: (blocks * threads, 6) int64.
at::Tensor record_builtins(at::IntArrayRef grid, at::IntArrayRef block) {
  TORCH_CHECK(grid.size() == 3 && block.size() == 3, "grid and block must have 3 sizes (x, y, z), got ", grid,
              " and ", block);
  const int64_t rows = grid[0] * grid[1] * grid[2] * block[0] * block[1] * block[2];
  at::Tensor out = at::full({rows, 6}, -1, at::kLong);
  cca_emulation::emulate_launch(dim3(grid[0], grid[1], grid[2]), dim3(block[0], block[1], block[2]),
                                &record_builtins_kernel, out.mutable_data_ptr<int64_t>());
  return out;
}

// A kernel with a barrier: the emulation must refuse it, not run it wrong.
void launch_barrier_kernel() {
  try {
    cca_emulation::emulate_launch(dim3(1), dim3(2), &barrier_kernel);
  } catch (const std::logic_error& error) {
    TORCH_CHECK(false, error.what());
  }
}

}  // namespace
}  // namespace cca

TORCH_LIBRARY(cca_cuda_emulated, m) {
  m.def("ca_weight_2d(Tensor query, Tensor key) -> Tensor");
  m.def("ca_weight_2d_backward(Tensor grad, Tensor query, Tensor key) -> (Tensor, Tensor)");
  m.def("ca_map_2d(Tensor attention, Tensor value) -> Tensor");
  m.def("ca_map_2d_backward(Tensor grad, Tensor attention, Tensor value) -> (Tensor, Tensor)");
  m.def("ca_weight_3d(Tensor query, Tensor key) -> Tensor");
  m.def("ca_weight_3d_backward(Tensor grad, Tensor query, Tensor key) -> (Tensor, Tensor)");
  m.def("ca_map_3d(Tensor attention, Tensor value) -> Tensor");
  m.def("ca_map_3d_backward(Tensor grad, Tensor attention, Tensor value) -> (Tensor, Tensor)");
  m.def("set_max_blocks(int max_blocks) -> int", &cca::set_max_blocks);
  m.def("last_launch() -> int[]", &cca::last_launch);
  m.def("launch_config(int total, int max_blocks) -> int[]", &cca::launch_config);
  m.def("record_builtins(int[] grid, int[] block) -> Tensor", &cca::record_builtins);
  m.def("launch_barrier_kernel() -> ()", &cca::launch_barrier_kernel);
}

TORCH_LIBRARY_IMPL(cca_cuda_emulated, CPU, m) {
  m.impl("ca_weight_2d", &cca::EmulatedOps::ca_weight_2d);
  m.impl("ca_weight_2d_backward", &cca::EmulatedOps::ca_weight_2d_backward);
  m.impl("ca_map_2d", &cca::EmulatedOps::ca_map_2d);
  m.impl("ca_map_2d_backward", &cca::EmulatedOps::ca_map_2d_backward);
  m.impl("ca_weight_3d", &cca::EmulatedOps::ca_weight_3d);
  m.impl("ca_weight_3d_backward", &cca::EmulatedOps::ca_weight_3d_backward);
  m.impl("ca_map_3d", &cca::EmulatedOps::ca_map_3d);
  m.impl("ca_map_3d_backward", &cca::EmulatedOps::ca_map_3d_backward);
}
