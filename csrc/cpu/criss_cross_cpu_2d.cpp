// Fast CPU path of the 2D criss-cross primitives (see criss_cross_cpu_2d.h).
//
// Row part: for a fixed image row y every operand is already a BLAS matrix in place (unit stride
// along x, leading dimension H * W), so the row interactions are H GEMMs on the input, output and
// slot planes themselves: no copy, no transposed buffer.
// Column part: along a column the stride is W, so each chunk of channels is transposed plane by plane
// into a chunk-sized (cs, W, H) buffer (no full-size copy) and one GEMM per image column x runs
// against its dense column matrix col[x, j, y] = weight of partner (j, x) for pixel (y, x), zero on
// the diagonal j == y (the row part covers the pixel itself: counted once). The slot planes are
// converted to and from the dense row/column matrices with the index math of criss_cross.h.
// Every op is one parallel region over channel chunks (each thread runs its chunks start to end,
// with its own buffers and, for the energies, its own accumulators), so batch 1 keeps both cores busy
// without a barrier per step.
// The zero diagonal must not multiply a non-finite value (0 * inf = NaN where the brute force gives
// inf): every packed block is checked for non-finite values, and where one is found the
// affected entries of the column part are recomputed without the diagonal term (the slot is masked).
#include "criss_cross_cpu_2d.h"

#include <ATen/ATen.h>
#include <ATen/Config.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
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
int MKL_Set_Num_Threads_Local(int threads);  // the C interface (lower case is Fortran)
}
#endif

namespace cca {
namespace cpu2d {
namespace {

// Both parts take the channels kChannels at a time (small tasks balance two busy cores): a chunk is
// transposed plane by plane
// (each 97x97 plane is cache-resident while it is transposed, so every cache line of the input and
// output is read and written once) into a (kChannels, W, H) buffer, ~2.4 MB at 97x97 float32.
constexpr int64_t kChannels = 32;
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

// Dense column matrices <-> the column slots of w (L, H, W) for partner row j:
// col[x, j, y] = w[cross_slot(kCol, j, y), y, x] for y != j and col[x, j, j] = 0 (to_dense); the
// reverse writes the slots and drops the diagonal. The slot rows are read/written contiguously.
template <typename T>
void convert_columns(T* w, T* col, int64_t j, int64_t H, int64_t W, bool to_dense) {
  const int64_t plane = H * W;
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
void convert_rows(T* w, T* row, int64_t y, int64_t H, int64_t W, bool to_dense) {
  const int64_t plane = H * W;
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

// Dense row and column matrices <-> the slots of w, one task per image row / partner row.
template <typename T>
void convert(T* w, T* row, T* col, int64_t H, int64_t W, bool to_dense) {
  at::parallel_for(0, H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t y = begin; y < end; ++y) {
      convert_rows(w, row, y, H, W, to_dense);
      if (H > 1) {
        convert_columns(w, col, y, H, W, to_dense);
      }
    }
  });
}

// BLAS calls of this thread run single-threaded while alive (the caller already runs one task per
// core; MKL would otherwise start its own threads inside every call).
struct SequentialBlas {
#if AT_MKL_ENABLED()
  const int previous = MKL_Set_Num_Threads_Local(1);
  ~SequentialBlas() { MKL_Set_Num_Threads_Local(previous); }
#endif
};

// Channel chunks [0, C) in kChannels pieces, handed out dynamically (an atomic counter) to at most
// `threads` workers in one parallel region, each running fn(c0, cs, worker) with its own buffers: no
// barrier per step, and a worker whose core is shared with another job simply takes fewer chunks.
template <typename F>
void for_channel_chunks(int64_t C, int64_t threads, const F& fn) {
  const int64_t chunks = (C + kChannels - 1) / kChannels;
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    const SequentialBlas sequential;
    for (int64_t worker = begin; worker < end; ++worker) {
      for (int64_t k = next++; k < chunks; k = next++) {
        fn(k * kChannels, std::min(kChannels, C - k * kChannels), worker);
      }
    }
  });
}

// Workers for C channels: the threads, at most one per chunk.
inline int64_t workers(int64_t C) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (C + kChannels - 1) / kChannels));
}

// weight(a, b) for one sample: a, b (C, H, W), w (L, H, W). Each thread sums its channel chunks
//   row[y, i, x] += sum_c b[c, y, i] a[c, y, x]        (one GEMM per image row y)
//   col[x, j, y] += sum_c b[c, j, x] a[c, y, x]        (one GEMM per image column x, transposed chunk)
// into its own accumulators; they are added and converted to slots at the end.
template <typename T>
void weight_sample(const T* a, const T* b, T* w, int64_t C, int64_t H, int64_t W) {
  const int64_t P = H * W, chunk = std::min(C, kChannels);
  const int64_t threads = workers(C);
  const int64_t row_size = H * W * W, col_size = H > 1 ? W * H * H : 0;
  std::vector<T> acc(threads * (row_size + col_size), T(0));
  std::vector<T> buffers(threads * (H > 1 ? 2 * chunk * P : 0));
  for_channel_chunks(C, threads, [&](int64_t c0, int64_t cs, int64_t t) {
    T* row = acc.data() + t * (row_size + col_size);
    T* col = row + row_size;
    const T *ac = a + c0 * P, *bc = b + c0 * P;
    for (int64_t y = 0; y < H; ++y) {
      gemm<T>(true, false, W, W, cs, bc + y * W, P, ac + y * W, P, T(1), row + y * W * W, W);
    }
    if (H == 1) {
      return;
    }
    T* aT = buffers.data() + t * 2 * chunk * P;
    T* bT = aT + chunk * P;
    transpose_planes(ac, aT, 0, cs, H, W);
    transpose_planes(bc, bT, 0, cs, H, W);
    for (int64_t x = 0; x < W; ++x) {
      gemm<T>(true, false, H, H, cs, bT + x * H, P, aT + x * H, P, T(1), col + x * H * H, H);
    }
  });
  for (int64_t t = 1; t < threads; ++t) {  // sum the threads' accumulators into the first
    const T* other = acc.data() + t * (row_size + col_size);
    at::parallel_for(0, row_size + col_size, 65536, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) acc[i] += other[i];
    });
  }
  convert(w, acc.data(), acc.data() + row_size, H, W, false);
}

// apply(w, v, transpose) for one sample: w (L, H, W), v and out (C, H, W). Each thread takes its
// channel chunks: the column part first (transposed chunk, one GEMM per image column x), written
// into out,
//   out[c, y, x] = sum_j v[c, j, x] col[x, j, y]     (transposed: col[x, y, j])
// then the row part accumulated onto it while the chunk is still in cache (one GEMM per image row y)
//   out[c, y, x] += sum_i v[c, y, i] row[y, i, x]    (transposed: row[y, x, i]).
template <typename T>
void apply_sample(const T* w, const T* v, T* out, int64_t C, int64_t H, int64_t W, bool transpose) {
  const int64_t P = H * W, chunk = std::min(C, kChannels);
  const int64_t threads = workers(C);
  std::vector<T> row(H * W * W), col(H > 1 ? W * H * H : 0), buffers(threads * (H > 1 ? 2 * chunk * P : 0));
  convert(const_cast<T*>(w), row.data(), col.data(), H, W, true);
  for_channel_chunks(C, threads, [&](int64_t c0, int64_t cs, int64_t t) {
    const T* vc = v + c0 * P;
    T* oc = out + c0 * P;
    if (H > 1) {
      T* vT = buffers.data() + t * 2 * chunk * P;
      T* outT = vT + chunk * P;
      transpose_planes(vc, vT, 0, cs, H, W);
      for (int64_t x = 0; x < W; ++x) {
        gemm<T>(false, transpose, cs, H, H, vT + x * H, P, col.data() + x * H * H, H, T(0), outT + x * H, P);
      }
      if (!all_finite(vT, cs * P)) {
        mask_diagonal(vT, col.data(), outT, cs, H, W, transpose);
      }
      transpose_planes(outT, oc, 0, cs, W, H);  // (W, H) planes back to (H, W)
    }
    const T beta = H > 1 ? T(1) : T(0);
    for (int64_t y = 0; y < H; ++y) {
      gemm<T>(false, transpose, cs, W, W, vc + y * W, P, row.data() + y * W * W, W, beta, oc + y * W, P);
    }
  });
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
