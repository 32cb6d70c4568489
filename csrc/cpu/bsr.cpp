// Block-sparse (BSR) spmm on the CPU, any block shape bm x bk.
//
// Each stored block is a small dense GEMM, so the time falls with the number of stored
// blocks. N == 1: blocks at least 8 wide are dotted with the activation row by row (4 rows
// share each activation load); 1-wide blocks (4x1, 8x1) are axpys along the block column;
// other shapes use the portable loop. N >= 2: a register-blocked micro-kernel holds R rows
// x NV ymm of the output (6 x 16 for large blocks) and walks every block of the block row,
// broadcasting one weight and loading each panel row of B once for R rows.
// Blocks reaching past M or K (format padding) contribute only inside [M, K].
#include <cstdint>

#include "common.h"
#include "isa.h"
#include "kernels.h"
#include "parallel.h"
#include "simd_avx2.h"
#include "simd_avx512.h"

namespace sparsekern {
namespace cpu {
namespace {

constexpr int64_t kPanelWidth = 32;
constexpr int kMaxParts = 256;
// Up to this many columns of B, AVX-512 runs gemvn_rows_avx512 for blocks 16k wide (2
// threads, 32x32 blocks, 4096²: N=2/4/8 at 90% 3.4/6.6/9.9x -> 6.5/10.8/12.1x dense, at 50%
// 0.86/1.6/2.4x -> 1.6/2.6/3.2x). Past ~12 columns the panels use enough of each zmm.
constexpr int64_t kSmallN = 8;
constexpr int64_t kPrefetchBytes = 4096;  // GEMV: how far ahead of the values stream to fetch

template <typename T>
struct BsrArgs {
  const T* values;
  int64_t nnzb, bm, bk, Mb, Kb;
  const int32_t* cols;
  const int32_t* rowptr;
  const Dense* d;
  // Block `b` starts at column base = cols[b] * bk and holds keff = min(bk, K - base)
  // columns inside K. False when the block column is out of range.
  bool block_cols(int64_t b, int64_t* base, int64_t* keff) const {
    const int64_t c = cols[b];
    if (c < 0 || c >= Kb) return false;
    *base = c * bk;
    *keff = min_i64(bk, d->K - *base);
    return true;
  }
  int64_t rows_in(int64_t br) const { return min_i64(bm, d->M - br * bm); }
};

// ----------------------------------------------------------------------------- portable

template <typename T>
int gemv_rows_portable(const BsrArgs<T>& a, const float* x, int64_t br0, int64_t br1) {
  const Dense& d = *a.d;
  for (int64_t br = br0; br < br1; ++br) {
    const int64_t reff = a.rows_in(br);
    for (int64_t r = 0; r < reff; ++r) {
      float s = 0.0f;
      for (int64_t b = a.rowptr[br]; b < a.rowptr[br + 1]; ++b) {
        int64_t base, keff;
        if (!a.block_cols(b, &base, &keff)) return kBadIndex;
        const T* w = a.values + (b * a.bm + r) * a.bk;
        for (int64_t kk = 0; kk < keff; ++kk) s += to_float(w[kk]) * x[base + kk];
      }
      store_out(d, br * a.bm + r, 0, s);
    }
  }
  return kOk;
}

template <typename T>
int panel_rows_portable(const BsrArgs<T>& a, const float* P, int64_t ldp, int64_t n0, int64_t nb,
                        int64_t br0, int64_t br1) {
  const Dense& d = *a.d;
  float acc[kPanelWidth];
  for (int64_t br = br0; br < br1; ++br) {
    const int64_t reff = a.rows_in(br);
    for (int64_t r = 0; r < reff; ++r) {
      for (int64_t j = 0; j < ldp; ++j) acc[j] = 0.0f;
      for (int64_t b = a.rowptr[br]; b < a.rowptr[br + 1]; ++b) {
        int64_t base, keff;
        if (!a.block_cols(b, &base, &keff)) return kBadIndex;
        const T* w = a.values + (b * a.bm + r) * a.bk;
        for (int64_t kk = 0; kk < keff; ++kk) {
          const float wv = to_float(w[kk]);
          const float* p = P + (base + kk) * ldp;
          for (int64_t j = 0; j < ldp; ++j) acc[j] += wv * p[j];
        }
      }
      store_tile(d, br * a.bm + r, 1, n0, nb, acc, ldp);
    }
  }
  return kOk;
}

// ----------------------------------------------------------------------------- AVX2
#if SK_HAVE_AVX2_KERNELS

// Rows r0..r0+R-1 of block row br dotted with x, for blocks at least 8 wide.
template <typename T, int R>
SK_AVX2 int gemv_dot_tile_avx2(const BsrArgs<T>& a, const float* x, int64_t br, int64_t r0) {
  __m256 acc[R];
  float tail[R];
  SK_UNROLL for (int r = 0; r < R; ++r) {
    acc[r] = _mm256_setzero_ps();
    tail[r] = 0.0f;
  }
  for (int64_t b = a.rowptr[br]; b < a.rowptr[br + 1]; ++b) {
    int64_t base, keff;
    if (!a.block_cols(b, &base, &keff)) return kBadIndex;
    const T* w = a.values + (b * a.bm + r0) * a.bk;
    const float* xb = x + base;
    int64_t kk = 0;
    for (; kk + 8 <= keff; kk += 8) {
      const __m256 xv = _mm256_loadu_ps(xb + kk);
      SK_UNROLL for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(load8(w + r * a.bk + kk), xv, acc[r]);
    }
    for (; kk < keff; ++kk)
      SK_UNROLL for (int r = 0; r < R; ++r) tail[r] += to_float(w[r * a.bk + kk]) * xb[kk];
  }
  SK_UNROLL for (int r = 0; r < R; ++r) store_out(*a.d, br * a.bm + r0 + r, 0, hsum(acc[r]) + tail[r]);
  return kOk;
}

// Block row br for blocks at least 8 wide and 2 high, block by block in memory order (so the
// values stream once, sequentially, with prefetch ahead): 4 rows of a block are dotted with
// the block's activations, reduced to 4 sums with hadd, and added to the row sums in yacc.
template <typename T>
SK_AVX2 int gemv_blockwise_avx2(const BsrArgs<T>& a, const float* x, int64_t br, float* yacc) {
  const int64_t bm = a.bm, bk = a.bk, reff = a.rows_in(br);
  const int64_t row_bytes = bk * static_cast<int64_t>(sizeof(T));
  for (int64_t r = 0; r < reff; ++r) yacc[r] = 0.0f;
  for (int64_t b = a.rowptr[br]; b < a.rowptr[br + 1]; ++b) {
    int64_t base, keff;
    if (!a.block_cols(b, &base, &keff)) return kBadIndex;
    const T* w = a.values + b * bm * bk;
    const float* xb = x + base;
    const int64_t k8 = keff & ~int64_t{7};
    int64_t r = 0;
    for (; r + 4 <= reff; r += 4) {
      const char* ahead = reinterpret_cast<const char*>(w + r * bk) + kPrefetchBytes;
      for (int64_t off = 0; off < 4 * row_bytes; off += 64) _mm_prefetch(ahead + off, _MM_HINT_T0);
      __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
      const T* w0 = w + r * bk;
      for (int64_t kk = 0; kk < k8; kk += 8) {
        const __m256 xv = _mm256_loadu_ps(xb + kk);
        acc0 = _mm256_fmadd_ps(load8(w0 + kk), xv, acc0);
        acc1 = _mm256_fmadd_ps(load8(w0 + bk + kk), xv, acc1);
        acc2 = _mm256_fmadd_ps(load8(w0 + 2 * bk + kk), xv, acc2);
        acc3 = _mm256_fmadd_ps(load8(w0 + 3 * bk + kk), xv, acc3);
      }
      const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(acc0, acc1), _mm256_hadd_ps(acc2, acc3));
      __m128 sums = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
      if (k8 < keff) {  // the last block column when K is not a multiple of bk
        alignas(16) float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int i = 0; i < 4; ++i)
          for (int64_t kk = k8; kk < keff; ++kk) t[i] += to_float(w0[i * bk + kk]) * xb[kk];
        sums = _mm_add_ps(sums, _mm_load_ps(t));
      }
      _mm_storeu_ps(yacc + r, _mm_add_ps(_mm_loadu_ps(yacc + r), sums));
    }
    for (; r < reff; ++r) {
      const T* wr = w + r * bk;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t kk = 0; kk < k8; kk += 8)
        acc = _mm256_fmadd_ps(load8(wr + kk), _mm256_loadu_ps(xb + kk), acc);
      float t = hsum(acc);
      for (int64_t kk = k8; kk < keff; ++kk) t += to_float(wr[kk]) * xb[kk];
      yacc[r] += t;
    }
  }
  for (int64_t r = 0; r < reff; ++r) store_out(*a.d, br * bm + r, 0, yacc[r]);
  return kOk;
}

// 8 rows r0.. of block row br for 1-wide blocks: an axpy of each block column.
template <typename T>
SK_AVX2 int gemv_axpy8_avx2(const BsrArgs<T>& a, const float* x, int64_t br, int64_t r0) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const int64_t b0 = a.rowptr[br], b1 = a.rowptr[br + 1];
  int64_t b = b0;
  for (; b + 2 <= b1; b += 2) {
    int64_t base0, base1, keff;
    if (!a.block_cols(b, &base0, &keff) || !a.block_cols(b + 1, &base1, &keff)) return kBadIndex;
    acc0 = _mm256_fmadd_ps(load8(a.values + b * a.bm + r0), _mm256_broadcast_ss(x + base0), acc0);
    acc1 = _mm256_fmadd_ps(load8(a.values + (b + 1) * a.bm + r0), _mm256_broadcast_ss(x + base1),
                           acc1);
  }
  for (; b < b1; ++b) {
    int64_t base, keff;
    if (!a.block_cols(b, &base, &keff)) return kBadIndex;
    acc0 = _mm256_fmadd_ps(load8(a.values + b * a.bm + r0), _mm256_broadcast_ss(x + base), acc0);
  }
  const Dense& d = *a.d;
  const int64_t m = br * a.bm + r0;
  __m256 y = _mm256_add_ps(acc0, acc1);
  if (d.bias != nullptr) {
    alignas(32) float bias8[8];
    for (int i = 0; i < 8; ++i) bias8[i] = d.bias[(m + i) * d.bias_stride];
    y = _mm256_add_ps(y, _mm256_load_ps(bias8));
  }
  store_lanes(d.Y + m * d.ldy_m, d.ldy_m, y, 8);
  return kOk;
}

// The rows r0..r0+rows-1 of block row br one at a time (any block shape).
template <typename T>
int gemv_rows_scalar(const BsrArgs<T>& a, const float* x, int64_t br, int64_t r0, int64_t rows) {
  for (int64_t r = r0; r < r0 + rows; ++r) {
    float s = 0.0f;
    for (int64_t b = a.rowptr[br]; b < a.rowptr[br + 1]; ++b) {
      int64_t base, keff;
      if (!a.block_cols(b, &base, &keff)) return kBadIndex;
      const T* w = a.values + (b * a.bm + r) * a.bk;
      for (int64_t kk = 0; kk < keff; ++kk) s += to_float(w[kk]) * x[base + kk];
    }
    store_out(*a.d, br * a.bm + r, 0, s);
  }
  return kOk;
}

template <typename T>
SK_AVX2 int gemv_rows_avx2(const BsrArgs<T>& a, const float* x, int64_t br0, int64_t br1) {
  if (a.bk >= 8 && a.bm >= 2) {
    float* yacc = scratch_tile().get_as<float>(a.bm);
    if (yacc == nullptr) return kNoMemory;
    for (int64_t br = br0; br < br1; ++br) {
      const int s = gemv_blockwise_avx2<T>(a, x, br, yacc);
      if (s != kOk) return s;
    }
    return kOk;
  }
  for (int64_t br = br0; br < br1; ++br) {
    const int64_t reff = a.rows_in(br);
    int64_t r = 0;
    int s = kOk;
    if (a.bk >= 8) {
      for (; r + 4 <= reff && s == kOk; r += 4) s = gemv_dot_tile_avx2<T, 4>(a, x, br, r);
      for (; r < reff && s == kOk; ++r) s = gemv_dot_tile_avx2<T, 1>(a, x, br, r);
    } else if (a.bk == 1) {
      for (; r + 8 <= reff && s == kOk; r += 8) s = gemv_axpy8_avx2<T>(a, x, br, r);
    }
    if (s == kOk && r < reff) s = gemv_rows_scalar<T>(a, x, br, r, reff - r);
    if (s != kOk) return s;
  }
  return kOk;
}

// Output rows r0..r0+R-1 of block row br, panel columns [8*u0, 8*(u0+NV)), over the blocks
// [b0, b1) of that block row (one K chunk). The partial sums live in T (row stride ldt)
// between chunks: `first` starts them at 0, `last` writes Y (+ bias) instead of T.
template <typename T, int R, int NV>
SK_AVX2 int panel_tile_avx2(const BsrArgs<T>& a, const float* P, int64_t ldp, int64_t n0,
                            int64_t nb, int64_t br, int64_t r0, int64_t u0, int64_t b0,
                            int64_t b1, float* Tacc, int64_t ldt, bool first, bool last) {
  __m256 acc[R][NV];
  float* t = Tacc + r0 * ldt + 8 * u0;
  SK_UNROLL for (int r = 0; r < R; ++r)
    SK_UNROLL for (int u = 0; u < NV; ++u)
      acc[r][u] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(t + r * ldt + 8 * u);
  const int64_t bk = a.bk, bm = a.bm, Kb = a.Kb, K = a.d->K;
  const T* values = a.values;
  const int32_t* cols = a.cols;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t c = cols[b];
    if (c < 0 || c >= Kb) return kBadIndex;
    const int64_t base = c * bk;
    const int64_t keff = min_i64(bk, K - base);
    const T* w = values + (b * bm + r0) * bk;
    const float* p = P + base * ldp + 8 * u0;
    for (int64_t kk = 0; kk < keff; ++kk, p += ldp) {
      __m256 bv[NV];
      SK_UNROLL for (int u = 0; u < NV; ++u) bv[u] = _mm256_loadu_ps(p + 8 * u);
      SK_UNROLL for (int r = 0; r < R; ++r) {
        const __m256 wv = bcast(w + r * bk + kk);
        SK_UNROLL for (int u = 0; u < NV; ++u) acc[r][u] = _mm256_fmadd_ps(wv, bv[u], acc[r][u]);
      }
    }
  }
  if (!last) {
    SK_UNROLL for (int r = 0; r < R; ++r)
      SK_UNROLL for (int u = 0; u < NV; ++u) _mm256_storeu_ps(t + r * ldt + 8 * u, acc[r][u]);
    return kOk;
  }
  const Dense& d = *a.d;
  if (d.ldy_m == 1 && d.ldy_n != 1 && 8 * u0 < nb) {  // column-major Y: columns of R rows
    alignas(32) float tile[R * 8 * NV];
    SK_UNROLL for (int r = 0; r < R; ++r) {
      const int64_t m = br * a.bm + r0 + r;
      const __m256 bias = d.bias != nullptr ? _mm256_set1_ps(d.bias[m * d.bias_stride])
                                            : _mm256_setzero_ps();
      SK_UNROLL for (int u = 0; u < NV; ++u)
        _mm256_store_ps(tile + r * 8 * NV + 8 * u, _mm256_add_ps(acc[r][u], bias));
    }
    store_tile_cols(tile, 8 * NV, R, min_i64(8 * NV, nb - 8 * u0),
                    d.Y + br * a.bm + r0 + (n0 + 8 * u0) * d.ldy_n, d.ldy_n);
    return kOk;
  }
  SK_UNROLL for (int r = 0; r < R; ++r) {
    const int64_t m = br * a.bm + r0 + r;
    const __m256 bias = d.bias != nullptr ? _mm256_set1_ps(d.bias[m * d.bias_stride])
                                          : _mm256_setzero_ps();
    SK_UNROLL for (int u = 0; u < NV; ++u) {
      const int64_t n = 8 * (u0 + u);
      if (n < nb)
        store_lanes(d.Y + m * d.ldy_m + (n0 + n) * d.ldy_n, d.ldy_n,
                    _mm256_add_ps(acc[r][u], bias), min_i64(8, nb - n));
    }
  }
  return kOk;
}

template <typename T>
using PanelTileFn = int (*)(const BsrArgs<T>&, const float*, int64_t, int64_t, int64_t, int64_t,
                            int64_t, int64_t, int64_t, int64_t, float*, int64_t, bool, bool);

// Largest NV (ymm per row) for R rows that keeps R*NV accumulators + NV loads in 16 ymm.
constexpr int max_nv(int R) { return R >= 5 ? 2 : R == 4 ? 3 : 4; }

template <typename T, int R>
PanelTileFn<T> tile_fn(int nv) {
  switch (nv) {
    case 1: return &panel_tile_avx2<T, R, 1>;
    case 2: return &panel_tile_avx2<T, R, 2>;
    case 3: return R <= 4 ? &panel_tile_avx2<T, (R <= 4 ? R : 4), 3> : nullptr;
    default: return R <= 3 ? &panel_tile_avx2<T, (R <= 3 ? R : 3), 4> : nullptr;
  }
}

template <typename T>
PanelTileFn<T> tile_fn(int R, int nv) {
  switch (R) {
    case 1: return tile_fn<T, 1>(nv);
    case 2: return tile_fn<T, 2>(nv);
    case 3: return tile_fn<T, 3>(nv);
    case 4: return tile_fn<T, 4>(nv);
    case 5: return tile_fn<T, 5>(nv);
    default: return tile_fn<T, 6>(nv);
  }
}

// Each block row in K chunks of about chunk_rows(ldp) panel rows, so the chunk of B stays
// in L1 while every row tile of the block row passes over it.
template <typename T>
int panel_rows_avx2(const BsrArgs<T>& a, const float* P, int64_t ldp, int64_t n0, int64_t nb,
                    int64_t br0, int64_t br1) {
  const int nv_total = static_cast<int>(ldp / 8);
  const int64_t per_chunk = max_i64(1, chunk_rows(ldp) / a.bk);  // blocks per chunk
  float* Tacc = scratch_tile().get_as<float>(a.bm, ldp);
  if (Tacc == nullptr) return kNoMemory;
  for (int64_t br = br0; br < br1; ++br) {
    const int64_t reff = a.rows_in(br);
    const int64_t b0 = a.rowptr[br], b1 = a.rowptr[br + 1];
    int64_t cb = b0;
    do {
      const int64_t ce = min_i64(cb + per_chunk, b1);
      const bool first = cb == b0, last = ce == b1;
      for (int64_t r0 = 0; r0 < reff;) {
        const int R = static_cast<int>(min_i64(6, reff - r0));
        const int step = max_nv(R);
        for (int u0 = 0; u0 < nv_total; u0 += step) {
          const int nv = nv_total - u0 < step ? nv_total - u0 : step;
          const int s = tile_fn<T>(R, nv)(a, P, ldp, n0, nb, br, r0, u0, cb, ce, Tacc, ldp,
                                          first, last);
          if (s != kOk) return s;
        }
        r0 += R;
      }
      cb = ce;
    } while (cb < b1);
  }
  return kOk;
}

#endif  // SK_HAVE_AVX2_KERNELS

// ----------------------------------------------------------------------------- AVX-512
#if SK_HAVE_AVX512_KERNELS

// panel_tile_avx2 with zmm: rows r0..r0+R-1, all NV zmm of a panel of row stride 16 * NV.
template <typename T, int R, int NV>
SK_AVX512 int panel_tile_avx512(const BsrArgs<T>& a, const float* P, int64_t n0, int64_t nb,
                                int64_t br, int64_t r0, int64_t b0, int64_t b1, float* Tacc,
                                bool first, bool last) {
  constexpr int64_t LDP = 16 * NV;
  __m512 acc[R][NV];
  float* t = Tacc + r0 * LDP;
  SK_UNROLL for (int r = 0; r < R; ++r)
    SK_UNROLL for (int u = 0; u < NV; ++u)
      acc[r][u] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(t + r * LDP + 16 * u);
  const int64_t bk = a.bk, bm = a.bm, Kb = a.Kb, K = a.d->K;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t c = a.cols[b];
    if (c < 0 || c >= Kb) return kBadIndex;
    const int64_t base = c * bk;
    const int64_t keff = min_i64(bk, K - base);
    const T* w = a.values + (b * bm + r0) * bk;
    const float* p = P + base * LDP;
    for (int64_t kk = 0; kk < keff; ++kk, p += LDP) {
      __m512 bv[NV];
      SK_UNROLL for (int u = 0; u < NV; ++u) bv[u] = _mm512_loadu_ps(p + 16 * u);
      SK_UNROLL for (int r = 0; r < R; ++r) {
        const __m512 wv = bcast16(w + r * bk + kk);
        SK_UNROLL for (int u = 0; u < NV; ++u) acc[r][u] = _mm512_fmadd_ps(wv, bv[u], acc[r][u]);
      }
    }
  }
  if (!last) {
    SK_UNROLL for (int r = 0; r < R; ++r)
      SK_UNROLL for (int u = 0; u < NV; ++u) _mm512_storeu_ps(t + r * LDP + 16 * u, acc[r][u]);
    return kOk;
  }
  const Dense& d = *a.d;
  if (d.ldy_m == 1 && d.ldy_n != 1) {  // column-major Y: whole columns of R rows
    alignas(64) float tile[R * LDP];
    SK_UNROLL for (int r = 0; r < R; ++r) {
      const int64_t m = br * a.bm + r0 + r;
      const __m512 bias = d.bias != nullptr ? _mm512_set1_ps(d.bias[m * d.bias_stride])
                                            : _mm512_setzero_ps();
      SK_UNROLL for (int u = 0; u < NV; ++u)
        _mm512_store_ps(tile + r * LDP + 16 * u, _mm512_add_ps(acc[r][u], bias));
    }
    store_tile_cols(tile, LDP, R, min_i64(LDP, nb), d.Y + br * a.bm + r0 + n0 * d.ldy_n,
                    d.ldy_n);
    return kOk;
  }
  SK_UNROLL for (int r = 0; r < R; ++r) {
    const int64_t m = br * a.bm + r0 + r;
    const __m512 bias = d.bias != nullptr ? _mm512_set1_ps(d.bias[m * d.bias_stride])
                                          : _mm512_setzero_ps();
    SK_UNROLL for (int u = 0; u < NV; ++u) {
      const int64_t n = 16 * u;
      if (n < nb)
        store_lanes16(d.Y + m * d.ldy_m + (n0 + n) * d.ldy_n, d.ldy_n,
                      _mm512_add_ps(acc[r][u], bias), min_i64(16, nb - n));
    }
  }
  return kOk;
}

template <typename T>
using PanelTile512Fn = int (*)(const BsrArgs<T>&, const float*, int64_t, int64_t, int64_t,
                               int64_t, int64_t, int64_t, float*, bool, bool);

// R rows (1..8) x NV zmm: at most 16 accumulators (of 32 zmm).
template <typename T, int NV>
PanelTile512Fn<T> tile512_fn(int R) {
  switch (R) {
    case 1: return &panel_tile_avx512<T, 1, NV>;
    case 2: return &panel_tile_avx512<T, 2, NV>;
    case 3: return &panel_tile_avx512<T, 3, NV>;
    case 4: return &panel_tile_avx512<T, 4, NV>;
    case 5: return &panel_tile_avx512<T, 5, NV>;
    case 6: return &panel_tile_avx512<T, 6, NV>;
    case 7: return &panel_tile_avx512<T, 7, NV>;
    default: return &panel_tile_avx512<T, 8, NV>;
  }
}

// panel_rows_avx2 with zmm (row tiles of up to 8 rows x the whole panel width).
template <typename T>
int panel_rows_avx512(const BsrArgs<T>& a, const float* P, int64_t ldp, int64_t n0, int64_t nb,
                      int64_t br0, int64_t br1) {
  if (ldp != 16 && ldp != 32) return kBadArgument;
  const int64_t per_chunk = max_i64(1, chunk_rows(ldp) / a.bk);  // blocks per chunk
  float* Tacc = scratch_tile().get_as<float>(a.bm, ldp);
  if (Tacc == nullptr) return kNoMemory;
  for (int64_t br = br0; br < br1; ++br) {
    const int64_t reff = a.rows_in(br);
    const int64_t b0 = a.rowptr[br], b1 = a.rowptr[br + 1];
    int64_t cb = b0;
    do {
      const int64_t ce = min_i64(cb + per_chunk, b1);
      const bool first = cb == b0, last = ce == b1;
      for (int64_t r0 = 0; r0 < reff;) {
        const int R = static_cast<int>(min_i64(8, reff - r0));
        const PanelTile512Fn<T> fn = ldp == 16 ? tile512_fn<T, 1>(R) : tile512_fn<T, 2>(R);
        const int s = fn(a, P, n0, nb, br, r0, cb, ce, Tacc, first, last);
        if (s != kOk) return s;
        r0 += R;
      }
      cb = ce;
    } while (cb < b1);
  }
  return kOk;
}


// Small N (2..kSmallN columns of B, each contiguous in k: column c at X + c * ldx) for blocks
// whose width is a multiple of 16: R rows of a block row x NC columns of dot products along
// k, each a zmm summed over the blocks and reduced once at the end. Every lane counts (the
// panels broadcast each weight into a zmm only N of whose 16 lanes count). The blocks
// [b0, b1) of a chunk: the chunk's activations (bk * NC floats per block) stay in L1 while
// every row tile of the block row uses them; between chunks a tile's sums wait in `save`
// (R * NC * 16 floats, then R * NC scalar tails). The last block column's part past K
// (keff < bk) runs scalar.
template <typename T, int R, int NC>
SK_AVX512 int gemvn_tile_avx512(const BsrArgs<T>& a, const float* X, int64_t ldx, int64_t br,
                                int64_t r0, int64_t b0, int64_t b1, bool first, bool last,
                                float* save) {
  __m512 acc[R][NC];
  float tail[R][NC];
  float* save_tail = save + R * NC * 16;
  SK_UNROLL for (int r = 0; r < R; ++r)
    SK_UNROLL for (int c = 0; c < NC; ++c) {
      acc[r][c] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(save + (r * NC + c) * 16);
      tail[r][c] = first ? 0.0f : save_tail[r * NC + c];
    }
  for (int64_t b = b0; b < b1; ++b) {
    int64_t base, keff;
    if (!a.block_cols(b, &base, &keff)) return kBadIndex;
    const T* w = a.values + (b * a.bm + r0) * a.bk;
    const int64_t k16 = keff & ~int64_t{15};
    for (int64_t kk = 0; kk < k16; kk += 16) {
      __m512 wv[R];
      SK_UNROLL for (int r = 0; r < R; ++r) wv[r] = load16(w + r * a.bk + kk);
      SK_UNROLL for (int c = 0; c < NC; ++c) {
        const __m512 xv = _mm512_loadu_ps(X + c * ldx + base + kk);
        SK_UNROLL for (int r = 0; r < R; ++r) acc[r][c] = _mm512_fmadd_ps(wv[r], xv, acc[r][c]);
      }
    }
    for (int64_t kk = k16; kk < keff; ++kk)
      SK_UNROLL for (int r = 0; r < R; ++r) {
        const float wv = to_float(w[r * a.bk + kk]);
        SK_UNROLL for (int c = 0; c < NC; ++c) tail[r][c] += wv * X[c * ldx + base + kk];
      }
  }
  SK_UNROLL for (int r = 0; r < R; ++r)
    SK_UNROLL for (int c = 0; c < NC; ++c) {
      if (last) {
        store_out(*a.d, br * a.bm + r0 + r, c, _mm512_reduce_add_ps(acc[r][c]) + tail[r][c]);
      } else {
        _mm512_storeu_ps(save + (r * NC + c) * 16, acc[r][c]);
        save_tail[r * NC + c] = tail[r][c];
      }
    }
  return kOk;
}

template <typename T, int NC>
SK_AVX512 int gemvn_rows_avx512_nc(const BsrArgs<T>& a, const float* X, int64_t ldx,
                                   int64_t br0, int64_t br1) {
  constexpr int R = NC <= 2 ? 8 : 16 / NC;  // R * NC <= 16 accumulators
  constexpr int64_t kChunkBytes = 24 * 1024;  // activations per chunk (L1: 48 KB here)
  const int64_t chunk = max_i64(1, kChunkBytes / (a.bk * NC * static_cast<int64_t>(sizeof(float))));
  // Per row: NC zmm and NC tails (a tile of R rows uses R times that, from its first row on).
  const int64_t per_row = NC * 17;
  float* save = scratch_tile().get_as<float>(max_i64(a.bm, R), per_row);
  if (save == nullptr) return kNoMemory;
  for (int64_t br = br0; br < br1; ++br) {
    const int64_t reff = a.rows_in(br), e = a.rowptr[br + 1];
    int64_t b0 = a.rowptr[br];
    do {
      const int64_t b1 = min_i64(b0 + chunk, e);
      const bool first = b0 == a.rowptr[br], last = b1 == e;
      int64_t r = 0;
      int s = kOk;
      for (; r + R <= reff && s == kOk; r += R)
        s = gemvn_tile_avx512<T, R, NC>(a, X, ldx, br, r, b0, b1, first, last, save + r * per_row);
      for (; r < reff && s == kOk; ++r)
        s = gemvn_tile_avx512<T, 1, NC>(a, X, ldx, br, r, b0, b1, first, last, save + r * per_row);
      if (s != kOk) return s;
      b0 = b1;
    } while (b0 < e);
  }
  return kOk;
}

template <typename T>
int gemvn_rows_avx512(const BsrArgs<T>& a, const float* X, int64_t ldx, int64_t br0,
                      int64_t br1) {
  switch (a.d->N) {
    case 2: return gemvn_rows_avx512_nc<T, 2>(a, X, ldx, br0, br1);
    case 3: return gemvn_rows_avx512_nc<T, 3>(a, X, ldx, br0, br1);
    case 4: return gemvn_rows_avx512_nc<T, 4>(a, X, ldx, br0, br1);
    case 5: return gemvn_rows_avx512_nc<T, 5>(a, X, ldx, br0, br1);
    case 6: return gemvn_rows_avx512_nc<T, 6>(a, X, ldx, br0, br1);
    case 7: return gemvn_rows_avx512_nc<T, 7>(a, X, ldx, br0, br1);
    case 8: return gemvn_rows_avx512_nc<T, 8>(a, X, ldx, br0, br1);
    default: return kBadArgument;
  }
}

#endif  // SK_HAVE_AVX512_KERNELS

// ----------------------------------------------------------------------------- dispatch

template <typename T>
class BsrPanels : public PanelWork {
 public:
  BsrPanels(const BsrArgs<T>& a, const int64_t* bounds, Isa isa, PanelTail tail = PanelTail())
      : a_(a), bounds_(bounds), isa_(isa), tail_(tail) {
    tail_args_ = a;
    tail_args_.d = tail.d;
  }
  int run(int part, const float* P, int64_t ldp, int64_t n0, int64_t nb) override {
#if SK_HAVE_AVX512_KERNELS
    if (isa_ == Isa::kAvx512) {
      const int64_t br0 = bounds_[part], br1 = bounds_[part + 1];
      const int s = panel_rows_avx512<T>(a_, P, ldp, n0, nb, br0, br1);
      if (s != kOk || tail_.d == nullptr || n0 + nb != a_.d->N) return s;
      // Once per part of block rows: with the head's last panel (see PanelTail).
      return tail_.d->N == 1 ? gemv_rows_avx2<T>(tail_args_, tail_.X, br0, br1)
                             : gemvn_rows_avx512<T>(tail_args_, tail_.X, tail_.ldx, br0, br1);
    }
#endif
#if SK_HAVE_AVX2_KERNELS
    if (isa_ == Isa::kAvx2) {
      const int64_t br0 = bounds_[part], br1 = bounds_[part + 1];
      const int s = panel_rows_avx2<T>(a_, P, ldp, n0, nb, br0, br1);
      if (s != kOk || tail_.d == nullptr || n0 + nb != a_.d->N) return s;
      return gemv_rows_avx2<T>(tail_args_, tail_.X, br0, br1);
    }
#endif
    return panel_rows_portable<T>(a_, P, ldp, n0, nb, bounds_[part], bounds_[part + 1]);
  }

 private:
  const BsrArgs<T>& a_;
  const int64_t* bounds_;
  Isa isa_;
  PanelTail tail_;
  BsrArgs<T> tail_args_;  // a_ with the tail's columns
};

template <typename T>
int bsr_typed(const BsrArgs<T>& a) {
  const Dense& d = *a.d;
  const Isa isa = active_isa();
  // The GEMV is bound by streaming the blocks: the AVX-512 ISA runs the AVX2 GEMV (a zmm
  // port is not written; its 4-row dot products would end in more horizontal sums per byte).
  const bool avx2 = SK_HAVE_AVX2_KERNELS && isa != Isa::kPortable;
  const double work = static_cast<double>(a.nnzb) * a.bm * a.bk * d.N + static_cast<double>(d.M) * d.N;
  int nt = threads_for(d.num_threads, d.N == 1 ? kGemvCost * work : work);
  if (nt > kMaxParts) nt = kMaxParts;
  if (nt > a.Mb) nt = static_cast<int>(a.Mb > 0 ? a.Mb : 1);
  const int parts = parts_for(nt, a.Mb, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  // Cost of a block row: its stored weights plus its output rows.
  split_by_prefix(a.rowptr, a.Mb, 1.0 / static_cast<double>(a.bk), parts, bounds);
  if (d.N == 1) {
    const float* x = gemv_x(d);
    if (x == nullptr) return kNoMemory;
    return parallel_parts(parts, nt, [&](int p) {
#if SK_HAVE_AVX2_KERNELS
      if (avx2) return gemv_rows_avx2<T>(a, x, bounds[p], bounds[p + 1]);
#endif
      return gemv_rows_portable<T>(a, x, bounds[p], bounds[p + 1]);
    });
  }
#if SK_HAVE_AVX512_KERNELS
  if (isa == Isa::kAvx512 && d.N <= kSmallN && a.bk % 16 == 0) {
    int64_t ldx = 0;
    const float* X = small_n_columns(d, &ldx);
    if (X == nullptr) return kNoMemory;
    return parallel_parts(parts, nt, [&](int p) {
      return gemvn_rows_avx512<T>(a, X, ldx, bounds[p], bounds[p + 1]);
    });
  }
#endif
  // 16q + 1..2 columns under AVX-512 (1 when the small-N kernel does not take the blocks):
  // the panels take 16q and the rest runs as GEMV / small-N inside their work (PanelTail;
  // a third column measured 0.94-1.18x, bench/results/semi24-fused-tail-2026-12-06).
  Dense head, tail;
  PanelTail pt;
  const int ts = split_panel_tail(d, a.bk % 16 == 0 ? 2 : 1, &head, &tail, &pt);
  if (ts != kOk) return ts;
  BsrArgs<T> ah = a;
  if (pt.d != nullptr) ah.d = &head;
  const int pparts = panel_parts(nt, a.Mb, ah.d->N, kPanelWidth, kMaxParts);
  if (pparts != parts)
    split_by_prefix(a.rowptr, a.Mb, 1.0 / static_cast<double>(a.bk), pparts, bounds);
  BsrPanels<T> work_(ah, bounds, isa, pt);
  return run_panels(*ah.d, nt, pparts, kPanelWidth, work_, isa == Isa::kAvx512 ? 16 : 8);
}

template <typename T>
int bsr_run(const T* values, int64_t nnzb, int64_t bm, int64_t bk, const int32_t* cols,
            const int32_t* rowptr, const Dense& d) {
  BsrArgs<T> a{values, nnzb, bm, bk, ceil_div(d.M, bm), ceil_div(d.K, bk), cols, rowptr, &d};
  // Every block index used below is then in [0, nnzb).
  if (!offsets_ok(rowptr, a.Mb, nnzb)) return kBadOffsets;
  return bsr_typed(a);
}

}  // namespace

int bsr_structure(const int32_t* block_cols, const int32_t* block_rowptr, int64_t nnzb,
                  int64_t M, int64_t K, int64_t bm, int64_t bk) {
  if (M < 0 || K < 0 || bm < 1 || bk < 1 || nnzb < 0) return kBadArgument;
  if (!offsets_ok(block_rowptr, ceil_div(M, bm), nnzb)) return kBadOffsets;
  const int64_t Kb = ceil_div(K, bk);
  for (int64_t b = 0; b < nnzb; ++b)
    if (block_cols[b] < 0 || block_cols[b] >= Kb) return kBadIndex;
  return kOk;
}

int bsr_spmm(const void* values, WeightType wt, int64_t nnzb, int64_t bm, int64_t bk,
             const int32_t* block_cols, const int32_t* block_rowptr, const Dense& d) {
  if (d.M < 0 || d.K < 0 || d.N < 0 || bm < 1 || bk < 1 || nnzb < 0) return kBadArgument;
  if (d.M == 0 || d.N == 0) return kOk;
  switch (wt) {
    case WeightType::kF32:
      return bsr_run(static_cast<const float*>(values), nnzb, bm, bk, block_cols, block_rowptr, d);
    case WeightType::kBF16:
      return bsr_run(static_cast<const bf16*>(values), nnzb, bm, bk, block_cols, block_rowptr, d);
    case WeightType::kF16:
      return bsr_run(static_cast<const f16*>(values), nnzb, bm, bk, block_cols, block_rowptr, d);
  }
  return kBadArgument;
}

}  // namespace cpu
}  // namespace sparsekern
