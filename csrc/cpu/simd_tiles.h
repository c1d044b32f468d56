// Register-tiled micro-kernels of the AVX2 kernels (simd.cpp); lanes = consecutive pixels x of a row.
//  * broadcast_tile (row parts): out[r, x] = sum_k s[r, k] m[k, x], 6 rows x 2 vectors of
//    accumulators fed by one broadcast of s and two vector loads of packed m per k;
//  * column_tile (column part of map / map_t): per lane x, a matrix product along the column of x,
//    3 rows x 4 channels per tile on packed halves, skipping the pixel's own row (u counted once);
//  * affinity_tile (column part of weight): per lane x, 3 rows x 4 partners, summed over channels.
#pragma once

#include "cpu/simd_vec.h"
#include "criss_cross.h"

namespace cca {
namespace simd {
namespace detail {

// ----------------------------------------------------------------------------- row parts
// out[r * o_r + x] = sum_{k < K} s[r * s_r + k * s_k] * m[k * m_k + x] for r < R, x in the block;
// m packed (rows of m_k >= round_up(width, block lanes) entries, zero past the width).
template <class V, int R, bool kMask>
CCA_AVX2 void broadcast_tile(int64_t K, const typename V::T* s, int64_t s_r, int64_t s_k, const typename V::T* m,
                             int64_t m_k, typename V::T* out, int64_t o_r, const __m256i* mask) {
  typename V::R acc[R][2];
  for (int r = 0; r < R; ++r) {
    acc[r][0] = acc[r][1] = V::zero();
  }
  for (int64_t k = 0; k < K; ++k) {
    const typename V::R m0 = V::load(m + k * m_k), m1 = V::load(m + k * m_k + V::kLanes);
    for (int r = 0; r < R; ++r) {
      const typename V::R sv = V::set1(s[r * s_r + k * s_k]);
      acc[r][0] = V::fma(sv, m0, acc[r][0]);
      acc[r][1] = V::fma(sv, m1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    store_part<V, kMask>(out + r * o_r, 0, acc[r][0], mask);
    store_part<V, kMask>(out + r * o_r, 1, acc[r][1], mask);
  }
}

constexpr int kRowTile = 6;  // rows (channels, partners) of a tile: 6 x 2 vectors = 12 accumulators

template <class V, bool kMask>
CCA_AVX2 void broadcast_rows(int rows, int64_t K, const typename V::T* s, int64_t s_r, int64_t s_k,
                             const typename V::T* m, int64_t m_k, typename V::T* out, int64_t o_r,
                             const __m256i* mask) {
  switch (rows) {
    case 6: return broadcast_tile<V, 6, kMask>(K, s, s_r, s_k, m, m_k, out, o_r, mask);
    case 5: return broadcast_tile<V, 5, kMask>(K, s, s_r, s_k, m, m_k, out, o_r, mask);
    case 4: return broadcast_tile<V, 4, kMask>(K, s, s_r, s_k, m, m_k, out, o_r, mask);
    case 3: return broadcast_tile<V, 3, kMask>(K, s, s_r, s_k, m, m_k, out, o_r, mask);
    case 2: return broadcast_tile<V, 2, kMask>(K, s, s_r, s_k, m, m_k, out, o_r, mask);
    default: return broadcast_tile<V, 1, kMask>(K, s, s_r, s_k, m, m_k, out, o_r, mask);
  }
}

// out[r * o_r + x] = sum_{k < K} s[r * s_r + k * s_k] * m[k * m_k + x] for r < rows, x < width.
template <class V>
CCA_AVX2 void broadcast_gemm(int64_t rows, int64_t width, int64_t K, const typename V::T* s, int64_t s_r,
                             int64_t s_k, const typename V::T* m, int64_t m_k, typename V::T* out, int64_t o_r) {
  for (int64_t r0 = 0; r0 < rows; r0 += kRowTile) {
    const int rb = static_cast<int>(std::min<int64_t>(kRowTile, rows - r0));
    if (s_k == 1) {  // s rows straight from an op's tensor: fetch the next tile's while this one computes
      for (int64_t r = r0 + kRowTile; r < std::min<int64_t>(r0 + 2 * kRowTile, rows); ++r) {
        prefetch_range(s + r * s_r, K);
      }
    }
    for (int64_t x0 = 0; x0 < width; x0 += Block<V>::kLanes) {
      const Block<V> block(x0, width);
      auto* o = out + r0 * o_r + x0;
      if (block.nx == Block<V>::kLanes) {
        broadcast_rows<V, false>(rb, K, s + r0 * s_r, s_r, s_k, m + x0, m_k, o, o_r, block.mask);
      } else {
        broadcast_rows<V, true>(rb, K, s + r0 * s_r, s_r, s_k, m + x0, m_k, o, o_r, block.mask);
      }
    }
  }
}

// -------------------------------------------------------------------------- column parts
// Column slot of the pair (own row i, partner row k != i) of a pixel in row i: W + rank of k, by
// the index math the CUDA kernels and the generic CPU kernels use (criss_cross.h).
inline int64_t column_plane(int64_t i, int64_t k, int64_t W) {
  return cross_slot(kCol, k, i, /*H: unused for a column slot*/ 0, W);
}

// acc[r][c] += a[r] * src[c] for the R rows of a tile (their packed weights a[r]) and CB channels.
template <class V, int R, int CB>
CCA_AVX2 inline void column_step(typename V::R (&acc)[R][CB], const typename V::T* const (&a)[R], int64_t p,
                                 const typename V::T* src) {
  constexpr int64_t L = V::kLanes;
  typename V::R av[R];
  for (int r = 0; r < R; ++r) {
    av[r] = V::load(a[r] + p * L);
  }
  for (int c = 0; c < CB; ++c) {
    const typename V::R sv = V::load(src + c * L);
    for (int r = 0; r < R; ++r) {
      acc[r][c] = V::fma(av[r], sv, acc[r][c]);
    }
  }
}

// out[c * HW + (i + r) * W + x] += sum_{p < H-1} a[i + r, p, x] src[k(i + r, p), c, x] for r < R
// (R <= kColumnRows), c < CB and the kLanes lanes x of one half block, k(i, p) the p-th row other than i;
// a (H, H-1, kLanes) and src (H, CB, kLanes) packed halves.
template <class V, int R, int CB, bool kMask>
CCA_AVX2 void column_tile(int64_t H, int64_t W, int64_t i, const typename V::T* a, const typename V::T* src,
                          typename V::T* out, __m256i mask) {
  constexpr int64_t L = V::kLanes;
  const int64_t HW = H * W;
  typename V::R acc[R][CB];
  const typename V::T* ar[R];
  for (int r = 0; r < R; ++r) {
    ar[r] = a + (i + r) * (H - 1) * L;
    for (int c = 0; c < CB; ++c) {
      acc[r][c] = V::zero();  // out is added at the end: no FMA waits for its load
    }
  }
  // the next tile's lines of out, while this one computes (their loads would stall it otherwise)
  for (int64_t r = i + R; r < std::min(i + 2 * R, H); ++r) {
    for (int c = 0; c < CB; ++c) {
      prefetch_lanes<V>(out + c * HW + r * W);
    }
  }
  for (int64_t p = 0; p < i; ++p) {  // rows above the tile: k = p for every row of the tile
    column_step<V, R, CB>(acc, ar, p, src + p * CB * L);
  }
  for (int64_t p = i; p < std::min(i + R - 1, H - 1); ++p) {  // p inside the tile: row i + r takes k = p + (p >= i + r)
    for (int r = 0; r < R; ++r) {
      const typename V::R av = V::load(ar[r] + p * L);
      const typename V::T* sk = src + (p + (p >= i + r)) * CB * L;
      for (int c = 0; c < CB; ++c) {
        acc[r][c] = V::fma(av, V::load(sk + c * L), acc[r][c]);
      }
    }
  }
  for (int64_t p = i + R - 1; p < H - 1; ++p) {  // rows below: k = p + 1
    column_step<V, R, CB>(acc, ar, p, src + (p + 1) * CB * L);
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < CB; ++c) {
      typename V::T* o = out + c * HW + (i + r) * W;
      if (kMask) {
        V::store(o, V::add(acc[r][c], V::load(o, mask)), mask);
      } else {
        V::store(o, V::add(acc[r][c], V::load(o)));
      }
    }
  }
}

// Tiles of kColumnRows rows x kColumnChannels channels (7 loads per 12 FMAs: measured ~2x faster
// than 2 x 6 on Zen 4, whose FMAs otherwise wait on loads).
constexpr int kColumnRows = 3;
constexpr int kColumnChannels = 4;

template <class V, int CB, bool kMask>
CCA_AVX2 void column_rows_of(int64_t H, int64_t W, const typename V::T* a, const typename V::T* src,
                             typename V::T* out, __m256i mask) {
  int64_t i = 0;
  for (; i + kColumnRows <= H; i += kColumnRows) {
    column_tile<V, kColumnRows, CB, kMask>(H, W, i, a, src, out, mask);
  }
  if (H - i == 2) {
    column_tile<V, 2, CB, kMask>(H, W, i, a, src, out, mask);
  } else if (H - i == 1) {
    column_tile<V, 1, CB, kMask>(H, W, i, a, src, out, mask);
  }
}

// Every row of one half block for the channel block of `size` channels.
template <class V, bool kMask>
CCA_AVX2 void column_rows(int size, int64_t H, int64_t W, const typename V::T* a, const typename V::T* src,
                          typename V::T* out, __m256i mask) {
  switch (size) {
    case kColumnChannels: return column_rows_of<V, kColumnChannels, kMask>(H, W, a, src, out, mask);
    case 2: return column_rows_of<V, 2, kMask>(H, W, a, src, out, mask);
    default: return column_rows_of<V, 1, kMask>(H, W, a, src, out, mask);
  }
}

template <class V>
CCA_AVX2 void column_half(int size, int64_t H, int64_t W, const typename V::T* a, const typename V::T* src,
                          typename V::T* out, const Block<V>& block, int half) {
  if (block.nx == Block<V>::kLanes) {
    column_rows<V, false>(size, H, W, a, src, out + block.x0 + half * V::kLanes, block.mask[half]);
  } else {
    column_rows<V, true>(size, H, W, a, src, out + block.x0 + half * V::kLanes, block.mask[half]);
  }
}

// acc[i + r, j0 + j, x] (+)= sum_{c < K} a[i + r, c, x] b[j0 + j, c, x] for r < R, j < JB and
// the lanes x of one half block; a, b (H, K, kLanes) and acc (H, H, kLanes) packed halves.
template <class V, int R, int JB>
CCA_AVX2 void affinity_tile(int64_t K, int64_t H, int64_t i, int64_t j0, bool first, const typename V::T* a,
                            const typename V::T* b, typename V::T* sums) {
  constexpr int64_t L = V::kLanes;
  typename V::R acc[R][JB];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < JB; ++j) {
      acc[r][j] = first ? V::zero() : V::load(sums + ((i + r) * H + j0 + j) * L);
    }
  }
  for (int64_t c = 0; c < K; ++c) {
    typename V::R av[R];
    for (int r = 0; r < R; ++r) {
      av[r] = V::load(a + ((i + r) * K + c) * L);
    }
    for (int j = 0; j < JB; ++j) {
      const typename V::R bv = V::load(b + ((j0 + j) * K + c) * L);
      for (int r = 0; r < R; ++r) {
        acc[r][j] = V::fma(av[r], bv, acc[r][j]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < JB; ++j) {
      V::store(sums + ((i + r) * H + j0 + j) * L, acc[r][j]);
    }
  }
}

// Rows [i0, i1) of partners [j0, j0 + JB), tiles of up to kColumnRows rows.
template <class V, int JB>
CCA_AVX2 void affinity_rows_of(int64_t K, int64_t H, int64_t i0, int64_t i1, int64_t j0, bool first,
                               const typename V::T* a, const typename V::T* b, typename V::T* sums) {
  int64_t i = i0;
  for (; i + kColumnRows <= i1; i += kColumnRows) {
    affinity_tile<V, kColumnRows, JB>(K, H, i, j0, first, a, b, sums);
  }
  if (i1 - i == 2) {
    affinity_tile<V, 2, JB>(K, H, i, j0, first, a, b, sums);
  } else if (i1 - i == 1) {
    affinity_tile<V, 1, JB>(K, H, i, j0, first, a, b, sums);
  }
}

// Rows [i0, i1) against every partner j, one half block, one chunk of K channels.
template <class V>
CCA_AVX2 void affinity_rows(int64_t K, int64_t H, int64_t i0, int64_t i1, bool first, const typename V::T* a,
                            const typename V::T* b, typename V::T* sums) {
  for (const auto& [j0, jb] : split(H, {kColumnChannels, 2, 1})) {
    switch (jb) {
      case kColumnChannels: affinity_rows_of<V, kColumnChannels>(K, H, i0, i1, j0, first, a, b, sums); break;
      case 2: affinity_rows_of<V, 2>(K, H, i0, i1, j0, first, a, b, sums); break;
      default: affinity_rows_of<V, 1>(K, H, i0, i1, j0, first, a, b, sums);
    }
  }
}

// out[column_plane(i, j), i, x] = sums[half][i, j, lane] for rows [i0, i1), every partner j != i.
template <class V>
CCA_AVX2 void scatter_sums(const typename V::T* sums, int64_t H, int64_t W, int64_t i0, int64_t i1,
                           typename V::T* out, const Block<V>& block) {
  constexpr int64_t L = V::kLanes;
  const int64_t HW = H * W, half = H * H * L;
  const bool full = block.nx == Block<V>::kLanes;
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t j = 0; j < H; ++j) {
      if (j == i) {
        continue;
      }
      typename V::T* to = out + column_plane(i, j, W) * HW + i * W + block.x0;
      const typename V::T* from = sums + (i * H + j) * L;
      if (full) {
        V::store(to, V::load(from));
        V::store(to + L, V::load(from + half));
      } else {
        V::store(to, V::load(from), block.mask[0]);
        V::store(to + L, V::load(from + half), block.mask[1]);
      }
    }
  }
}

}  // namespace detail
}  // namespace simd
}  // namespace cca
