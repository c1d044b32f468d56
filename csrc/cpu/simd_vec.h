// SIMD building blocks of the AVX2 kernels (simd.cpp): vector types for float32 and float64, blocks
// of two vectors of lanes with masks for a row's partial last block, and the packing routines.
// Every function holding intrinsics carries CCA_AVX2 (a target attribute, no -mavx2 needed).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <utility>
#include <vector>

#define CCA_AVX2 __attribute__((target("avx2,fma")))

namespace cca {
namespace simd {
namespace detail {

struct F32 {
  using T = float;
  using R = __m256;
  static constexpr int kLanes = 8;
  CCA_AVX2 static R zero() { return _mm256_setzero_ps(); }
  CCA_AVX2 static R set1(T x) { return _mm256_set1_ps(x); }
  CCA_AVX2 static R load(const T* p) { return _mm256_loadu_ps(p); }
  CCA_AVX2 static R load(const T* p, __m256i m) { return _mm256_maskload_ps(p, m); }
  CCA_AVX2 static void store(T* p, R x) { _mm256_storeu_ps(p, x); }
  CCA_AVX2 static void store(T* p, R x, __m256i m) { _mm256_maskstore_ps(p, m, x); }
  CCA_AVX2 static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  CCA_AVX2 static R add(R a, R b) { return _mm256_add_ps(a, b); }
  CCA_AVX2 static __m256i mask(int64_t n) {  // the first n lanes
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
};

struct F64 {
  using T = double;
  using R = __m256d;
  static constexpr int kLanes = 4;
  CCA_AVX2 static R zero() { return _mm256_setzero_pd(); }
  CCA_AVX2 static R set1(T x) { return _mm256_set1_pd(x); }
  CCA_AVX2 static R load(const T* p) { return _mm256_loadu_pd(p); }
  CCA_AVX2 static R load(const T* p, __m256i m) { return _mm256_maskload_pd(p, m); }
  CCA_AVX2 static void store(T* p, R x) { _mm256_storeu_pd(p, x); }
  CCA_AVX2 static void store(T* p, R x, __m256i m) { _mm256_maskstore_pd(p, m, x); }
  CCA_AVX2 static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  CCA_AVX2 static R add(R a, R b) { return _mm256_add_pd(a, b); }
  CCA_AVX2 static __m256i mask(int64_t n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  }
};

// A block of two vectors of lanes, [x0, x0 + 2 * kLanes) of a row; the last block of a row may
// be partial (nx < 2 * kLanes lanes), then accesses to the ops' tensors are masked. Packed
// operands are always full blocks, zero past nx.
template <class V>
struct Block {
  static constexpr int64_t kLanes = 2 * V::kLanes;
  int64_t x0, nx;
  __m256i mask[2];
  CCA_AVX2 Block(int64_t x0_, int64_t width) : x0(x0_), nx(std::min(kLanes, width - x0_)) {
    mask[0] = V::mask(std::min<int64_t>(nx, V::kLanes));
    mask[1] = V::mask(std::max<int64_t>(nx - V::kLanes, 0));
  }
};

// Prefetches the cache lines of kLanes entries from p (one or two lines).
template <class V>
CCA_AVX2 inline void prefetch_lanes(const typename V::T* p) {
  _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(p + V::kLanes - 1), _MM_HINT_T0);
}

// Prefetches n contiguous entries from p.
template <class T>
inline void prefetch_range(const T* p, int64_t n) {
  const char* begin = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < static_cast<int64_t>(n * sizeof(T)); b += 64) {
    _mm_prefetch(begin + b, _MM_HINT_T0);
  }
  _mm_prefetch(begin + n * sizeof(T) - 1, _MM_HINT_T0);
}

template <class V, bool kMask>
CCA_AVX2 inline void store_part(typename V::T* p, int j, typename V::R x, const __m256i* mask) {
  if (kMask) {
    V::store(p + j * V::kLanes, x, mask[j]);
  } else {
    V::store(p + j * V::kLanes, x);
  }
}

// dst[r * kLanes + l] = src[r * stride + x0 + l] for r < rows, l < nx, zero for nx <= l < kLanes.
template <class T>
void pack_block(T* dst, const T* src, int64_t rows, int64_t stride, int64_t x0, int64_t nx, int64_t lanes) {
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(dst + r * lanes, src + r * stride + x0, nx * sizeof(T));
    std::fill(dst + r * lanes + nx, dst + (r + 1) * lanes, T(0));
  }
}

inline int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}

// Blocks [start, start + size) covering [0, n): `sizes[0]`-sized first, the rest by the smaller sizes.
inline std::vector<std::pair<int64_t, int>> split(int64_t n, std::initializer_list<int> sizes) {
  std::vector<std::pair<int64_t, int>> blocks;
  int64_t start = 0;
  for (int size : sizes) {
    for (; n - start >= size; start += size) {
      blocks.emplace_back(start, size);
    }
  }
  return blocks;
}

// The column parts run per block of lanes on packed operands, one half (one vector) of the block
// at a time: a packed half is (rows, ..., kLanes), so that the operand a tile sweeps stays in L1.
// Packs rows r < rows of src (row stride `stride`) at the block's lanes into the two halves:
// half[h][r * step + l] = src[r * stride + x0 + h * kLanes + l], zero past the block's width.
template <class V>
CCA_AVX2 void pack_halves(typename V::T* half0, typename V::T* half1, int64_t step, const typename V::T* src,
                          int64_t rows, int64_t stride, const Block<V>& block) {
  const typename V::T* from = src + block.x0;
  if (block.nx == Block<V>::kLanes) {
    for (int64_t r = 0; r < rows; ++r) {
      V::store(half0 + r * step, V::load(from + r * stride));
      V::store(half1 + r * step, V::load(from + r * stride + V::kLanes));
    }
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      V::store(half0 + r * step, V::load(from + r * stride, block.mask[0]));
      V::store(half1 + r * step, V::load(from + r * stride + V::kLanes, block.mask[1]));
    }
  }
}

}  // namespace detail
}  // namespace simd
}  // namespace cca
