// Sequential CPU emulation of the CUDA execution model, just enough to compile the device code of
// csrc/cuda/kernels.h as ordinary C++ and run it, unchanged, on CPU tensors (test-only: built by
// tests/cuda_emulation.py, never shipped).
//
// What it provides: __global__/__device__/__host__/__forceinline__, dim3, the built-ins blockIdx,
// blockDim, gridDim and threadIdx (thread_local, so that concurrent emulations do not interfere),
// and emulate_launch(grid, block, kernel, args...), which runs every thread of every block in
// turn, to completion, as a (legal) serialisation of the grid.
//
// Why that is exact for these kernels: they use no __shared__ memory, no __syncthreads() and no
// atomics, and every thread writes only its own outputs, so any order of the threads gives the
// same result. A kernel that needs more does not silently run wrong here: __shared__ and warp
// intrinsics are not defined (compile error) and __syncthreads() throws, because running a
// block's threads to completion one after another would break a barrier (a faithful model would
// run all threads of a block phase by phase between barriers); such a kernel is GPU-only until
// the emulation models it.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#error "cuda_emulation.h emulates CUDA on the host: compile with a C++ compiler, not nvcc"
#endif

#define CCA_CUDA_EMULATION 1

#include <cstdint>
#include <stdexcept>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// __restrict__ is a GCC/Clang keyword already.

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The CUDA built-ins, per host thread.
inline thread_local dim3 gridDim;
inline thread_local dim3 blockDim;
inline thread_local dim3 blockIdx;
inline thread_local dim3 threadIdx;

[[noreturn]] inline void __syncthreads() {
  throw std::logic_error(
      "__syncthreads() is not modelled by csrc/testing/cuda_emulation.h (threads run to completion one after "
      "another): test this kernel on a GPU, or extend the emulation to run a block phase by phase");
}

namespace cca_emulation {

struct LaunchStats {
  int64_t blocks = 0;   // blocks run
  int64_t threads = 0;  // threads run in all
};

// Run kernel(args...) for every block of `grid` and every thread of `block`, in order
// (blockIdx.z, .y, .x outer, threadIdx.z, .y, .x inner).
template <typename Kernel, typename... Args>
LaunchStats emulate_launch(dim3 grid, dim3 block, Kernel kernel, Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0) {
    throw std::invalid_argument("emulate_launch: a grid or block dimension is 0 (a CUDA launch would fail)");
  }
  if (static_cast<int64_t>(block.x) * block.y * block.z > 1024) {
    throw std::invalid_argument("emulate_launch: more than 1024 threads per block (a CUDA launch would fail)");
  }
  const dim3 saved_grid = gridDim, saved_block = blockDim, saved_bidx = blockIdx, saved_tidx = threadIdx;
  gridDim = grid;
  blockDim = block;
  LaunchStats stats;
  for (unsigned int bz = 0; bz < grid.z; ++bz)
    for (unsigned int by = 0; by < grid.y; ++by)
      for (unsigned int bx = 0; bx < grid.x; ++bx) {
        blockIdx = dim3(bx, by, bz);
        ++stats.blocks;
        for (unsigned int tz = 0; tz < block.z; ++tz)
          for (unsigned int ty = 0; ty < block.y; ++ty)
            for (unsigned int tx = 0; tx < block.x; ++tx) {
              threadIdx = dim3(tx, ty, tz);
              kernel(args...);
              ++stats.threads;
            }
      }
  gridDim = saved_grid;
  blockDim = saved_block;
  blockIdx = saved_bidx;
  threadIdx = saved_tidx;
  return stats;
}

}  // namespace cca_emulation
