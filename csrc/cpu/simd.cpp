// Vectorised (AVX2 + FMA) CPU kernels of the 2D criss-cross ops: see simd.h for what they compute.
//
// Each op is a row part (one task per row y: a packed W x W block of weights times the row's
// channels, broadcast_gemm) and a column part (one task per block of 16 lanes x and block of
// channels or rows: the column's weights and operands packed per lane, column_tile /
// affinity_tile). Packing reads each channel's plane sequentially and zero-pads a row's last
// block, so the tiles never load masked; only stores to the ops' tensors are masked. The micro-
// kernels live in simd_tiles.h, vector types and packing in simd_vec.h; this file only runs
// when simd::usable() said the CPU has AVX2 and FMA.
#include "cpu/simd.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu/simd_tiles.h"

namespace cca {
namespace simd {
namespace {

using namespace detail;

// A per-thread scratch buffer of at least n entries (slot = which of a task's buffers): kept
// between calls, so that packing writes into warm pages instead of fresh ones every call.
template <class T>
T* scratch(int slot, int64_t n) {
  static thread_local std::vector<T> buffers[3];
  std::vector<T>& buffer = buffers[slot];
  if (static_cast<int64_t>(buffer.size()) < n) {
    buffer.resize(n);
  }
  return buffer.data();
}

// --------------------------------------------------------------------------- the three ops
struct Shape {
  int64_t N, C, H, W, HW, L;
  explicit Shape(const at::Tensor& volume)
      : N(volume.size(0)), C(volume.size(1)), H(volume.size(2)), W(volume.size(3)),
        HW(volume.size(2) * volume.size(3)), L(volume.size(2) + volume.size(3) - 1) {}
  template <class V>
  int64_t blocks() const {
    return (W + Block<V>::kLanes - 1) / Block<V>::kLanes;
  }
};

constexpr int64_t kChannelChunk = 64;  // channels of the affinity's packed column operands (their tiles stay in L1)

// fn(first, n, step) on each of the threads, which runs tasks first, first + step, ... < n: task t
// on thread t % threads, so that the tasks running at the same time are neighbours (the two halves
// of one block's rows read the same lines of b: the second thread finds them in the shared L3).
// Measured on the column part of weight: 3-8% faster than contiguous ranges of tasks per thread.
template <class Fn>
void parallel_cyclic(int64_t n, const Fn& fn) {
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t first = begin; first < end; ++first) {
      fn(first, n, threads);
    }
  });
}

template <class V>
void weight_impl(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  using T = typename V::T;
  constexpr int64_t BL = Block<V>::kLanes, L = V::kLanes;
  const Shape d(a);
  const T *pa = a.data_ptr<T>(), *pb = b.data_ptr<T>();
  T* po = out.data_ptr<T>();
  const int64_t in_n = d.C * d.HW, out_n = d.L * d.HW, Wp = round_up(d.W, BL);
  // row slots: out[x', y, x] = sum_c b[c, y, x'] a[c, y, x], one task per row y
  at::parallel_for(0, d.N * d.H, 1, [&](int64_t begin, int64_t end) {
    T *am = scratch<T>(0, d.C * Wp), *bs = scratch<T>(1, d.C * d.W);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / d.H, off = n * in_n + (t % d.H) * d.W;
      pack_block(am, pa + off, d.C, d.HW, 0, d.W, Wp);
      pack_block(bs, pb + off, d.C, d.HW, 0, d.W, d.W);
      broadcast_gemm<V>(d.W, d.W, d.C, bs, 1, d.W, am, Wp, po + n * out_n + (t % d.H) * d.W, d.HW);
    }
  });
  if (d.H < 2) {
    return;
  }
  // column slots: out[column_plane(i, j), i, x] = sum_c a[c, i, x] b[c, j, x]; one task per sample,
  // block of lanes and half of the rows i (the halves on different threads at the same time);
  // channels in chunks, sums in packed halves (H, H, kLanes)
  constexpr int64_t parts = 2;
  const int64_t per_sample = d.blocks<V>() * parts;
  parallel_cyclic(d.N * per_sample, [&](int64_t first, int64_t end, int64_t step) {
    const int64_t chunk = std::min(kChannelChunk, d.C), half_pack = d.H * chunk * L;
    T *ap = scratch<T>(0, 2 * half_pack), *bp = scratch<T>(1, 2 * half_pack), *sums = scratch<T>(2, 2 * d.H * d.H * L);
    for (int64_t t = first; t < end; t += step) {
      const int64_t n = t / per_sample, part = t % per_sample % parts;
      const Block<V> block(t % per_sample / parts * BL, d.W);
      const int64_t i0 = part * d.H / parts, i1 = (part + 1) * d.H / parts;
      for (int64_t c0 = 0; c0 < d.C; c0 += chunk) {
        const int64_t cc = std::min(chunk, d.C - c0);
        const T *a0 = pa + n * in_n + c0 * d.HW, *b0 = pb + n * in_n + c0 * d.HW;
        // (row, channel, lanes) halves, read along each channel's plane (sequential, not plane to plane)
        for (int64_t c = 0; c < cc; ++c) {
          T *ac = ap + (i0 * cc + c) * L, *bc = bp + c * L;
          pack_halves<V>(ac, ac + half_pack, cc * L, a0 + c * d.HW + i0 * d.W, i1 - i0, d.W, block);
          pack_halves<V>(bc, bc + half_pack, cc * L, b0 + c * d.HW, d.H, d.W, block);
        }
        for (int half = 0; half < 1 + (block.nx > L); ++half) {
          affinity_rows<V>(cc, d.H, i0, i1, c0 == 0, ap + half * half_pack, bp + half * half_pack,
                           sums + half * d.H * d.H * L);
        }
      }
      scatter_sums<V>(sums, d.H, d.W, i0, i1, po + n * out_n, block);
    }
  });
}

// map (kAdjoint false) or map_t (kAdjoint true) of attention w and src into out.
template <class V, bool kAdjoint>
void map_impl(const at::Tensor& w, const at::Tensor& src, at::Tensor& out) {
  using T = typename V::T;
  constexpr int64_t BL = Block<V>::kLanes, L = V::kLanes;
  const Shape d(src);
  const T *pw = w.data_ptr<T>(), *ps = src.data_ptr<T>();
  T* po = out.data_ptr<T>();
  const int64_t w_n = d.L * d.HW, s_n = d.C * d.HW, Wp = round_up(d.W, BL);
  // row part: out[c, y, x] = sum_x' src[c, y, x'] m[x', x], m[x', x] = w[x', y, x] (map) or w[x, y, x'] (map_t)
  at::parallel_for(0, d.N * d.H, 1, [&](int64_t begin, int64_t end) {
    T* m = scratch<T>(0, d.W * Wp);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / d.H, off = (t % d.H) * d.W;
      const T* wy = pw + n * w_n + off;
      if (kAdjoint) {
        for (int64_t x = 0; x < d.W; ++x) {
          for (int64_t k = 0; k < d.W; ++k) {
            m[k * Wp + x] = wy[x * d.HW + k];
          }
        }
        for (int64_t k = 0; k < d.W; ++k) {
          std::fill(m + k * Wp + d.W, m + (k + 1) * Wp, T(0));
        }
      } else {
        pack_block(m, wy, d.W, d.HW, 0, d.W, Wp);
      }
      broadcast_gemm<V>(d.C, d.W, d.W, ps + n * s_n + off, d.HW, 1, m, Wp, po + n * s_n + off, d.HW);
    }
  });
  if (d.H < 2) {
    return;
  }
  // column part: out[c, i, x] += sum over the other rows k of a[i, p(k), x] src[c, k, x], where
  // a[i, p, x] = w[column_plane(i, k), i, x] (map) or w[column_plane(k, i), k, x] (map_t); one task per
  // sample, block of lanes and block of channels (consecutive tasks share the packed a)
  const auto channels = split(d.C, {kColumnChannels, 2, 1});
  const int64_t n_ch = static_cast<int64_t>(channels.size()), per_sample = d.blocks<V>() * n_ch;
  const int64_t a_half = d.H * (d.H - 1) * L, s_half = d.H * kColumnChannels * L;
  at::parallel_for(0, d.N * per_sample, 1, [&](int64_t begin, int64_t end) {
    T *ap = scratch<T>(0, 2 * a_half), *sp = scratch<T>(1, 2 * s_half);
    int64_t packed = -1;  // the (sample, block) whose weights are in ap
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / per_sample;
      const Block<V> block(t % per_sample / n_ch * BL, d.W);
      const auto [c0, cb] = channels[t % n_ch];
      if (packed != t / n_ch) {
        packed = t / n_ch;
        const T* wn = pw + n * w_n;
        for (int64_t i = 0; kAdjoint && i < d.H; ++i) {  // a[i, p] = slot of row i in the pixel of row k
          T* to = ap + i * (d.H - 1) * L;
          for (int64_t p = 0; p < d.H - 1; ++p) {  // planes W + i - 1 (k < i) and W + i (k > i): sequential in k
            const int64_t k = p + (p >= i);
            pack_halves<V>(to + p * L, to + a_half + p * L, L, wn + column_plane(k, i, d.W) * d.HW + k * d.W, 1, 0,
                           block);
          }
        }
        if (!kAdjoint) {  // a[i, p] = slot W + p of row i: read along each slot's plane
          for (int64_t p = 0; p < d.H - 1; ++p) {
            T* to = ap + p * L;
            pack_halves<V>(to, to + a_half, (d.H - 1) * L, wn + (d.W + p) * d.HW, d.H, d.W, block);
          }
        }
      }
      const T* sc = ps + n * s_n + c0 * d.HW;
      for (int64_t c = 0; c < cb; ++c) {  // (row, channel, lanes) halves of the block's channels
        pack_halves<V>(sp + c * L, sp + s_half + c * L, cb * L, sc + c * d.HW, d.H, d.W, block);
      }
      T* oc = po + n * s_n + c0 * d.HW;
      for (int half = 0; half < 1 + (block.nx > V::kLanes); ++half) {  // a half past the row's end has no lanes
        column_half<V>(cb, d.H, d.W, ap + half * a_half, sp + half * s_half, oc, block, half);
      }
    }
  });
}

}  // namespace

bool usable(const at::Tensor& t) {
  static const bool cpu_has_avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const char* env = std::getenv("CCA_CPU_SIMD");
  if (env != nullptr && std::strcmp(env, "0") == 0) {
    return false;
  }
  return cpu_has_avx2_fma && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble);
}

namespace {

// fn(F32{}) for float32 tensors, fn(F64{}) for float64 (usable() admits no other dtype).
template <class Fn>
void dispatch(const at::Tensor& t, const Fn& fn) {
  if (t.scalar_type() == at::kFloat) {
    fn(F32{});
  } else {
    fn(F64{});
  }
}

}  // namespace

at::Tensor weight(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor ac = a.contiguous(), bc = b.contiguous();
  at::Tensor out = at::empty({a.size(0), a.size(2) + a.size(3) - 1, a.size(2), a.size(3)}, a.options());
  dispatch(a, [&](auto v) { weight_impl<decltype(v)>(ac, bc, out); });
  return out;
}

at::Tensor map(const at::Tensor& attention, const at::Tensor& value) {
  const at::Tensor wc = attention.contiguous(), vc = value.contiguous();
  at::Tensor out = at::empty(value.sizes(), value.options());
  dispatch(value, [&](auto v) { map_impl<decltype(v), false>(wc, vc, out); });
  return out;
}

at::Tensor map_t(const at::Tensor& attention, const at::Tensor& grad) {
  const at::Tensor wc = attention.contiguous(), gc = grad.contiguous();
  at::Tensor out = at::empty(grad.sizes(), grad.options());
  dispatch(grad, [&](auto v) { map_impl<decltype(v), true>(wc, gc, out); });
  return out;
}

}  // namespace simd
}  // namespace cca
