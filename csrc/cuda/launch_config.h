// Grid size of the criss-cross kernels, shared by the CUDA launchers (criss_cross_cuda.cu) and the
// CPU emulation of the same kernels (csrc/testing/emulated_ops.cpp): plain C++, no CUDA types.
#pragma once

#include <algorithm>
#include <cstdint>

namespace cca {

constexpr int kThreads = 256;            // threads per block
constexpr int64_t kMaxBlocks = 65535;    // a grid-stride loop covers the rest

// Blocks of kThreads threads for `total` output elements: enough for one element per thread, at
// most max_blocks (then each thread covers several elements in the grid-stride loop), at least 1.
inline int64_t grid_blocks(int64_t total, int64_t max_blocks = kMaxBlocks) {
  const int64_t wanted = (total + kThreads - 1) / kThreads;
  return std::max<int64_t>(1, std::min<int64_t>(wanted, max_blocks));
}

}  // namespace cca
