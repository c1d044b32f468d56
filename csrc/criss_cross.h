// Index arithmetic of criss-cross attention, shared by the CPU and the CUDA kernels.
//
// Volumes are (T, H, W); a 2D map is the case T == 1. The criss-cross set of pixel
// u = (t, y, x) has cross_length(T, H, W) = W + (H - 1) + (T - 1) slots, in this order:
//   slot i in [0, W)                   row:    (t, y, i)          (u itself is slot x, once)
//   slot i in [W, W + H - 1)           column: (t, j, x), j != y, increasing j
//   slot i in [W + H - 1, W + H + T - 2) time: (s, y, x), s != t, increasing s
// The same order is used by cca/ops/reference.py.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define CCA_HD __host__ __device__ __forceinline__
#else
#define CCA_HD inline
#endif

namespace cca {

enum Axis : int { kRow = 0, kCol = 1, kTime = 2 };

// Number of slots of a criss-cross set in a (T, H, W) volume.
CCA_HD int64_t cross_length(int64_t T, int64_t H, int64_t W) {
  return W + (H - 1) + (T - 1);
}

// Linear offset of (t, y, x) in a contiguous (T, H, W) volume.
CCA_HD int64_t offset(int64_t t, int64_t y, int64_t x, int64_t H, int64_t W) {
  return (t * H + y) * W + x;
}

// The p-th coordinate different from `own` (p in [0, n - 1)).
CCA_HD int64_t other_coord(int64_t p, int64_t own) {
  return p < own ? p : p + 1;
}

// Inverse of other_coord: the rank of coordinate q (q != own) among those different from own.
CCA_HD int64_t other_rank(int64_t q, int64_t own) {
  return q < own ? q : q - 1;
}

// Position of slot i of pixel (t, y, x).
struct CrossPosition {
  int axis;        // kRow, kCol or kTime
  int64_t coord;   // the partner's coordinate along that axis (x', y' or t')
  int64_t t, y, x; // the partner pixel
};

CCA_HD CrossPosition cross_position(int64_t i, int64_t t, int64_t y, int64_t x, int64_t H, int64_t W) {
  CrossPosition p{kRow, i, t, y, i};
  if (i < W) {
    return p;
  }
  i -= W;
  if (i < H - 1) {
    const int64_t j = other_coord(i, y);
    p.axis = kCol;
    p.coord = j;
    p.x = x;
    p.y = j;
    return p;
  }
  i -= H - 1;
  const int64_t s = other_coord(i, t);
  p.axis = kTime;
  p.coord = s;
  p.t = s;
  p.y = y;
  p.x = x;
  return p;
}

// Slot, in the criss-cross set of pixel u, of the partner whose coordinate along `axis` is
// `coord`, where `own` is u's coordinate along that axis. For kCol and kTime, coord != own.
CCA_HD int64_t cross_slot(int axis, int64_t coord, int64_t own, int64_t H, int64_t W) {
  if (axis == kRow) {
    return coord;
  }
  if (axis == kCol) {
    return W + other_rank(coord, own);
  }
  return W + (H - 1) + other_rank(coord, own);
}

}  // namespace cca
