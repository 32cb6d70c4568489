// 1:4 semi-structured GEMV (N == 1) on the CPU.
//
// The format (sparsekern/formats/nm14.py): values [M, G] (G = ceil(K/4)), one kept value per
// group of 4 columns; meta [M, ceil(G/4)] uint8, 2 bits per group (group g at bits
// 2*(g%4)..2*(g%4)+1 of byte g/4). Every bit pattern is a valid position, so nothing is
// checked; a position in the padded columns (>= K) never counts. Every stored value meets
// its activation, an empty group's stored 0 included (0 * Inf is NaN, as in the reference).
//
// A GEMV streams 1.0625 bytes of weight per 4 columns in float32 against dense's 16: the
// kernel is the 2:4 one with one value per group. With AVX-512 one 32-bit metadata word gives
// the indices of 16 kept values (64 columns); two vpermt2ps pick them from the 64
// activations (columns 0-31 for the first 8 groups, 32-63 for the last 8), R rows sharing
// the activation loads. AVX2 gathers 8 activations per 16-bit word.
//
// With AVX-512, 2..6 columns run the GEMV's permutation once per 16 kept values and row,
// applied to each column. Otherwise N >= 2 vectorizes along N over a packed panel of B, as
// the 2:4 kernel does: one metadata
// byte gives the panel rows of 4 kept values, each broadcast and multiplied into NV vector
// accumulators per row, R rows at a time. A quarter of dense's multiply-adds, no copy of the
// weight (the Python path, which forced backends and autograd take, still runs the 2:4
// kernel on a cached 2:4 copy).
#include <cstdint>
#include <cstring>

#include "common.h"
#include "isa.h"
#include "kernels.h"
#include "parallel.h"
#include "simd_avx2.h"
#include "simd_avx512.h"

namespace sparsekern {
namespace cpu {
namespace {

constexpr int kMaxParts = 256;
constexpr int64_t kPanelWidth = 32;     // columns of B per packed panel (4 ymm)
constexpr int64_t kPanelWidth512 = 64;  // the same with AVX-512 (4 zmm)
// Up to this many columns AVX-512 runs gemvn_rows_avx512 (2 threads, ms, gemvn / panel: N=5
// 4096² 0.94-0.99 / 1.49-1.52, 768x3072 0.135 / 0.170; N=8 1.60-1.65 / 1.50-1.52, 0.21-0.26 /
// 0.17-0.21).
constexpr int64_t kSmallN = 6;

struct Nm14Rows {
  int64_t K, G, mcols;
  explicit Nm14Rows(int64_t K_) : K(K_), G(ceil_div(K_, 4)), mcols(ceil_div(ceil_div(K_, 4), 4)) {}
};

inline int position(const uint8_t* mt, int64_t g) { return (mt[g >> 2] >> (2 * (g & 3))) & 3; }

// Groups [g0, G) of one row, one by one (the vector loops' tail).
template <typename T>
inline float row_tail(const T* v, const uint8_t* mt, const float* x, int64_t g0, int64_t G,
                      int64_t K) {
  float s = 0.0f;
  for (int64_t g = g0; g < G; ++g) {
    const int64_t c = 4 * g + position(mt, g);
    if (c < K) s += to_float(v[g]) * x[c];
  }
  return s;
}

template <typename T>
int gemv_rows_portable(const T* values, const uint8_t* meta, const Dense& d, const float* x,
                       int64_t m0, int64_t m1) {
  const Nm14Rows r(d.K);
  for (int64_t m = m0; m < m1; ++m)
    store_out(d, m, 0, row_tail(values + m * r.G, meta + m * r.mcols, x, 0, r.G, d.K));
  return kOk;
}

// Rows [m0, m1) times a packed panel (ldp <= kPanelWidth512 columns), one row at a time.
template <typename T>
int panel_rows_portable(const T* values, const uint8_t* meta, const Dense& d, const float* P,
                        int64_t ldp, int64_t n0, int64_t nb, int64_t m0, int64_t m1) {
  const Nm14Rows r(d.K);
  float acc[kPanelWidth512];
  if (ldp > kPanelWidth512) return kBadArgument;
  for (int64_t m = m0; m < m1; ++m) {
    const T* v = values + m * r.G;
    const uint8_t* mt = meta + m * r.mcols;
    for (int64_t j = 0; j < ldp; ++j) acc[j] = 0.0f;
    for (int64_t g = 0; g < r.G; ++g) {
      const int64_t c = 4 * g + position(mt, g);
      if (c >= d.K) continue;  // the padded last group: columns >= K never count
      const float w = to_float(v[g]);
      const float* b = P + c * ldp;
      for (int64_t j = 0; j < ldp; ++j) acc[j] += w * b[j];
    }
    store_tile(d, m, 1, n0, nb, acc, ldp);
  }
  return kOk;
}

#if SK_HAVE_AVX2_KERNELS
// 8 groups (32 columns, one 16-bit metadata word) per step: the activations gathered.
template <typename T>
SK_AVX2 int gemv_rows_avx2(const T* values, const uint8_t* meta, const Dense& d, const float* x,
                           int64_t m0, int64_t m1) {
  const Nm14Rows r(d.K);
  const int64_t steps = d.K / 32;  // steps whose 32 columns are all < K
  const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i base = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  const __m256i three = _mm256_set1_epi32(3);
  for (int64_t m = m0; m < m1; ++m) {
    const T* v = values + m * r.G;
    const uint8_t* mt = meta + m * r.mcols;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t j = 0; j < steps; ++j) {
      uint16_t word;
      std::memcpy(&word, mt + 2 * j, 2);
      const __m256i idx = _mm256_add_epi32(
          _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(word), shifts), three), base);
      acc = _mm256_fmadd_ps(load8(v + 8 * j), _mm256_i32gather_ps(x + 32 * j, idx, 4), acc);
    }
    store_out(d, m, 0, hsum(acc) + row_tail(v, mt, x, 8 * steps, r.G, d.K));
  }
  return kOk;
}

// R rows from row m times the whole panel, NV ymm per row (row stride LDP = 8 * NV). A
// metadata byte (4 groups, 16 panel rows) gives the rows of its 4 kept values; the weights
// come from one 4-float load, each broadcast by an in-lane permute.
template <typename T, int R, int NV>
SK_AVX2 void panel_tile_avx2(const T* v, const uint8_t* mt, const Nm14Rows& r, const Dense& d,
                             const float* P, int64_t n0, int64_t nb, int64_t m) {
  constexpr int64_t LDP = 8 * NV;
  __m256 acc[R][NV];
  SK_UNROLL for (int i = 0; i < R; ++i)
    SK_UNROLL for (int u = 0; u < NV; ++u) acc[i][u] = _mm256_setzero_ps();
  const int64_t gfull = d.K / 4;  // groups whose 4 columns are all < K
  int64_t j = 0;
  for (; 4 * j + 4 <= gfull; ++j) {
    const float* pj = P + 16 * j * LDP;
    SK_UNROLL for (int i = 0; i < R; ++i) {
      const unsigned b = mt[i * r.mcols + j];
      const float* p0 = pj + (b & 3) * LDP;
      const float* p1 = pj + (4 + ((b >> 2) & 3)) * LDP;
      const float* p2 = pj + (8 + ((b >> 4) & 3)) * LDP;
      const float* p3 = pj + (12 + (b >> 6)) * LDP;
      const __m256 w4 = load4_dup(v + i * r.G + 4 * j);
      const __m256 w0 = _mm256_permute_ps(w4, 0x00), w1 = _mm256_permute_ps(w4, 0x55);
      const __m256 w2 = _mm256_permute_ps(w4, 0xAA), w3 = _mm256_permute_ps(w4, 0xFF);
      SK_UNROLL for (int u = 0; u < NV; ++u) {
        __m256 x = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0 + 8 * u), acc[i][u]);
        x = _mm256_fmadd_ps(w1, _mm256_loadu_ps(p1 + 8 * u), x);
        x = _mm256_fmadd_ps(w2, _mm256_loadu_ps(p2 + 8 * u), x);
        acc[i][u] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(p3 + 8 * u), x);
      }
    }
  }
  for (int64_t g = 4 * j; g < r.G; ++g) {  // the last groups, the padded one included
    SK_UNROLL for (int i = 0; i < R; ++i) {
      const int64_t c = 4 * g + position(mt + i * r.mcols, g);
      if (c >= d.K) continue;  // format padding past K never counts
      const __m256 w = bcast(v + i * r.G + g);
      SK_UNROLL for (int u = 0; u < NV; ++u)
        acc[i][u] = _mm256_fmadd_ps(w, _mm256_loadu_ps(P + c * LDP + 8 * u), acc[i][u]);
    }
  }
  alignas(32) float tile[R * LDP];
  SK_UNROLL for (int i = 0; i < R; ++i)
    SK_UNROLL for (int u = 0; u < NV; ++u) _mm256_store_ps(tile + i * LDP + 8 * u, acc[i][u]);
  store_tile(d, m, R, n0, nb, tile, LDP);
}

template <typename T, int NV>
SK_AVX2 int panel_rows_avx2_nv(const T* values, const uint8_t* meta, const Dense& d,
                               const float* P, int64_t n0, int64_t nb, int64_t m0, int64_t m1) {
  constexpr int R = NV >= 4 ? 2 : NV == 3 ? 3 : NV == 2 ? 4 : 6;  // >= 8 accumulators
  const Nm14Rows r(d.K);
  int64_t m = m0;
  for (; m + R <= m1; m += R)
    panel_tile_avx2<T, R, NV>(values + m * r.G, meta + m * r.mcols, r, d, P, n0, nb, m);
  for (; m < m1; ++m)
    panel_tile_avx2<T, 1, NV>(values + m * r.G, meta + m * r.mcols, r, d, P, n0, nb, m);
  return kOk;
}

template <typename T>
int panel_rows_avx2(const T* values, const uint8_t* meta, const Dense& d, const float* P,
                    int64_t ldp, int64_t n0, int64_t nb, int64_t m0, int64_t m1) {
  switch (ldp / 8) {
    case 1: return panel_rows_avx2_nv<T, 1>(values, meta, d, P, n0, nb, m0, m1);
    case 2: return panel_rows_avx2_nv<T, 2>(values, meta, d, P, n0, nb, m0, m1);
    case 3: return panel_rows_avx2_nv<T, 3>(values, meta, d, P, n0, nb, m0, m1);
    case 4: return panel_rows_avx2_nv<T, 4>(values, meta, d, P, n0, nb, m0, m1);
    default: return kBadArgument;
  }
}
#endif

#if SK_HAVE_AVX512_KERNELS
// 16 groups (64 columns, one 32-bit metadata word) per step, R rows sharing the activations.
template <typename T, int R>
SK_AVX512_INLINE void gemv_tile_avx512(const T* v, const uint8_t* mt, const Nm14Rows& r,
                                       const Dense& d, const float* x, int64_t m,
                                       NextTileFetch next_v = NextTileFetch(),
                                       NextTileFetch next_mt = NextTileFetch()) {
  const int64_t steps = d.K / 64;  // steps whose 64 columns are all < K
  const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
  const __m512i base = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52,
                                         56, 60);
  const __m512i three = _mm512_set1_epi32(3);
  __m512 acc[R];
  SK_UNROLL for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t j = 0; j < steps; ++j) {
    const float* xj = x + 64 * j;
    const __m512 x0 = _mm512_loadu_ps(xj), x1 = _mm512_loadu_ps(xj + 16);
    const __m512 x2 = _mm512_loadu_ps(xj + 32), x3 = _mm512_loadu_ps(xj + 48);
    next_v.step();  // the next tile's rows into L2 (see NextTileFetch)
    next_mt.step();
    SK_UNROLL for (int i = 0; i < R; ++i) {
      uint32_t word;
      std::memcpy(&word, mt + i * r.mcols + 4 * j, 4);
      const __m512i idx = _mm512_add_epi32(
          _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(static_cast<int>(word)), shifts),
                           three),
          base);
      // vpermt2ps reads the low 5 index bits: lanes 0-7 (columns 0-31) from x0:x1, lanes 8-15
      // (columns 32-63) from x2:x3.
      const __m512 lo = _mm512_permutex2var_ps(x0, idx, x1);
      const __m512 hi = _mm512_permutex2var_ps(x2, idx, x3);
      acc[i] = _mm512_fmadd_ps(load16(v + i * r.G + 16 * j),
                               _mm512_mask_blend_ps(static_cast<__mmask16>(0xFF00), lo, hi),
                               acc[i]);
    }
  }
  SK_UNROLL for (int i = 0; i < R; ++i) {
    const float s = _mm512_reduce_add_ps(acc[i]);
    store_out(d, m + i, 0,
              s + row_tail(v + i * r.G, mt + i * r.mcols, x, 16 * steps, r.G, d.K));
  }
}

// `fetch`: the next tile's rows into L2 while this one runs (fetch_next_tiles, isa.h).
template <typename T>
SK_AVX512 int gemv_rows_avx512(const T* values, const uint8_t* meta, const Dense& d,
                               const float* x, int64_t m0, int64_t m1, bool fetch = true) {
  constexpr int R = 4;
  const Nm14Rows r(d.K);
  int64_t m = m0;
  for (; m + R <= m1; m += R) {
    const int64_t nr = fetch ? min_i64(R, m1 - m - R) : 0;  // the next rows (<= 0: none)
    const int64_t steps = d.K / 64;
    gemv_tile_avx512<T, R>(values + m * r.G, meta + m * r.mcols, r, d, x, m,
                           next_rows(values + (m + R) * r.G, r.G, nr, steps),
                           next_rows(meta + (m + R) * r.mcols, r.mcols, nr, steps));
  }
  for (; m < m1; ++m) gemv_tile_avx512<T, 1>(values + m * r.G, meta + m * r.mcols, r, d, x, m);
  return kOk;
}

// Small N (2..kSmallN columns of B, each contiguous in k: column c at X + c * ldx): the
// GEMV's indices once per 16 kept values and row, applied to each column (the panel kernel
// would broadcast every kept weight into a zmm only N of whose 16 lanes count).
template <typename T, int R, int NC>
SK_AVX512_INLINE void gemvn_tile_avx512(const T* v, const uint8_t* mt, const Nm14Rows& r,
                                        const Dense& d, const float* X, int64_t ldx,
                                        int64_t m) {
  const int64_t steps = d.K / 64;  // steps whose 64 columns are all < K
  const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
  const __m512i base = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52,
                                         56, 60);
  const __m512i three = _mm512_set1_epi32(3);
  __m512 acc[R][NC];
  SK_UNROLL for (int i = 0; i < R; ++i)
    SK_UNROLL for (int c = 0; c < NC; ++c) acc[i][c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < steps; ++j) {
    __m512i idx[R];
    __m512 w[R];
    SK_UNROLL for (int i = 0; i < R; ++i) {
      uint32_t word;
      std::memcpy(&word, mt + i * r.mcols + 4 * j, 4);
      idx[i] = _mm512_add_epi32(
          _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(static_cast<int>(word)), shifts),
                           three),
          base);
      w[i] = load16(v + i * r.G + 16 * j);
    }
    SK_UNROLL for (int c = 0; c < NC; ++c) {
      const float* xj = X + c * ldx + 64 * j;
      const __m512 x0 = _mm512_loadu_ps(xj), x1 = _mm512_loadu_ps(xj + 16);
      const __m512 x2 = _mm512_loadu_ps(xj + 32), x3 = _mm512_loadu_ps(xj + 48);
      SK_UNROLL for (int i = 0; i < R; ++i) {
        const __m512 lo = _mm512_permutex2var_ps(x0, idx[i], x1);  // see gemv_tile_avx512
        const __m512 hi = _mm512_permutex2var_ps(x2, idx[i], x3);
        acc[i][c] = _mm512_fmadd_ps(
            w[i], _mm512_mask_blend_ps(static_cast<__mmask16>(0xFF00), lo, hi), acc[i][c]);
      }
    }
  }
  SK_UNROLL for (int i = 0; i < R; ++i)
    SK_UNROLL for (int c = 0; c < NC; ++c)
      store_out(d, m + i, c,
                _mm512_reduce_add_ps(acc[i][c]) +
                    row_tail(v + i * r.G, mt + i * r.mcols, X + c * ldx, 16 * steps, r.G, d.K));
}

template <typename T, int NC>
SK_AVX512 int gemvn_rows_avx512_nc(const T* values, const uint8_t* meta, const Dense& d,
                                   const float* X, int64_t ldx, int64_t m0, int64_t m1) {
  constexpr int R = NC <= 4 ? 4 : 2;  // R * NC accumulators, R index and R value registers
  const Nm14Rows r(d.K);
  int64_t m = m0;
  for (; m + R <= m1; m += R)
    gemvn_tile_avx512<T, R, NC>(values + m * r.G, meta + m * r.mcols, r, d, X, ldx, m);
  for (; m < m1; ++m)
    gemvn_tile_avx512<T, 1, NC>(values + m * r.G, meta + m * r.mcols, r, d, X, ldx, m);
  return kOk;
}

template <typename T>
int gemvn_rows_avx512(const T* values, const uint8_t* meta, const Dense& d, const float* X,
                      int64_t ldx, int64_t m0, int64_t m1) {
  switch (d.N) {
    case 2: return gemvn_rows_avx512_nc<T, 2>(values, meta, d, X, ldx, m0, m1);
    case 3: return gemvn_rows_avx512_nc<T, 3>(values, meta, d, X, ldx, m0, m1);
    case 4: return gemvn_rows_avx512_nc<T, 4>(values, meta, d, X, ldx, m0, m1);
    case 5: return gemvn_rows_avx512_nc<T, 5>(values, meta, d, X, ldx, m0, m1);
    case 6: return gemvn_rows_avx512_nc<T, 6>(values, meta, d, X, ldx, m0, m1);
    default: return kBadArgument;
  }
}

// panel_tile_avx2 with zmm (LDP = 16 * NV): each panel row is a memory operand of its FMA;
// each kept weight is broadcast from memory (NV + 1 loads per NV multiply-adds) or, with REG,
// from one load of a metadata byte's 4 weights (bcast4x16).
template <typename T, int R, int NV, bool REG>
SK_AVX512 void panel_tile_avx512(const T* v, const uint8_t* mt, const Nm14Rows& r,
                                 const Dense& d, const float* P, int64_t n0, int64_t nb,
                                 int64_t m) {
  constexpr int64_t LDP = 16 * NV;
  __m512 acc[R][NV];
  SK_UNROLL for (int i = 0; i < R; ++i)
    SK_UNROLL for (int u = 0; u < NV; ++u) acc[i][u] = _mm512_setzero_ps();
  const int64_t gfull = d.K / 4;  // groups whose 4 columns are all < K
  int64_t j = 0;
  for (; 4 * j + 4 <= gfull; ++j) {
    const float* pj = P + 16 * j * LDP;
    SK_UNROLL for (int i = 0; i < R; ++i) {
      const unsigned b = mt[i * r.mcols + j];
      const float* p[4] = {pj + (b & 3) * LDP, pj + (4 + ((b >> 2) & 3)) * LDP,
                           pj + (8 + ((b >> 4) & 3)) * LDP, pj + (12 + (b >> 6)) * LDP};
      __m512 wq[4];
      bcast4x16<REG, NV>(v + i * r.G + 4 * j, wq);
      SK_UNROLL for (int q = 0; q < 4; ++q)
        SK_UNROLL for (int u = 0; u < NV; ++u)
          acc[i][u] = _mm512_fmadd_ps(wq[q], _mm512_loadu_ps(p[q] + 16 * u), acc[i][u]);
    }
  }
  for (int64_t g = 4 * j; g < r.G; ++g) {  // the last groups, the padded one included
    SK_UNROLL for (int i = 0; i < R; ++i) {
      const int64_t c = 4 * g + position(mt + i * r.mcols, g);
      if (c >= d.K) continue;  // format padding past K never counts
      const __m512 w = bcast16(v + i * r.G + g);
      SK_UNROLL for (int u = 0; u < NV; ++u)
        acc[i][u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(P + c * LDP + 16 * u), acc[i][u]);
    }
  }
  alignas(64) float tile[R * LDP];
  SK_UNROLL for (int i = 0; i < R; ++i)
    SK_UNROLL for (int u = 0; u < NV; ++u) _mm512_store_ps(tile + i * LDP + 16 * u, acc[i][u]);
  store_tile(d, m, R, n0, nb, tile, LDP);
}

template <typename T, int NV, bool REG>
SK_AVX512 int panel_rows_avx512_nv(const T* values, const uint8_t* meta, const Dense& d,
                                   const float* P, int64_t n0, int64_t nb, int64_t m0,
                                   int64_t m1) {
  constexpr int R = NV >= 4 ? 6 : NV == 3 ? 8 : 12;  // 24 accumulators (of 32 zmm)
  const Nm14Rows r(d.K);
  int64_t m = m0;
  for (; m + R <= m1; m += R)
    panel_tile_avx512<T, R, NV, REG>(values + m * r.G, meta + m * r.mcols, r, d, P, n0, nb, m);
  for (; m < m1; ++m)
    panel_tile_avx512<T, 1, NV, REG>(values + m * r.G, meta + m * r.mcols, r, d, P, n0, nb, m);
  return kOk;
}

template <typename T, bool REG>
int panel_rows_avx512_reg(const T* values, const uint8_t* meta, const Dense& d, const float* P,
                          int64_t ldp, int64_t n0, int64_t nb, int64_t m0, int64_t m1) {
  switch (ldp / 16) {
    case 1: return panel_rows_avx512_nv<T, 1, REG>(values, meta, d, P, n0, nb, m0, m1);
    case 2: return panel_rows_avx512_nv<T, 2, REG>(values, meta, d, P, n0, nb, m0, m1);
    // 3-4 zmm per row keep the loads: 1:4 at N=64-128 measured 0.94-1.03x with permutes.
    case 3: return panel_rows_avx512_nv<T, 3, false>(values, meta, d, P, n0, nb, m0, m1);
    case 4: return panel_rows_avx512_nv<T, 4, false>(values, meta, d, P, n0, nb, m0, m1);
    default: return kBadArgument;
  }
}

template <typename T>
int panel_rows_avx512(const T* values, const uint8_t* meta, const Dense& d, const float* P,
                      int64_t ldp, int64_t n0, int64_t nb, int64_t m0, int64_t m1) {
  return with_broadcast_choice([&](auto reg) {
    return panel_rows_avx512_reg<T, decltype(reg)::value>(values, meta, d, P, ldp, n0, nb, m0, m1);
  });
}
#endif

// One part of the rows over one packed panel, on the ISA of the call.
template <typename T>
class Nm14Panels : public PanelWork {
 public:
  Nm14Panels(const T* values, const uint8_t* meta, const Dense& d, const int64_t* bounds,
             Isa isa, PanelTail tail = PanelTail())
      : values_(values), meta_(meta), d_(d), bounds_(bounds), isa_(isa), tail_(tail) {}
  int run(int part, const float* P, int64_t ldp, int64_t n0, int64_t nb) override {
    const int64_t m0 = bounds_[part], m1 = bounds_[part + 1];
#if SK_HAVE_AVX512_KERNELS
    if (isa_ == Isa::kAvx512) {
      const int s = panel_rows_avx512<T>(values_, meta_, d_, P, ldp, n0, nb, m0, m1);
      if (s != kOk || tail_.d == nullptr || n0 + nb != d_.N) return s;
      // Once per row part: with the head's last panel.
      return tail_.d->N == 1
                 ? gemv_rows_avx512<T>(values_, meta_, *tail_.d, tail_.X, m0, m1)
                 : gemvn_rows_avx512<T>(values_, meta_, *tail_.d, tail_.X, tail_.ldx, m0, m1);
    }
#endif
#if SK_HAVE_AVX2_KERNELS
    if (isa_ == Isa::kAvx2) {
      const int s = panel_rows_avx2<T>(values_, meta_, d_, P, ldp, n0, nb, m0, m1);
      if (s != kOk || tail_.d == nullptr || n0 + nb != d_.N) return s;
      return gemv_rows_avx2<T>(values_, meta_, *tail_.d, tail_.X, m0, m1);
    }
#endif
    return panel_rows_portable<T>(values_, meta_, d_, P, ldp, n0, nb, m0, m1);
  }

 private:
  const T* values_;
  const uint8_t* meta_;
  const Dense& d_;
  const int64_t* bounds_;
  Isa isa_;
  PanelTail tail_;
};

template <typename T>
int nm14_typed(const T* values, const uint8_t* meta, const Dense& d) {
  const Isa isa = active_isa();
  // The AVX-512 GEMV asks once whether the weight looks cached: that decides its fetch-ahead
  // and when a second thread pays. From L2/L3 its loop is fast per entry and the second
  // thread's start dominates up to ~200K entries (Zen 5, 2 threads against 1, warm: 768x384
  // 0.63x, 768x768 0.78x, 1024x1024 1.00x, 2048x1024 1.61x); from memory two threads read
  // faster from 74K entries on (768x384 1.11x, 768x768 1.32x; bench/results/
  // gemv-threads-2026-12-07).
  const bool gemv512 = isa == Isa::kAvx512 && d.N == 1;
  const int64_t weight_bytes = d.M * Nm14Rows(d.K).G * static_cast<int64_t>(sizeof(T));
  const bool cached = gemv512 && weight_looks_cached(values, weight_bytes);
  const double gemv_cost = cached ? 0.5 : kGemvCost;
  int nt = threads_for(d.num_threads, 0.25 * static_cast<double>(d.M) * d.K * d.N *
                                          (d.N == 1 ? gemv_cost : 1.0));
  if (nt > kMaxParts) nt = kMaxParts;
  if (nt > d.M) nt = static_cast<int>(d.M > 0 ? d.M : 1);
  const int parts = parts_for(nt, d.M, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  split_even(d.M, parts, bounds);  // every row holds the same number of entries
  // 16q + 1..3 columns under AVX-512: the tail through the GEMV / small-N kernel inside the
  // head's panel work, as 2:4 does (bench/results/panel-tail-2026-12-05, PanelTail)
  Dense head, tail;
  PanelTail pt;
  const int ts = split_panel_tail(d, 3, &head, &tail, &pt);
  if (ts != kOk) return ts;
  if (pt.d != nullptr) {
    const int64_t width = isa == Isa::kAvx512 ? kPanelWidth512 : kPanelWidth;
    const int pparts = panel_parts(nt, d.M, head.N, width, kMaxParts);
    if (pparts != parts) split_even(d.M, pparts, bounds);
    Nm14Panels<T> work(values, meta, head, bounds, isa, pt);
    return run_panels(head, nt, pparts, width, work, isa == Isa::kAvx512 ? 16 : 8);
  }
#if SK_HAVE_AVX512_KERNELS
  if (isa == Isa::kAvx512 && d.N > 1 && d.N <= kSmallN) {
    int64_t ldx = 0;
    const float* X = small_n_columns(d, &ldx);
    if (X == nullptr) return kNoMemory;
    return parallel_parts(parts, nt, [&](int p) {
      return gemvn_rows_avx512<T>(values, meta, d, X, ldx, bounds[p], bounds[p + 1]);
    });
  }
#endif
  if (d.N > 1) {
    const int64_t width = isa == Isa::kAvx512 ? kPanelWidth512 : kPanelWidth;
    const int pparts = panel_parts(nt, d.M, d.N, width, kMaxParts);
    if (pparts != parts) split_even(d.M, pparts, bounds);
    Nm14Panels<T> work(values, meta, d, bounds, isa);
    return run_panels(d, nt, pparts, width, work, isa == Isa::kAvx512 ? 16 : 8);
  }
  const float* x = gemv_x(d);
  if (x == nullptr) return kNoMemory;
  const bool fetch = gemv512 && fetch_next_tiles(cached);
  return parallel_parts(parts, nt, [&](int p) {
#if SK_HAVE_AVX512_KERNELS
    if (isa == Isa::kAvx512)
      return gemv_rows_avx512<T>(values, meta, d, x, bounds[p], bounds[p + 1], fetch);
#endif
#if SK_HAVE_AVX2_KERNELS
    if (isa != Isa::kPortable)
      return gemv_rows_avx2<T>(values, meta, d, x, bounds[p], bounds[p + 1]);
#endif
    return gemv_rows_portable<T>(values, meta, d, x, bounds[p], bounds[p + 1]);
  });
}

}  // namespace

int nm14_spmm(const void* values, WeightType wt, const uint8_t* meta, const Dense& d) {
  if (d.M < 0 || d.K < 0 || d.N < 0) return kBadArgument;
  if (d.M == 0 || d.N == 0) return kOk;
  return with_weight_type(wt, [&](auto tag) {
    return nm14_typed(static_cast<decltype(tag)>(values), meta, d);
  });
}

}  // namespace cpu
}  // namespace sparsekern
