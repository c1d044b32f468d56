// Fast CPU path of the 2D criss-cross primitives (see criss_cross_cpu_2d.h).
//
// Row part: for a fixed image row y every operand is already a BLAS matrix in place (unit stride
// along x, leading dimension H * W), so the row interactions are H GEMMs on the input, output and
// slot planes themselves: no copy, no transposed buffer.
// Column part: along a column the stride is W, so each task packs a few image columns of a chunk of
// channels into a small transposed buffer (cache-resident, no full-size copy) and runs one GEMM per
// image column against its dense column matrix col[x, j, y] = weight of partner (j, x) for pixel
// (y, x), zero on the diagonal j == y (the row part covers the pixel itself: counted once). The slot
// planes are converted to and from these matrices with the index math of criss_cross.h (cross_slot).
// One parallel region per part (the columns split evenly over the threads), so batch 1 keeps every
// core busy without a barrier per chunk.
// The zero diagonal must not multiply a non-finite value (0 * inf = NaN where the brute force gives
// inf): every packed block is checked for non-finite values, and where one is found the
// affected entries of the column part are recomputed without the diagonal term (the slot is masked).
#include "criss_cross_cpu_2d.h"

#include <ATen/ATen.h>
#include <ATen/Config.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>
#include <cmath>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "criss_cross.h"

#if AT_MKL_ENABLED()
extern "C" {
void sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc);
void dgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc);
}
#endif

namespace cca {
namespace cpu2d {
namespace {

// The column part takes the channels kChannels at a time: a chunk is transposed plane by plane
// (each 97x97 plane is cache-resident while it is transposed, so every cache line of the input and
// output is read and written once) into a (kChannels, W, H) buffer, ~2.4 MB at 97x97 float32.
constexpr int64_t kChannels = 64;
constexpr int64_t kTile = 16;  // square tiles of the plane transposes

// Row-major C (M x N, ldc) = op(A) (M x K) op(B) (K x N) + beta C. A is stored (M x K, lda), or
// (K x M, lda) when ta; B likewise. Single-threaded when called inside at::parallel_for.
template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
          T beta, T* C, int64_t ldc) {
#if AT_MKL_ENABLED()
  // Column-major view: C^T (N x M) = op(B)^T op(A)^T.
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  const char* opa = tb ? "T" : "N";
  const char* opb = ta ? "T" : "N";
  const T one = 1;
  if constexpr (std::is_same_v<T, float>) {
    sgemm_(opa, opb, &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
  } else {
    dgemm_(opa, opb, &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
  }
#else
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto view = [&](const T* p, int64_t rows, int64_t cols, int64_t ld, bool t) {
    at::Tensor m = at::from_blob(const_cast<T*>(p), {t ? cols : rows, t ? rows : cols}, {ld, 1}, opts);
    return t ? m.t() : m;
  };
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  const at::Tensor a = view(A, M, K, lda, ta), b = view(B, K, N, ldb, tb);
  if (beta == T(0)) {
    at::mm_out(c, a, b);
  } else {
    c.addmm_(a, b, beta, 1);
  }
#endif
}

// Whether every value of a contiguous buffer is finite: x - x is NaN exactly for inf and NaN, and
// kLanes independent sums vectorise (a single float sum would not, its order being fixed).
template <typename T>
bool all_finite(const T* data, int64_t size) {
  constexpr int64_t kLanes = 16;
  T lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= size; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      lanes[l] += data[i + l] - data[i + l];
    }
  }
  T check = 0;
  for (; i < size; ++i) {
    check += data[i] - data[i];
  }
  for (int64_t l = 0; l < kLanes; ++l) {
    check += lanes[l];
  }
  return check == T(0);
}

// One (H, W) plane transposed into (W, H), scalar, rows [y0, y1) x columns [x0, x1).
template <typename T>
inline void transpose_block(const T* s, T* d, int64_t y0, int64_t y1, int64_t x0, int64_t x1, int64_t H,
                            int64_t W) {
  for (int64_t y = y0; y < y1; ++y) {
    for (int64_t x = x0; x < x1; ++x) {
      d[x * H + y] = s[y * W + x];
    }
  }
}

// dst[c, x, y] = src[c, y, x] for planes [begin, end) of (H, W) -> (W, H): 4x4 register transposes
// (SSE, float32) inside kTile square tiles, scalar at the edges and for other types.
template <typename T>
void transpose_planes(const T* src, T* dst, int64_t begin, int64_t end, int64_t H, int64_t W) {
  for (int64_t c = begin; c < end; ++c) {
    const T* s = src + c * H * W;
    T* d = dst + c * H * W;
    int64_t H4 = 0, W4 = 0;
#if defined(__SSE2__)
    if constexpr (std::is_same_v<T, float>) {
      H4 = H / 4 * 4;
      W4 = W / 4 * 4;
      for (int64_t y0 = 0; y0 < H4; y0 += kTile) {
        for (int64_t x0 = 0; x0 < W4; x0 += kTile) {
          for (int64_t y = y0; y < std::min(H4, y0 + kTile); y += 4) {
            for (int64_t x = x0; x < std::min(W4, x0 + kTile); x += 4) {
              __m128 r0 = _mm_loadu_ps(s + y * W + x), r1 = _mm_loadu_ps(s + (y + 1) * W + x);
              __m128 r2 = _mm_loadu_ps(s + (y + 2) * W + x), r3 = _mm_loadu_ps(s + (y + 3) * W + x);
              _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
              _mm_storeu_ps(d + x * H + y, r0);
              _mm_storeu_ps(d + (x + 1) * H + y, r1);
              _mm_storeu_ps(d + (x + 2) * H + y, r2);
              _mm_storeu_ps(d + (x + 3) * H + y, r3);
            }
          }
        }
      }
    }
#endif
    transpose_block(s, d, 0, H4, W4, W, H, W);  // right edge of the vectorised rows
    for (int64_t y0 = H4; y0 < H; y0 += kTile) {  // bottom rows (all of them when scalar)
      for (int64_t x0 = 0; x0 < W; x0 += kTile) {
        transpose_block(s, d, y0, std::min(H, y0 + kTile), x0, std::min(W, x0 + kTile), H, W);
      }
    }
  }
}

// Channels [0, cs) of src (C, H, W) transposed into dst (cs, W, H), planes split over the threads.
template <typename T>
void transpose_chunk(const T* src, T* dst, int64_t cs, int64_t H, int64_t W) {
  at::parallel_for(0, cs, 1, [&](int64_t begin, int64_t end) { transpose_planes(src, dst, begin, end, H, W); });
}

// Dense column matrices <-> the column slots of w (L, H, W): col[x, j, y] = w[cross_slot(kCol, j, y), y, x]
// for j != y and col[x, j, j] = 0 (to_dense); the reverse writes the slots and drops the diagonal.
// One task per partner row j: the slot rows are read/written contiguously along x.
template <typename T>
void convert_columns(T* w, T* col, int64_t H, int64_t W, bool to_dense) {
  const int64_t plane = H * W;
  at::parallel_for(0, H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      for (int64_t y = 0; y < H; ++y) {
        T* dense = col + j * H + y;  // + x * H * H
        if (y == j) {
          if (to_dense) {
            for (int64_t x = 0; x < W; ++x) dense[x * H * H] = T(0);
          }
          continue;
        }
        T* slot = w + cross_slot(kCol, j, y, H, W) * plane + y * W;
        if (to_dense) {
          for (int64_t x = 0; x < W; ++x) dense[x * H * H] = slot[x];
        } else {
          for (int64_t x = 0; x < W; ++x) slot[x] = dense[x * H * H];
        }
      }
    }
  });
}

// Recompute, for every non-finite transposed input in[c, x, k], the column-part entry that multiplied
// it by the zero diagonal: out[c, x, k] = sum_{q != k} in[c, x, q] col[x, q, k] (col[x, k, q] when
// transposed). Only called for chunks that hold a non-finite value.
template <typename T>
void mask_diagonal(const T* in, const T* col, T* out, int64_t cs, int64_t H, int64_t W, bool transpose) {
  for (int64_t c = 0; c < cs; ++c) {
    for (int64_t x = 0; x < W; ++x) {
      const T* line = in + (c * W + x) * H;
      const T* m = col + x * H * H;
      for (int64_t k = 0; k < H; ++k) {
        if (std::isfinite(line[k])) {
          continue;
        }
        T sum = 0;
        for (int64_t q = 0; q < H; ++q) {
          if (q != k) {
            sum += line[q] * (transpose ? m[k * H + q] : m[q * H + k]);
          }
        }
        out[(c * W + x) * H + k] = sum;
      }
    }
  }
}

// Row matrices <-> the row slots of w (L, H, W): row[y, i, x] = w[i, y, x] (to_dense), or the reverse.
// Contiguous (W, W) matrices per image row keep the GEMM operands on a few pages.
template <typename T>
void convert_rows(T* w, T* row, int64_t H, int64_t W, bool to_dense) {
  const int64_t plane = H * W;
  at::parallel_for(0, H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t y = begin; y < end; ++y) {
      for (int64_t i = 0; i < W; ++i) {
        T* dense = row + (y * W + i) * W;
        T* slot = w + i * plane + y * W;
        if (to_dense) {
          std::copy(slot, slot + W, dense);
        } else {
          std::copy(dense, dense + W, slot);
        }
      }
    }
  });
}

// weight(a, b) for one sample: a, b (C, H, W), w (L, H, W). Channels kChannels at a time:
//   row[y, i, x] += sum_c b[c, y, i] a[c, y, x]        (one GEMM per image row y)
//   col[x, j, y] += sum_c b[c, j, x] a[c, y, x]        (one GEMM per image column x, transposed chunk)
template <typename T>
void weight_sample(const T* a, const T* b, T* w, int64_t C, int64_t H, int64_t W) {
  const int64_t P = H * W, chunk = std::min(C, kChannels);
  std::vector<T> row(H * W * W), col(H > 1 ? W * H * H : 0), aT(H > 1 ? chunk * P : 0), bT(aT.size());
  for (int64_t c0 = 0; c0 < C; c0 += kChannels) {
    const int64_t cs = std::min(kChannels, C - c0);
    const T beta = c0 == 0 ? T(0) : T(1);
    const T *ac = a + c0 * P, *bc = b + c0 * P;
    at::parallel_for(0, H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t y = begin; y < end; ++y) {
        gemm<T>(true, false, W, W, cs, bc + y * W, P, ac + y * W, P, beta, row.data() + y * W * W, W);
      }
    });
    if (H == 1) {
      continue;
    }
    transpose_chunk(ac, aT.data(), cs, H, W);
    transpose_chunk(bc, bT.data(), cs, H, W);
    at::parallel_for(0, W, 1, [&](int64_t begin, int64_t end) {
      for (int64_t x = begin; x < end; ++x) {
        gemm<T>(true, false, H, H, cs, bT.data() + x * H, P, aT.data() + x * H, P, beta, col.data() + x * H * H, H);
      }
    });
  }
  convert_rows(w, row.data(), H, W, false);
  if (H > 1) {
    convert_columns(w, col.data(), H, W, false);
  }
}

// apply(w, v, transpose) for one sample: w (L, H, W), v and out (C, H, W). Channels kChannels at a
// time: the column part first (transposed chunk, one GEMM per image column x), written into out,
//   out[c, y, x] = sum_j v[c, j, x] col[x, j, y]     (transposed: col[x, y, j])
// then the row part accumulated onto it while the chunk is still in cache (one GEMM per image row y)
//   out[c, y, x] += sum_i v[c, y, i] row[y, i, x]    (transposed: row[y, x, i]).
template <typename T>
void apply_sample(const T* w, const T* v, T* out, int64_t C, int64_t H, int64_t W, bool transpose) {
  const int64_t P = H * W, chunk = std::min(C, kChannels);
  std::vector<T> row(H * W * W), col(H > 1 ? W * H * H : 0), vT(H > 1 ? chunk * P : 0), outT(vT.size());
  convert_rows(const_cast<T*>(w), row.data(), H, W, true);
  if (H > 1) {
    convert_columns(const_cast<T*>(w), col.data(), H, W, true);
  }
  for (int64_t c0 = 0; c0 < C; c0 += kChannels) {
    const int64_t cs = std::min(kChannels, C - c0);
    const T* vc = v + c0 * P;
    T* oc = out + c0 * P;
    if (H > 1) {
      transpose_chunk(vc, vT.data(), cs, H, W);
      at::parallel_for(0, W, 1, [&](int64_t begin, int64_t end) {
        for (int64_t x = begin; x < end; ++x) {
          gemm<T>(false, transpose, cs, H, H, vT.data() + x * H, P, col.data() + x * H * H, H, T(0),
                  outT.data() + x * H, P);
        }
      });
      if (!all_finite(vT.data(), cs * P)) {
        mask_diagonal(vT.data(), col.data(), outT.data(), cs, H, W, transpose);
      }
      transpose_chunk(outT.data(), oc, cs, W, H);  // (W, H) planes back to (H, W)
    }
    const T beta = H > 1 ? T(1) : T(0);
    at::parallel_for(0, H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t y = begin; y < end; ++y) {
        gemm<T>(false, transpose, cs, W, W, vc + y * W, P, row.data() + y * W * W, W, beta, oc + y * W, P);
      }
    });
  }
}

}  // namespace

bool supports(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
}

at::Tensor weight(const at::Tensor& a, const at::Tensor& b) {
  const int64_t N = a.size(0), C = a.size(1), H = a.size(2), W = a.size(3), L = H + W - 1;
  at::Tensor w = at::empty({N, L, H, W}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "cca_weight_2d_cpu", [&] {
    for (int64_t n = 0; n < N; ++n) {
      weight_sample<scalar_t>(a[n].data_ptr<scalar_t>(), b[n].data_ptr<scalar_t>(), w[n].data_ptr<scalar_t>(), C,
                              H, W);
    }
  });
  return w;
}

at::Tensor apply(const at::Tensor& w, const at::Tensor& v, bool transpose) {
  const int64_t N = v.size(0), C = v.size(1), H = v.size(2), W = v.size(3);
  at::Tensor out = at::empty_like(v);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "cca_apply_2d_cpu", [&] {
    for (int64_t n = 0; n < N; ++n) {
      apply_sample<scalar_t>(w[n].data_ptr<scalar_t>(), v[n].data_ptr<scalar_t>(), out[n].data_ptr<scalar_t>(), C,
                             H, W, transpose);
    }
  });
  return out;
}

}  // namespace cpu2d
}  // namespace cca
