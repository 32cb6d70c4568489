// 2:4 semi-structured spmm on the CPU.
//
// N == 1 (GEMV) is memory bound, so the kernel streams the compressed row once (2 kept
// values + a nibble of metadata per group of 4: 2.125 bytes per weight in float32 instead
// of 4) and gathers the matching activations in registers: a byte-indexed table turns one
// metadata byte into a vpermps index that pulls the 4 kept columns out of 8 activations.
// With AVX-512, one metadata word gives the vpermt2ps indices of 16 kept values (32
// activations), computed with a shift and a mask, for 4 rows at once.
// Only stored entries meet B, so NaN/Inf in B propagate exactly as in the reference.
//
// N >= 2 vectorizes along N over a packed panel of B (up to 32 columns, 64 with AVX-512):
// each kept weight is broadcast and multiplied into NV vector accumulators per row, R rows at
// a time, so that R * NV independent accumulators hide the FMA latency. With AVX-512, N = 2..6
// runs the GEMV's permutation per column instead, and from N = 7 on the vector lanes run over
// 16 weight rows (each block transposed per call, in the worker's scratch; past 64 columns
// only when B's columns are contiguous, in panels of such blocks).
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common.h"
#include "isa.h"
#include "kernels.h"
#include "parallel.h"
#include "simd_avx2.h"
#include "simd_avx512.h"

namespace sparsekern {
namespace cpu {
namespace {

constexpr int64_t kPanelWidth = 32;  // columns of B per packed panel (4 ymm)
constexpr int64_t kPanelWidth512 = 64;  // the same with AVX-512 (4 zmm)
constexpr int64_t kPrefetchBytes = 4096;  // GEMV: how far ahead of the values stream to fetch
constexpr int64_t kPrefetchBytes512 = 2048;  // the same per row of an AVX-512 small-N tile of 1-2 rows
constexpr int kMaxParts = 256;
// Up to this many columns of B, AVX-512 runs gemvn_rows_avx512 instead of the panels
// (2 threads, 4096² and 768x3072: N=2 0.66x -> 1.5-1.7x dense, N=4 1.2x -> 2.3-2.5x, N=8
// 1.7x -> 2.0-2.7x). From kLorMinN (7) columns on, the lanes-over-rows blocks
// (lor_rows_avx512); the panel tails (1-3 columns) still run it.
constexpr int64_t kSmallN = 8;
constexpr int64_t kSemi24PanelTail = 3;  // see split_panel_tail


// Per metadata byte (two groups of 4 columns): whether a nibble has first >= second, and the
// column (0..7 within the byte's 8 columns) of each of its 4 kept values, twice (lanes 0-3
// and 4-7, so the same entry serves either half of a ymm).
struct Semi24Tables {
  uint8_t bad[256];
  alignas(64) uint8_t cols[256][8];
  Semi24Tables() {
    for (int b = 0; b < 256; ++b) {
      const int p0 = b & 3, p1 = (b >> 2) & 3, q0 = (b >> 4) & 3, q1 = (b >> 6) & 3;
      bad[b] = static_cast<uint8_t>(p0 >= p1 || q0 >= q1);
      const uint8_t c[4] = {static_cast<uint8_t>(p0), static_cast<uint8_t>(p1),
                            static_cast<uint8_t>(4 + q0), static_cast<uint8_t>(4 + q1)};
      for (int i = 0; i < 8; ++i) cols[b][i] = c[i & 3];
    }
  }
};
const Semi24Tables kTables;

// Geometry of the packed rows.
struct Semi24Rows {
  int64_t K, G, half, mcols;
  explicit Semi24Rows(int64_t K_) : K(K_), G(ceil_div(K_, 4)), half(2 * G), mcols(ceil_div(G, 2)) {}
};

inline int nibble(const uint8_t* meta_row, int64_t g) {
  return (meta_row[g >> 1] >> ((g & 1) * 4)) & 15;
}

// A GEMV row's groups [g0, G) one by one (the vector loops' tail); columns >= K never count.
template <typename T>
inline float gemv_tail(const T* v, const uint8_t* mt, const float* x, int64_t g0, int64_t G,
                       int64_t K) {
  float s = 0.0f;
  for (int64_t g = g0; g < G; ++g) {
    const int nib = nibble(mt, g), p0 = nib & 3, p1 = nib >> 2;
    if (4 * g + p0 < K) s += to_float(v[2 * g]) * x[4 * g + p0];
    if (4 * g + p1 < K) s += to_float(v[2 * g + 1]) * x[4 * g + p1];
  }
  return s;
}

// ----------------------------------------------------------------------------- portable

template <typename T>
int gemv_rows_portable(const T* values, const uint8_t* meta, const Dense& d, const float* x,
                       int64_t m0, int64_t m1) {
  const Semi24Rows g4(d.K);
  const int64_t gfull = d.K / 4;  // groups whose 4 columns are all < K
  for (int64_t m = m0; m < m1; ++m) {
    const T* v = values + m * g4.half;
    const uint8_t* mt = meta + m * g4.mcols;
    float acc0 = 0.0f, acc1 = 0.0f;
    int bad = 0;
    for (int64_t g = 0; g < gfull; ++g) {
      const int nib = nibble(mt, g), p0 = nib & 3, p1 = nib >> 2;
      bad |= p0 >= p1;
      acc0 += to_float(v[2 * g]) * x[4 * g + p0];
      acc1 += to_float(v[2 * g + 1]) * x[4 * g + p1];
    }
    for (int64_t g = gfull; g < g4.G; ++g) {  // the padded last group: columns >= K never count
      const int nib = nibble(mt, g), p0 = nib & 3, p1 = nib >> 2;
      bad |= p0 >= p1;
      if (4 * g + p0 < d.K) acc0 += to_float(v[2 * g]) * x[4 * g + p0];
      if (4 * g + p1 < d.K) acc1 += to_float(v[2 * g + 1]) * x[4 * g + p1];
    }
    if (bad) return kBadMeta;
    store_out(d, m, 0, acc0 + acc1);
  }
  return kOk;
}

template <typename T>
int panel_rows_portable(const T* values, const uint8_t* meta, const Dense& d, const float* P,
                        int64_t ldp, int64_t n0, int64_t nb, int64_t m0, int64_t m1) {
  const Semi24Rows g4(d.K);
  float acc[kPanelWidth];
  for (int64_t m = m0; m < m1; ++m) {
    const T* v = values + m * g4.half;
    const uint8_t* mt = meta + m * g4.mcols;
    for (int64_t j = 0; j < ldp; ++j) acc[j] = 0.0f;
    int bad = 0;
    for (int64_t g = 0; g < g4.G; ++g) {
      const int nib = nibble(mt, g), p0 = nib & 3, p1 = nib >> 2;
      bad |= p0 >= p1;
      const int64_t c0 = 4 * g + p0, c1 = 4 * g + p1;
      if (c0 < d.K && c1 < d.K) {
        const float w0 = to_float(v[2 * g]), w1 = to_float(v[2 * g + 1]);
        const float* b0 = P + c0 * ldp;
        const float* b1 = P + c1 * ldp;
        for (int64_t j = 0; j < ldp; ++j) acc[j] += w0 * b0[j] + w1 * b1[j];
      } else {  // the padded last group: columns >= K never count
        for (int i = 0; i < 2; ++i) {
          const int64_t c = i == 0 ? c0 : c1;
          if (c >= d.K) continue;
          const float w = to_float(v[2 * g + i]);
          const float* b = P + c * ldp;
          for (int64_t j = 0; j < ldp; ++j) acc[j] += w * b[j];
        }
      }
    }
    if (bad) return kBadMeta;
    store_tile(d, m, 1, n0, nb, acc, ldp);
  }
  return kOk;
}

// ----------------------------------------------------------------------------- AVX2
#if SK_HAVE_AVX2_KERNELS

// ok_nibble[n] = -1 when (n & 3) < (n >> 2), once per 128-bit lane (vpshufb is per lane).
SK_AVX2_INLINE __m256i ok_nibble_table() {
  return _mm256_setr_epi8(0, 0, 0, 0, -1, 0, 0, 0, -1, -1, 0, 0, -1, -1, -1, 0,
                          0, 0, 0, 0, -1, 0, 0, 0, -1, -1, 0, 0, -1, -1, -1, 0);
}
// Whether the 32 bytes at q each hold two groups with first < second.
SK_AVX2_INLINE bool meta32_valid(const uint8_t* q) {
  const __m256i t = ok_nibble_table(), low4 = _mm256_set1_epi8(0x0F);
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
  const __m256i lo = _mm256_shuffle_epi8(t, _mm256_and_si256(b, low4));
  const __m256i hi = _mm256_shuffle_epi8(t, _mm256_and_si256(_mm256_srli_epi16(b, 4), low4));
  return _mm256_movemask_epi8(_mm256_and_si256(lo, hi)) == -1;
}
// The same for 16 bytes.
SK_AVX2_INLINE bool meta16_valid(const uint8_t* q) {
  const __m128i t = _mm256_castsi256_si128(ok_nibble_table()), low4 = _mm_set1_epi8(0x0F);
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i lo = _mm_shuffle_epi8(t, _mm_and_si128(b, low4));
  const __m128i hi = _mm_shuffle_epi8(t, _mm_and_si128(_mm_srli_epi16(b, 4), low4));
  return _mm_movemask_epi8(_mm_and_si128(lo, hi)) == 0xFFFF;
}
// Whether the n bytes at p each hold two groups with first < second: 32 bytes at a time, then
// one step over the range's last 32 (or 16) bytes, which re-reads some checked ones.
SK_AVX2_INLINE bool meta_bytes_valid_avx2(const uint8_t* p, int64_t n) {
  if (n >= 32) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
      if (!meta32_valid(p + i)) return false;
    return i == n || meta32_valid(p + n - 32);
  }
  if (n >= 16) return meta16_valid(p) && meta16_valid(p + n - 16);
  for (int64_t i = 0; i < n; ++i)
    if (kTables.bad[p[i]]) return false;
  return true;
}

// Whether every group of rows [0, rows) has first < second (the batched kernels check a row
// block up front; their inner loop then decodes without checking). With an even group count
// the rows' bytes are one range of whole bytes (the GEMV's 4-row tiles of K = 384: 192 bytes
// in 6 steps, where each row's last 16 bytes were looked up one by one); with an odd one each
// row's last byte holds one group in its low nibble (the high one is padding, any bits).
SK_AVX2 bool meta_rows_valid_avx2(const uint8_t* meta, int64_t rows, const Semi24Rows& g4) {
  if ((g4.G & 1) == 0) return meta_bytes_valid_avx2(meta, rows * g4.mcols);
  const int64_t full = g4.G / 2;  // bytes whose two nibbles are both groups
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* m = meta + r * g4.mcols;
    if (!meta_bytes_valid_avx2(m, full)) return false;
    const int nib = m[full] & 15;
    if ((nib & 3) >= (nib >> 2)) return false;
  }
  return true;
}

// acc += values of 4 groups (16 columns starting at 8 * j) times their activations.
template <typename T>
SK_AVX2_INLINE __m256 gemv_step16(const T* v, const uint8_t* mt, const float* x, int64_t j,
                                  __m256 acc) {
  const unsigned b0 = mt[j], b1 = mt[j + 1];  // validated by the caller
  const __m256i i0 = _mm256_cvtepu8_epi32(
      _mm_loadl_epi64(reinterpret_cast<const __m128i*>(kTables.cols[b0])));
  const __m256i i1 = _mm256_cvtepu8_epi32(
      _mm_loadl_epi64(reinterpret_cast<const __m128i*>(kTables.cols[b1])));
  const __m256 xa = _mm256_permutevar8x32_ps(_mm256_loadu_ps(x + 8 * j), i0);
  const __m256 xb = _mm256_permutevar8x32_ps(_mm256_loadu_ps(x + 8 * j + 8), i1);
  return _mm256_fmadd_ps(load8(v + 4 * j), _mm256_blend_ps(xa, xb, 0xF0), acc);
}

template <typename T>
SK_AVX2 int gemv_rows_avx2(const T* values, const uint8_t* meta, const Dense& d, const float* x,
                           int64_t m0, int64_t m1, bool fetch = true) {
  const Semi24Rows g4(d.K);
  const int64_t jfull = d.K / 8;  // metadata bytes whose 8 columns are all < K
  for (int64_t m = m0; m < m1; ++m) {
    const T* v = values + m * g4.half;
    const uint8_t* mt = meta + m * g4.mcols;
    // The whole metadata row is checked first (vectorized; it then sits in L1 for the loop).
    if (!meta_rows_valid_avx2(mt, 1, g4)) return kBadMeta;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 4 <= jfull; j += 4) {
      // The row is streamed once from memory: prefetch well ahead (a single stream per core
      // does not reach the memory bandwidth on its own); `fetch`: see fetch_next_tiles.
      if (fetch) {
        _mm_prefetch(reinterpret_cast<const char*>(v + 4 * j) + kPrefetchBytes, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(v + 4 * j) + kPrefetchBytes + 64, _MM_HINT_T0);
      }
      acc0 = gemv_step16(v, mt, x, j, acc0);
      acc1 = gemv_step16(v, mt, x, j + 2, acc1);
    }
    for (; j + 2 <= jfull; j += 2) acc0 = gemv_step16(v, mt, x, j, acc0);
    store_out(d, m, 0, hsum(_mm256_add_ps(acc0, acc1)) + gemv_tail(v, mt, x, 2 * j, g4.G, d.K));
  }
  return kOk;
}

// R rows from row m (values v, metadata mt) times the panel rows of groups [g0, g1) (g0 even:
// one K chunk), NV ymm per row. The partial sums live in t (row stride ldt) between chunks:
// `first` starts them at 0, `last` writes Y (+ bias) instead. A metadata byte (2 groups, 4
// kept values) is decoded with a few integer ops per row; its 4 weights are broadcast.
template <typename T, int R, int NV>
SK_AVX2 int panel_tile_avx2(const T* v, const uint8_t* mt, const Semi24Rows& g4, const Dense& d,
                            const float* P, int64_t n0, int64_t nb, int64_t m, int64_t g0,
                            int64_t g1, float* t, int64_t ldt, bool first, bool last) {
  constexpr int64_t LDP = 8 * NV;
  __m256 acc[R][NV];
  SK_UNROLL for (int r = 0; r < R; ++r)
    SK_UNROLL for (int u = 0; u < NV; ++u)
      acc[r][u] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(t + r * ldt + 8 * u);
  const int64_t gfull = min_i64(g1, d.K / 4);  // groups whose 4 columns are all < K
  int64_t j = g0 >> 1;
  for (; 2 * j + 2 <= gfull; ++j) {
    const float* pj = P + 8 * j * LDP;
    SK_UNROLL for (int r = 0; r < R; ++r) {
      const unsigned b = mt[r * g4.mcols + j];  // validated by the caller
      const float* p0 = pj + (b & 3) * LDP;
      const float* p1 = pj + ((b >> 2) & 3) * LDP;
      const float* p2 = pj + (4 + ((b >> 4) & 3)) * LDP;
      const float* p3 = pj + (4 + (b >> 6)) * LDP;
      const __m256 w4 = load4_dup(v + r * g4.half + 4 * j);
      const __m256 w0 = _mm256_permute_ps(w4, 0x00), w1 = _mm256_permute_ps(w4, 0x55);
      const __m256 w2 = _mm256_permute_ps(w4, 0xAA), w3 = _mm256_permute_ps(w4, 0xFF);
      SK_UNROLL for (int u = 0; u < NV; ++u) {
        __m256 x = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0 + 8 * u), acc[r][u]);
        x = _mm256_fmadd_ps(w1, _mm256_loadu_ps(p1 + 8 * u), x);
        x = _mm256_fmadd_ps(w2, _mm256_loadu_ps(p2 + 8 * u), x);
        acc[r][u] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(p3 + 8 * u), x);
      }
    }
  }
  for (int64_t g = 2 * j; g < g1; ++g) {  // an odd last group, or the padded one
    SK_UNROLL for (int r = 0; r < R; ++r) {
      const int nib = nibble(mt + r * g4.mcols, g);
      const int p[2] = {nib & 3, nib >> 2};
      SK_UNROLL for (int i = 0; i < 2; ++i) {
        if (4 * g + p[i] >= d.K) continue;  // format padding past K never counts
        const __m256 w = bcast(v + r * g4.half + 2 * g + i);
        const float* b = P + (4 * g + p[i]) * LDP;
        SK_UNROLL for (int u = 0; u < NV; ++u)
          acc[r][u] = _mm256_fmadd_ps(w, _mm256_loadu_ps(b + 8 * u), acc[r][u]);
      }
    }
  }
  if (!last) {
    SK_UNROLL for (int r = 0; r < R; ++r)
      SK_UNROLL for (int u = 0; u < NV; ++u) _mm256_storeu_ps(t + r * ldt + 8 * u, acc[r][u]);
    return kOk;
  }
  if (d.ldy_m == 1 && d.ldy_n != 1) {  // column-major Y: columns of R rows (simd_avx2.h)
    alignas(32) float tile[R * 8 * NV];
    SK_UNROLL for (int r = 0; r < R; ++r) {
      const __m256 b = d.bias != nullptr ? _mm256_set1_ps(d.bias[(m + r) * d.bias_stride])
                                         : _mm256_setzero_ps();
      SK_UNROLL for (int u = 0; u < NV; ++u)
        _mm256_store_ps(tile + r * 8 * NV + 8 * u, _mm256_add_ps(acc[r][u], b));
    }
    store_tile_cols(tile, 8 * NV, R, min_i64(8 * NV, nb), d.Y + m + n0 * d.ldy_n, d.ldy_n);
    return kOk;
  }
  SK_UNROLL for (int r = 0; r < R; ++r) {
    const __m256 b = d.bias != nullptr ? _mm256_set1_ps(d.bias[(m + r) * d.bias_stride])
                                       : _mm256_setzero_ps();
    float* y = d.Y + (m + r) * d.ldy_m + n0 * d.ldy_n;
    SK_UNROLL for (int u = 0; u < NV; ++u)
      if (8 * u < nb)
        store_lanes(y + 8 * u * d.ldy_n, d.ldy_n, _mm256_add_ps(acc[r][u], b),
                    min_i64(8, nb - 8 * u));
  }
  return kOk;
}

// Rows [m0, m1) in blocks of about 16 rows (a multiple of the tile height R, so only a
// part's last rows fall back to one-row tiles).
template <typename T, int NV>
SK_AVX2 int panel_rows_avx2_nv(const T* values, const uint8_t* meta, const Dense& d,
                               const float* P, int64_t n0, int64_t nb, int64_t m0, int64_t m1) {
  // Rows per tile so that R * NV is 8 or more independent accumulators.
  constexpr int R = NV >= 4 ? 2 : NV == 3 ? 3 : NV == 2 ? 4 : 6;
  constexpr int64_t LDP = 8 * NV;
  constexpr int64_t kRowBlock = R * ((16 + R - 1) / R);  // rows whose sums stay in Tacc
  const Semi24Rows g4(d.K);
  // One K chunk: unlike BSR, L1-sized chunks measured no faster here (the kernel is bound by
  // its loads, not by where B's panel sits), so the chunk loop runs once.
  const int64_t gchunk = g4.G + (g4.G & 1);
  float* Tacc = scratch_tile().get_as<float>(kRowBlock * LDP);
  if (Tacc == nullptr) return kNoMemory;
  for (int64_t mb = m0; mb < m1; mb += kRowBlock) {
    const int64_t me = min_i64(mb + kRowBlock, m1);
    if (!meta_rows_valid_avx2(meta + mb * g4.mcols, me - mb, g4)) return kBadMeta;
    int64_t g0 = 0;
    do {
      const int64_t g1 = min_i64(g0 + gchunk, g4.G);
      const bool first = g0 == 0, last = g1 == g4.G;
      int64_t m = mb;
      for (; m + R <= me; m += R) {
        const int s = panel_tile_avx2<T, R, NV>(values + m * g4.half, meta + m * g4.mcols, g4, d,
                                                P, n0, nb, m, g0, g1, Tacc + (m - mb) * LDP, LDP,
                                                first, last);
        if (s != kOk) return s;
      }
      for (; m < me; ++m) {
        const int s = panel_tile_avx2<T, 1, NV>(values + m * g4.half, meta + m * g4.mcols, g4, d,
                                                P, n0, nb, m, g0, g1, Tacc + (m - mb) * LDP, LDP,
                                                first, last);
        if (s != kOk) return s;
      }
      g0 = g1;
    } while (g0 < g4.G);
  }
  return kOk;
}

template <typename T>
SK_AVX2 int panel_rows_avx2(const T* values, const uint8_t* meta, const Dense& d, const float* P,
                            int64_t ldp, int64_t n0, int64_t nb, int64_t m0, int64_t m1) {
  switch (ldp / 8) {
    case 1: return panel_rows_avx2_nv<T, 1>(values, meta, d, P, n0, nb, m0, m1);
    case 2: return panel_rows_avx2_nv<T, 2>(values, meta, d, P, n0, nb, m0, m1);
    case 3: return panel_rows_avx2_nv<T, 3>(values, meta, d, P, n0, nb, m0, m1);
    case 4: return panel_rows_avx2_nv<T, 4>(values, meta, d, P, n0, nb, m0, m1);
    default: return kBadArgument;
  }
}

#endif  // SK_HAVE_AVX2_KERNELS

// ----------------------------------------------------------------------------- AVX-512
#if SK_HAVE_AVX512_KERNELS

// The vpermt2ps indices of the 16 kept values of one metadata word (8 groups, 32 columns):
// value i sits in bits 2i..2i+1 of the word, its group at column 4 * (i / 2).
SK_AVX512_INLINE __m512i perm_indices(uint32_t word) {
  const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
  const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24,
                                         28, 28);
  const __m512i pos = _mm512_and_si512(
      _mm512_srlv_epi32(_mm512_set1_epi32(static_cast<int>(word)), shifts), _mm512_set1_epi32(3));
  return _mm512_add_epi32(pos, base);
}

// GEMV, R rows at a time: per 16 kept values (8 groups, 32 columns) one metadata word
// becomes the 16 vpermt2ps indices with a shift and a mask (value i of the word sits in bits
// 2i..2i+1, its group at column 4 * (i / 2)), so the 32 activations are loaded once for R
// rows and each row costs one values load, one broadcast and four vector ops. (The AVX2
// step spends 7 loads per 8 values, and this core issues about one 512-bit load per cycle.)
template <typename T, int R>
SK_AVX512_INLINE void gemv_tile_avx512(const T* v, const uint8_t* mt, const Semi24Rows& g4,
                                       const Dense& d, const float* x, int64_t m,
                                       NextTileFetch next_v = NextTileFetch(),
                                       NextTileFetch next_mt = NextTileFetch()) {
  const int64_t jfull = d.K / 8;  // metadata bytes whose 8 columns are all < K
  __m512 acc[R];
  SK_UNROLL for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 4 <= jfull; j += 4) {
    const __m512 xlo = _mm512_loadu_ps(x + 8 * j), xhi = _mm512_loadu_ps(x + 8 * j + 16);
    next_v.step();  // the next tile's rows into L2 (the only prefetch: see NextTileFetch)
    next_mt.step();
    SK_UNROLL for (int r = 0; r < R; ++r) {
      uint32_t word;
      std::memcpy(&word, mt + r * g4.mcols + j, 4);  // validated by the caller
      const __m512i idx = perm_indices(word);
      acc[r] = _mm512_fmadd_ps(load16(v + r * g4.half + 4 * j),
                               _mm512_permutex2var_ps(xlo, idx, xhi), acc[r]);
    }
  }
  SK_UNROLL for (int r = 0; r < R; ++r) {
    const T* vr = v + r * g4.half;
    const uint8_t* mr = mt + r * g4.mcols;
    __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(acc[r]),
                              _mm512_extractf32x8_ps(acc[r], 1));
    int64_t jj = j;
    for (; jj + 2 <= jfull; jj += 2) a8 = gemv_step16(vr, mr, x, jj, a8);
    store_out(d, m + r, 0, hsum(a8) + gemv_tail(vr, mr, x, 2 * jj, g4.G, d.K));
  }
}

// `fetch`: the next tile's rows into L2 while this one runs (fetch_next_tiles, isa.h).
template <typename T>
SK_AVX512 int gemv_rows_avx512(const T* values, const uint8_t* meta, const Dense& d,
                               const float* x, int64_t m0, int64_t m1, bool fetch = true) {
  constexpr int R = 4;  // rows sharing one load of the activations (2, 4 and 8 measured alike)
  const Semi24Rows g4(d.K);
  int64_t m = m0;
  for (; m + R <= m1; m += R) {
    // The rows' metadata is checked first (vectorized; it then sits in L1 for the loop).
    if (!meta_rows_valid_avx2(meta + m * g4.mcols, R, g4)) return kBadMeta;
    const int64_t nr = fetch ? min_i64(R, m1 - m - R) : 0;  // the next rows (<= 0: none)
    const int64_t steps = d.K / 32;
    gemv_tile_avx512<T, R>(values + m * g4.half, meta + m * g4.mcols, g4, d, x, m,
                           next_rows(values + (m + R) * g4.half, g4.half, nr, steps),
                           next_rows(meta + (m + R) * g4.mcols, g4.mcols, nr, steps));
  }
  for (; m < m1; ++m) {
    if (!meta_rows_valid_avx2(meta + m * g4.mcols, 1, g4)) return kBadMeta;
    gemv_tile_avx512<T, 1>(values + m * g4.half, meta + m * g4.mcols, g4, d, x, m);
  }
  return kOk;
}

// Small N (2..kSmallN columns of B, each contiguous in k: column c at X + c * ldx): the
// GEMV's permutation once per 16 kept values and row, applied to each column. The batched
// kernel would broadcast every kept weight into a zmm only N of whose 16 lanes count.
template <typename T, int R, int NC>
SK_AVX512_INLINE void gemvn_tile_avx512(const T* v, const uint8_t* mt, const Semi24Rows& g4,
                                        const Dense& d, const float* X, int64_t ldx,
                                        int64_t m, NextTileFetch next_v = NextTileFetch(),
                                        NextTileFetch next_mt = NextTileFetch()) {
  const int64_t jfull = d.K / 8;  // metadata bytes whose 8 columns are all < K
  __m512 acc[R][NC];
  SK_UNROLL for (int r = 0; r < R; ++r)
    SK_UNROLL for (int c = 0; c < NC; ++c) acc[r][c] = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 4 <= jfull; j += 4) {
    __m512i idx[R];
    __m512 w[R];
    next_v.step();  // the next tile's rows into L2 (see NextTileFetch; 4-row tiles only)
    next_mt.step();
    SK_UNROLL for (int r = 0; r < R; ++r) {
      if (R < 4)  // 1-2 row streams: each row's own prefetch (the next-tile fetch measured mixed)
        _mm_prefetch(reinterpret_cast<const char*>(v + r * g4.half + 4 * j) + kPrefetchBytes512,
                     _MM_HINT_T0);
      uint32_t word;
      std::memcpy(&word, mt + r * g4.mcols + j, 4);  // validated by the caller
      idx[r] = perm_indices(word);
      w[r] = load16(v + r * g4.half + 4 * j);
    }
    SK_UNROLL for (int c = 0; c < NC; ++c) {
      const float* xc = X + c * ldx + 8 * j;
      const __m512 xlo = _mm512_loadu_ps(xc), xhi = _mm512_loadu_ps(xc + 16);
      SK_UNROLL for (int r = 0; r < R; ++r)
        acc[r][c] = _mm512_fmadd_ps(w[r], _mm512_permutex2var_ps(xlo, idx[r], xhi), acc[r][c]);
    }
  }
  SK_UNROLL for (int r = 0; r < R; ++r) {
    const T* vr = v + r * g4.half;
    const uint8_t* mr = mt + r * g4.mcols;
    SK_UNROLL for (int c = 0; c < NC; ++c) {
      const float* xc = X + c * ldx;
      __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(acc[r][c]),
                                _mm512_extractf32x8_ps(acc[r][c], 1));
      int64_t jj = j;
      for (; jj + 2 <= jfull; jj += 2) a8 = gemv_step16(vr, mr, xc, jj, a8);
      store_out(d, m + r, c, hsum(a8) + gemv_tail(vr, mr, xc, 2 * jj, g4.G, d.K));
    }
  }
}

template <typename T, int NC>
SK_AVX512 int gemvn_rows_avx512_nc(const T* values, const uint8_t* meta, const Dense& d,
                                   const float* X, int64_t ldx, int64_t m0, int64_t m1,
                                   bool fetch) {
  constexpr int R = NC <= 4 ? 4 : 2;  // R * NC accumulators, R index and R value registers
  const Semi24Rows g4(d.K);
  int64_t m = m0;
  for (; m + R <= m1; m += R) {
    if (!meta_rows_valid_avx2(meta + m * g4.mcols, R, g4)) return kBadMeta;
    // The next 4-row tile into L2 (2 threads, from memory, old / new ms: N=2 4096² 1.41 /
    // 0.98, 3072x768 0.29 / 0.15; N=8 (2-row tiles) 3072x768 0.30 / 0.30-0.39, so not there).
    const int64_t nr = R >= 4 && fetch ? min_i64(R, m1 - m - R) : 0;  // next rows (<= 0: none)
    const int64_t steps = d.K / 32;
    gemvn_tile_avx512<T, R, NC>(
        values + m * g4.half, meta + m * g4.mcols, g4, d, X, ldx, m,
        next_rows(values + (m + R) * g4.half, g4.half, nr, steps),
        next_rows(meta + (m + R) * g4.mcols, g4.mcols, nr, steps));
  }
  for (; m < m1; ++m) {
    if (!meta_rows_valid_avx2(meta + m * g4.mcols, 1, g4)) return kBadMeta;
    gemvn_tile_avx512<T, 1, NC>(values + m * g4.half, meta + m * g4.mcols, g4, d, X, ldx, m);
  }
  return kOk;
}

template <typename T>
int gemvn_rows_avx512(const T* values, const uint8_t* meta, const Dense& d, const float* X,
                      int64_t ldx, int64_t m0, int64_t m1, bool fetch = true) {
  switch (d.N) {
    case 2: return gemvn_rows_avx512_nc<T, 2>(values, meta, d, X, ldx, m0, m1, fetch);
    case 3: return gemvn_rows_avx512_nc<T, 3>(values, meta, d, X, ldx, m0, m1, fetch);
    case 4: return gemvn_rows_avx512_nc<T, 4>(values, meta, d, X, ldx, m0, m1, fetch);
    case 5: return gemvn_rows_avx512_nc<T, 5>(values, meta, d, X, ldx, m0, m1, fetch);
    case 6: return gemvn_rows_avx512_nc<T, 6>(values, meta, d, X, ldx, m0, m1, fetch);
    case 7: return gemvn_rows_avx512_nc<T, 7>(values, meta, d, X, ldx, m0, m1, fetch);
    case 8: return gemvn_rows_avx512_nc<T, 8>(values, meta, d, X, ldx, m0, m1, fetch);
    default: return kBadArgument;  // more columns: lor_rows_avx512
  }
}

// Lanes over rows (kLorMinN..kLorMaxN columns of B): the zmm lanes run over 16 weight rows instead
// of over the columns of B, so every lane counts and no weight is broadcast. Each 16-row block
// is transposed at every call, a K chunk at a time, into the worker's scratch (per kept slot,
// the 16 rows' values in one zmm; per 8 groups, the 16 rows' metadata words); then for each
// column of B the 16 activations of 4 groups are loaded once and every row picks its kept ones
// with one vpermps. Nothing is kept between calls: the weight is read as stored every time.
// (Zen 5, 2 threads, MiniLM's layers in the model's order: 1.05-1.56x the kernels it replaced;
// bench/results/semi24-lanes-over-rows-2026-12-07.)
constexpr int64_t kLorRows = 16;
constexpr int64_t kLorChunkGroups = 128;  // groups per K chunk: 16 KB of transposed values
// Up to this many columns (from kLorMinN) one block at a time: past it, B's columns no longer
// stay in L1/L2 while a block's passes read them, and the 64-column panels were as fast (2
// threads, MiniLM shapes: 1.24-1.6x the panels at 17-24 columns, 1.1-1.3x at 32-64, the same
// at 96-512); past it lor_panels_avx512 runs panels of blocks that share B's columns in L1.
constexpr int64_t kLorMaxN = 64;
// From this many columns on (below it the GEMV's permutation per column, gemvn_rows_avx512):
// 2 threads, MiniLM shapes in the model's order, 3 runs, 1.1-1.2x at 8 columns and ~1.1x at
// 7; at 5-6 the same, at 2-4 0.85-0.9x (the transposition is shared by too few columns).
constexpr int64_t kLorMinN = 7;

// Groups [g0, g1) (g0 a multiple of 8) of `rows` (1..16) rows from v / mt into the scratch:
// sv[(2 * (g - g0) + s) * 16 + l] = row l's kept value s of group g, as a float (0 for rows >=
// `rows` and groups >= G); sw[((g - g0) / 8) * 16 + l] = row l's metadata word of groups g..g+7
// (bytes past the row's last are 0). The `next` rows after the block are fetched meanwhile.
template <typename T>
SK_AVX512_INLINE void lor_transpose(const T* v, const uint8_t* mt, const Semi24Rows& g4,
                                    int64_t rows, int64_t next, int64_t g0, int64_t g1,
                                    float* sv, uint32_t* sw) {
  for (int64_t l = 0; l < next; ++l)  // the next block's metadata of this chunk (64 bytes)
    _mm_prefetch(reinterpret_cast<const char*>(mt + (kLorRows + l) * g4.mcols + g0 / 2),
                 _MM_HINT_T0);
  for (int64_t g = g0; g < g1; g += 8) {
    const bool whole = rows == kLorRows && g + 8 <= g4.G && g / 2 + 4 <= g4.mcols;
    __m512 r[16];
    uint32_t* w = sw + ((g - g0) / 8) * 16;
    if (whole) {  // the common step: no masks, no branches
      SK_UNROLL for (int l = 0; l < 16; ++l) {
        r[l] = load16(v + l * g4.half + 2 * g);
        std::memcpy(w + l, mt + l * g4.mcols + g / 2, 4);
      }
    } else {
      const int64_t count = min_i64(16, g4.half - 2 * g);  // stored values of groups g..g+7
      const int64_t bytes = min_i64(4, g4.mcols - g / 2);
      for (int64_t l = 0; l < 16; ++l) {
        r[l] = l < rows ? load16_first(v + l * g4.half + 2 * g, count) : _mm512_setzero_ps();
        uint32_t word = 0;
        const uint8_t* p = mt + l * g4.mcols + g / 2;
        for (int64_t i = 0; l < rows && i < bytes; ++i)
          word |= static_cast<uint32_t>(p[i]) << (8 * i);
        w[l] = word;
      }
    }
    // The next block's rows, one line per row per step: without it the 16 row streams wait
    // on the LLC (probe, 36 MiniLM layers in turn: 0.87-0.94x -> 1.08-1.16x the panel).
    for (int64_t l = 0; l < next; ++l)
      _mm_prefetch(reinterpret_cast<const char*>(v + (kLorRows + l) * g4.half + 2 * g),
                   _MM_HINT_T0);
    transpose16x16(r);
    float* o = sv + 2 * (g - g0) * 16;
    SK_UNROLL for (int q = 0; q < 16; ++q) _mm512_store_ps(o + 16 * q, r[q]);
  }
}

// acc[n] += the 8 kept slots of the 4 groups at g (16 columns from column kw = 4 g) times
// column n's activations there; w holds the groups' metadata at bit 16 * HI. Each half (2
// groups) loads its 8 activations per column anew: one load per 4 FMAs, and the compiler
// does not keep 16 columns' activations live beside the 16 sums. TAIL: the window reaches
// past K, so activations past K are not loaded and kept values there never count.
template <int NB, int HI, bool TAIL>
SK_AVX512_INLINE void lor_window(const float* vq, __m512i w, const float* X, int64_t ldx,
                                 int64_t kw, int64_t K, __m512* acc) {
  SK_UNROLL for (int h = 0; h < 2; ++h) {
    const int64_t left = K - kw - 8 * h;  // columns of this half inside K (TAIL only)
    const __mmask8 xm = TAIL ? (left >= 8 ? 0xff : left <= 0 ? 0 : (1u << left) - 1u) : 0xff;
    const __m512i lim = _mm512_set1_epi32(static_cast<int>(TAIL ? (left < 0 ? 0 : left) : 8));
    __m512 vv[4];
    __m512i ii[4];
    SK_UNROLL for (int s = 0; s < 4; ++s) {
      const int q = 4 * h + s;  // group q / 2 of the window, kept value q % 2
      ii[s] = _mm512_add_epi32(
          _mm512_and_si512(_mm512_srli_epi32(w, 16 * HI + 2 * q), _mm512_set1_epi32(3)),
          _mm512_set1_epi32(4 * ((q >> 1) & 1)));
      vv[s] = _mm512_load_ps(vq + 16 * q);
      if (TAIL) vv[s] = _mm512_maskz_mov_ps(_mm512_cmplt_epi32_mask(ii[s], lim), vv[s]);
    }
    SK_UNROLL for (int n = 0; n < NB; ++n) {
      const float* xn = X + n * ldx + kw + 8 * h;
      // 8 activations in the low half; the indices (< 8) never pick the upper one.
      const __m512 xz = _mm512_castps256_ps512(TAIL ? _mm256_maskz_loadu_ps(xm, xn)
                                                    : _mm256_loadu_ps(xn));
      SK_UNROLL for (int s = 0; s < 4; ++s)
        acc[n] = _mm512_fmadd_ps(vv[s], _mm512_permutexvar_ps(ii[s], xz), acc[n]);
    }
  }
}

// The transposed groups [g0, g1) times the NB columns of X (column n at X + n * ldx, K floats):
// t[n * 16 + l] (row l of the block, column n) starts at 0 when `first`, else accumulates.
template <int NB>
SK_AVX512 void lor_chunk(const float* sv, const uint32_t* sw, const float* X, int64_t ldx,
                         int64_t K, int64_t g0, int64_t g1, float* t, bool first) {
  __m512 acc[NB];
  SK_UNROLL for (int n = 0; n < NB; ++n)
    acc[n] = first ? _mm512_setzero_ps() : _mm512_load_ps(t + 16 * n);
  for (int64_t g = g0; g < g1; g += 8) {
    const __m512i w = _mm512_load_si512(sw + ((g - g0) / 8) * 16);
    const float* vq = sv + 2 * (g - g0) * 16;
    if (4 * g + 32 <= K) {  // both windows inside K
      lor_window<NB, 0, false>(vq, w, X, ldx, 4 * g, K, acc);
      lor_window<NB, 1, false>(vq + 8 * 16, w, X, ldx, 4 * g + 16, K, acc);
      continue;
    }
    if (4 * g + 16 <= K)
      lor_window<NB, 0, false>(vq, w, X, ldx, 4 * g, K, acc);
    else
      lor_window<NB, 0, true>(vq, w, X, ldx, 4 * g, K, acc);
    if (g + 4 < g1) lor_window<NB, 1, true>(vq + 8 * 16, w, X, ldx, 4 * g + 16, K, acc);
  }
  SK_UNROLL for (int n = 0; n < NB; ++n) _mm512_store_ps(t + 16 * n, acc[n]);
}

SK_AVX512 void lor_chunk_n(int64_t N, const float* sv, const uint32_t* sw, const float* X,
                           int64_t ldx, int64_t K, int64_t g0, int64_t g1, float* t, bool first) {
  switch (N) {
    case 7: return lor_chunk<7>(sv, sw, X, ldx, K, g0, g1, t, first);
    case 8: return lor_chunk<8>(sv, sw, X, ldx, K, g0, g1, t, first);
    case 9: return lor_chunk<9>(sv, sw, X, ldx, K, g0, g1, t, first);
    case 10: return lor_chunk<10>(sv, sw, X, ldx, K, g0, g1, t, first);
    case 11: return lor_chunk<11>(sv, sw, X, ldx, K, g0, g1, t, first);
    case 12: return lor_chunk<12>(sv, sw, X, ldx, K, g0, g1, t, first);
    case 13: return lor_chunk<13>(sv, sw, X, ldx, K, g0, g1, t, first);
    case 14: return lor_chunk<14>(sv, sw, X, ldx, K, g0, g1, t, first);
    case 15: return lor_chunk<15>(sv, sw, X, ldx, K, g0, g1, t, first);
    default: return lor_chunk<16>(sv, sw, X, ldx, K, g0, g1, t, first);
  }
}

// Y (+ bias) of rows [m, m + rows) and columns [c0, c0 + nc) from the block's sums t (column
// c0 + n's 16 rows at t + 16 n).
SK_AVX512 void lor_store(const Dense& d, int64_t m, int64_t rows, int64_t c0, int64_t nc,
                         const float* t) {
  alignas(64) float bias[16] = {};
  if (d.bias != nullptr)
    for (int64_t l = 0; l < rows; ++l) bias[l] = d.bias[(m + l) * d.bias_stride];
  const __m512 b = _mm512_load_ps(bias);
  for (int64_t n = 0; n < nc; ++n)
    store_lanes16(d.Y + m * d.ldy_m + (c0 + n) * d.ldy_n, d.ldy_m,
                  _mm512_add_ps(_mm512_load_ps(t + 16 * n), b), rows);
}

// Rows [m0, m1) for kLorMinN..kLorMaxN columns of B (column n contiguous at X + n * ldx): each
// transposed chunk serves every pass of columns.
template <typename T>
SK_AVX512 int lor_rows_avx512(const T* values, const uint8_t* meta, const Dense& d,
                              const float* X, int64_t ldx, int64_t m0, int64_t m1) {
  if (d.N < kLorMinN || d.N > kLorMaxN) return kBadArgument;
  // Columns of B in passes of at most 16, sizes within one of each other (7..16 each).
  const int passes = static_cast<int>(ceil_div(d.N, 16));
  int64_t pc[kLorMaxN / 16 + 1];  // pass q: columns [pc[q], pc[q + 1])
  split_even(d.N, passes, pc);
  const Semi24Rows g4(d.K);
  constexpr int64_t kValues = kLorChunkGroups * 2 * 16, kWords = kLorChunkGroups / 8 * 16;
  float* sv = scratch_tile().get_as<float>(kValues + kWords + passes * 16 * 16);
  if (sv == nullptr) return kNoMemory;
  uint32_t* sw = reinterpret_cast<uint32_t*>(sv + kValues);
  float* t = sv + kValues + kWords;
  for (int64_t m = m0; m < m1; m += kLorRows) {
    const int64_t rows = min_i64(kLorRows, m1 - m);
    const int64_t next = min_i64(kLorRows, m1 - m - rows);
    if (!meta_rows_valid_avx2(meta + m * g4.mcols, rows, g4)) return kBadMeta;
    int64_t g0 = 0;
    do {  // K = 0 runs once: the sums start (and stay) at 0
      const int64_t g1 = min_i64(g0 + kLorChunkGroups, g4.G);
      lor_transpose<T>(values + m * g4.half, meta + m * g4.mcols, g4, rows, next, g0, g1, sv, sw);
      for (int q = 0; q < passes; ++q)
        lor_chunk_n(pc[q + 1] - pc[q], sv, sw, X + pc[q] * ldx, ldx, d.K, g0, g1, t + q * 256,
                    g0 == 0);
      g0 = g1;
    } while (g0 < g4.G);
    for (int q = 0; q < passes; ++q)
      lor_store(d, m, rows, pc[q], pc[q + 1] - pc[q], t + q * 256);
  }
  return kOk;
}

// Past kLorMaxN columns: the same blocks, kLorPanelBlocks of them at a time over K chunks of
// kLorPanelChunk groups, so that a pass's columns of B over the chunk (16 x 256 floats, 16 KB)
// stay in L1 while every block of the panel uses them; B's columns in slices of at most
// kLorSlice (the sums of a panel's blocks wait in the scratch, 16 KB per block). Each slice
// transposes the panel's weights again (~2% of its multiply-adds); nothing is kept between
// calls. (2 threads, Zen 5, against the packed panels: MiniLM's 36 layers in turn 1.20-1.27x
// at 65-512 columns, the same at 1024-2048; Llama-7B MLP shapes 1.23-1.48x at 96-512;
// bench/results/semi24-lor-panels-2026-12-07.)
constexpr int64_t kLorPanelBlocks = 8;
constexpr int64_t kLorPanelChunk = 64;
constexpr int64_t kLorSlice = 256;

template <typename T>
SK_AVX512 int lor_panel_slice(const T* values, const uint8_t* meta, const Dense& d,
                              const float* X, int64_t ldx, int64_t c0, int64_t nc, int64_t m0,
                              int64_t m1) {
  const int passes = static_cast<int>(ceil_div(nc, 16));
  int64_t pc[kLorSlice / 16 + 1];  // pass q: columns c0 + [pc[q], pc[q + 1])
  split_even(nc, passes, pc);
  const Semi24Rows g4(d.K);
  constexpr int64_t kValues = kLorPanelChunk * 2 * 16, kBlock = kValues + kLorPanelChunk / 8 * 16;
  float* s = scratch_tile().get_as<float>(kLorPanelBlocks * (kBlock + passes * 256));
  if (s == nullptr) return kNoMemory;
  float* tiles = s + kLorPanelBlocks * kBlock;  // block b, pass q: tiles + (b * passes + q) * 256
  for (int64_t mp = m0; mp < m1; mp += kLorRows * kLorPanelBlocks) {
    const int64_t me = min_i64(mp + kLorRows * kLorPanelBlocks, m1);
    const int nb = static_cast<int>(ceil_div(me - mp, kLorRows));
    if (!meta_rows_valid_avx2(meta + mp * g4.mcols, me - mp, g4)) return kBadMeta;
    int64_t g0 = 0;
    do {  // K = 0 runs once: the sums start (and stay) at 0
      const int64_t g1 = min_i64(g0 + kLorPanelChunk, g4.G);
      for (int b = 0; b < nb; ++b) {
        const int64_t m = mp + b * kLorRows, rows = min_i64(kLorRows, me - m);
        float* sv = s + b * kBlock;
        lor_transpose<T>(values + m * g4.half, meta + m * g4.mcols, g4, rows,
                         min_i64(kLorRows, m1 - m - rows), g0, g1, sv,
                         reinterpret_cast<uint32_t*>(sv + kValues));
      }
      for (int q = 0; q < passes; ++q)
        for (int b = 0; b < nb; ++b) {
          const float* sv = s + b * kBlock;
          lor_chunk_n(pc[q + 1] - pc[q], sv, reinterpret_cast<const uint32_t*>(sv + kValues),
                      X + (c0 + pc[q]) * ldx, ldx, d.K, g0, g1,
                      tiles + (b * passes + q) * 256, g0 == 0);
        }
      g0 = g1;
    } while (g0 < g4.G);
    for (int q = 0; q < passes; ++q)  // Y's columns in turn, each one's rows in order
      for (int b = 0; b < nb; ++b) {
        const int64_t m = mp + b * kLorRows, rows = min_i64(kLorRows, me - m);
        lor_store(d, m, rows, c0 + pc[q], pc[q + 1] - pc[q], tiles + (b * passes + q) * 256);
      }
  }
  return kOk;
}

// Hybrid blocks past kLorMaxN columns: a lanes-over-rows block feeds every multiply-add by a
// vpermps, which shares the vector pipes with the FMAs, while a packed-panel row feeds them by
// loads. One loop body that runs both (a 16-row block over 8 columns of B, and 2 rows in panel
// form over 64 columns, the same number of multiply-adds) keeps the FMA pipes busier than
// either alone (Zen 5 in-L1 loop probe: 1.88 FMA per cycle against 1.36 for the permute-fed
// loop and 1.12 for the load-fed one). A pair unit is a 16-row block (rows [mA, mA + 16))
// and 16 panel-form rows ([mB, mB + 16)); its 64 columns are 8 sub-tasks (8 block columns and
// 2 panel rows each). Only K a multiple of 32 (whole metadata words); the rest runs the
// lanes-over-rows panels.
constexpr int64_t kHybChunk = 16;  // groups per K chunk: 16 KB of the panel, 16 KB of B's columns
constexpr int64_t kHybCols = 64;   // columns of B per sub-slice
// Pair units per row panel: as many as keep the panel's sums (8 KB per unit and 64-column
// sub-slice) within 256 KB of L2, 4 to 16 (2 threads, Zen 5, against 4 / 8 / 16 fixed: 16 best
// at 512 columns, 8 at 2048).
constexpr int64_t kHybUnitsMax = 16;
inline int64_t hyb_units(int64_t nsub) { return max_i64(4, min_i64(kHybUnitsMax, 32 / nsub)); }

// The 64 columns of X (column n contiguous at X + n * ldx) over k in [0, K) (K a multiple of
// 16, at most kHybChunk * 4), twice: as rows of a panel, P[k * 64 + n], and as contiguous
// columns, C[n * kHybK + k]. (Read in place, 64 columns of a B whose columns lie 6 KB apart,
// as at K = 1536, fall into two L1 sets' worth of lines each and evict each other.)
constexpr int64_t kHybK = kHybChunk * 4;
SK_AVX512 void hyb_pack(const float* X, int64_t ldx, int64_t K, float* P, float* C) {
  for (int64_t k = 0; k < K; k += 16)
    for (int64_t cb = 0; cb < kHybCols; cb += 16) {
      __m512 r[16];
      SK_UNROLL for (int i = 0; i < 16; ++i) {
        r[i] = _mm512_loadu_ps(X + (cb + i) * ldx + k);
        _mm512_store_ps(C + (cb + i) * kHybK + k, r[i]);
      }
      transpose16x16(r);
      SK_UNROLL for (int i = 0; i < 16; ++i) _mm512_store_ps(P + (k + i) * kHybCols + cb, r[i]);
    }
}

// One sub-task over groups [g0, g1) (multiples of 8) of the chunk: the block's transposed
// values sv / words sw (lor_transpose) times the chunk's 8 columns C + n * kHybK (k - 4 g0),
// into la[n] (16 rows each); and panel-form rows v / mt (2 rows, row stride g4.half /
// g4.mcols) times the chunk's panel P (row k at P + (k - 4 g0) * 64), into row r's 64 sums at
// pa + r * ldpa. `first` starts the sums at 0.
template <typename T>
SK_AVX512 void hyb_step(const float* sv, const uint32_t* sw, const float* C, const T* v,
                        const uint8_t* mt, const Semi24Rows& g4, const float* P, int64_t g0,
                        int64_t g1, float* la, float* pa, int64_t ldpa, bool first) {
  __m512 lacc[8], pacc[8];
  SK_UNROLL for (int i = 0; i < 8; ++i) {
    lacc[i] = first ? _mm512_setzero_ps() : _mm512_load_ps(la + 16 * i);
    pacc[i] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(pa + (i / 4) * ldpa + 16 * (i % 4));
  }
  for (int64_t g = g0; g < g1; g += 8) {
    const __m512i w = _mm512_load_si512(sw + ((g - g0) / 8) * 16);
    SK_UNROLL for (int jj = 0; jj < 4; ++jj) {  // metadata byte j = g / 2 + jj: groups 2j, 2j+1
      const int64_t j = g / 2 + jj;
      const float* vq = sv + 2 * (g + 2 * jj - g0) * 16;
      __m512 vv[4];
      __m512i ii[4];
      SK_UNROLL for (int q = 0; q < 4; ++q) {
        ii[q] = _mm512_add_epi32(
            _mm512_and_si512(_mm512_srli_epi32(w, 8 * jj + 2 * q), _mm512_set1_epi32(3)),
            _mm512_set1_epi32(4 * (q >> 1)));
        vv[q] = _mm512_load_ps(vq + 16 * q);
      }
      SK_UNROLL for (int n = 0; n < 8; ++n) {
        const __m512 xz =
            _mm512_castps256_ps512(_mm256_load_ps(C + n * kHybK + 8 * j - 4 * g0));
        SK_UNROLL for (int q = 0; q < 4; ++q)
          lacc[n] = _mm512_fmadd_ps(vv[q], _mm512_permutexvar_ps(ii[q], xz), lacc[n]);
      }
      const float* pj = P + (8 * j - 4 * g0) * kHybCols;
      SK_UNROLL for (int r = 0; r < 2; ++r) {
        const unsigned b = mt[r * g4.mcols + j];  // validated by the caller
        const float* p[4] = {pj + (b & 3) * kHybCols, pj + ((b >> 2) & 3) * kHybCols,
                             pj + (4 + ((b >> 4) & 3)) * kHybCols, pj + (4 + (b >> 6)) * kHybCols};
        const T* wr = v + r * g4.half + 4 * j;
        SK_UNROLL for (int i = 0; i < 4; ++i) {
          const __m512 wi = bcast16(wr + i);
          SK_UNROLL for (int u = 0; u < 4; ++u)
            pacc[4 * r + u] = _mm512_fmadd_ps(wi, _mm512_loadu_ps(p[i] + 16 * u), pacc[4 * r + u]);
        }
      }
    }
  }
  SK_UNROLL for (int i = 0; i < 8; ++i) {
    _mm512_store_ps(la + 16 * i, lacc[i]);
    _mm512_storeu_ps(pa + (i / 4) * ldpa + 16 * (i % 4), pacc[i]);
  }
}

// Y (+ bias) of the panel-form rows [m, m + 16) and columns [c0 + cb0, c0 + cb1) (cb0, cb1
// multiples of 16) from their sums (row l at t + l * nh).
SK_AVX512 void hyb_store_rows(const Dense& d, int64_t m, int64_t c0, int64_t nh, const float* t,
                              int64_t cb0, int64_t cb1) {
  for (int64_t cb = cb0; cb < cb1; cb += 16) {
    __m512 r[16];
    SK_UNROLL for (int l = 0; l < 16; ++l) {
      const __m512 b = d.bias != nullptr ? _mm512_set1_ps(d.bias[(m + l) * d.bias_stride])
                                         : _mm512_setzero_ps();
      r[l] = _mm512_add_ps(_mm512_load_ps(t + l * nh + cb), b);
    }
    if (d.ldy_m == 1) {  // column-major Y: 16 rows of a column are contiguous
      transpose16x16(r);
      SK_UNROLL for (int i = 0; i < 16; ++i)
        _mm512_storeu_ps(d.Y + m + (c0 + cb + i) * d.ldy_n, r[i]);
    } else {
      SK_UNROLL for (int l = 0; l < 16; ++l)
        store_lanes16(d.Y + (m + l) * d.ldy_m + (c0 + cb) * d.ldy_n, d.ldy_n, r[l], 16);
    }
  }
}

// Rows [m0, m0 + 32 * units) x columns [c0, c0 + nh) (nh a multiple of 64, K a multiple of
// 32), in row panels of up to hyb_units(nsub) pair units: per unit u, the block at mp + 16 u
// and the panel-form rows at mp + 16 (nu + u), nu the panel's units. Per K chunk, each 64-column
// sub-slice of B is packed once (16 KB, it stays in L1) and serves every unit of the panel;
// the units' sums wait in the scratch between chunks.
template <typename T>
SK_AVX512 int hyb_slice(const T* values, const uint8_t* meta, const Dense& d, const float* X,
                        int64_t ldx, int64_t c0, int64_t nh, int64_t m0, int64_t units) {
  const Semi24Rows g4(d.K);
  const int64_t nsub = nh / kHybCols, per_panel = hyb_units(nsub);
  constexpr int64_t kValues = kHybChunk * 2 * 16, kBlock = kValues + kHybChunk / 8 * 16;
  constexpr int64_t kPanel = kHybK * kHybCols;  // the chunk's panel, then its columns
  const int64_t lor_tiles = kHybUnitsMax * nsub * 8 * 128;  // unit, sub-slice, sub-task: 8 x 16
  float* s = scratch_tile().get_as<float>(
      2 * kPanel + kHybUnitsMax * kBlock + lor_tiles + kHybUnitsMax * 16 * nh);
  if (s == nullptr) return kNoMemory;
  float *P = s, *C = s + kPanel;
  float* lt = s + 2 * kPanel + kHybUnitsMax * kBlock;
  float* pt = lt + lor_tiles;  // unit u's panel-form row l: pt + (u * 16 + l) * nh
  for (int64_t u0 = 0; u0 < units; u0 += per_panel) {
    const int64_t nu = min_i64(per_panel, units - u0), mp = m0 + 32 * u0;
    if (!meta_rows_valid_avx2(meta + mp * g4.mcols, 32 * nu, g4)) return kBadMeta;
    for (int64_t g0 = 0; g0 < g4.G; g0 += kHybChunk) {
      const int64_t g1 = min_i64(g0 + kHybChunk, g4.G);
      for (int64_t u = 0; u < nu; ++u) {
        float* sv = s + 2 * kPanel + u * kBlock;
        lor_transpose<T>(values + (mp + 16 * u) * g4.half, meta + (mp + 16 * u) * g4.mcols, g4,
                         kLorRows, kLorRows, g0, g1, sv, reinterpret_cast<uint32_t*>(sv + kValues));
      }
      for (int64_t q = 0; q < nsub; ++q) {
        hyb_pack(X + (c0 + q * kHybCols) * ldx + 4 * g0, ldx, 4 * (g1 - g0), P, C);
        for (int64_t u = 0; u < nu; ++u) {
          const float* sv = s + 2 * kPanel + u * kBlock;
          const int64_t mb = mp + 16 * (nu + u);  // the unit's panel-form rows
          for (int st = 0; st < 8; ++st)
            hyb_step<T>(sv, reinterpret_cast<const uint32_t*>(sv + kValues), C + 8 * st * kHybK,
                        values + (mb + 2 * st) * g4.half, meta + (mb + 2 * st) * g4.mcols,
                        g4, P, g0, g1, lt + ((u * nsub + q) * 8 + st) * 128,
                        pt + (u * 16 + 2 * st) * nh + q * kHybCols, nh, g0 == 0);
        }
      }
    }
    // Y (column-major, as nn.Linear's x.t() gives it) 16 columns at a time across the units,
    // each column's 32 * nu rows in order: the lines the stores fetch follow one another (unit
    // by unit, each store fetched a line M floats past the last; 1536x384 at N = 512 1.10x,
    // 3072x768 1.05-1.07x, the same bits; bench/results/semi24-store-order-2026-12-07).
    for (int64_t cb = 0; cb < nh; cb += 16) {
      for (int64_t u = 0; u < nu; ++u)
        for (int64_t h = 0; h < 16; h += 8)
          lor_store(d, mp + 16 * u, kLorRows, c0 + cb + h, 8,
                    lt + ((u * nsub + (cb + h) / kHybCols) * 8 + (cb + h) % kHybCols / 8) * 128);
      for (int64_t u = 0; u < nu; ++u)
        hyb_store_rows(d, mp + 16 * (nu + u), c0, nh, pt + u * 16 * nh, cb, cb + 16);
    }
  }
  return kOk;
}

// Rows [m0, m1) (m0 a multiple of 16) for more than kLorMaxN columns of B (column n
// contiguous at X + n * ldx), in slices of at most kLorSlice columns (sizes within one).
template <typename T>
SK_AVX512 int lor_panels_avx512(const T* values, const uint8_t* meta, const Dense& d,
                                const float* X, int64_t ldx, int64_t m0, int64_t m1) {
  if (d.N <= kLorMaxN) return kBadArgument;
  const int64_t slices = ceil_div(d.N, kLorSlice);
  for (int64_t q = 0, c0 = 0; q < slices; ++q) {
    const int64_t nc = (d.N - c0) / (slices - q);
    const int s = lor_panel_slice<T>(values, meta, d, X, ldx, c0, nc, m0, m1);
    if (s != kOk) return s;
    c0 += nc;
  }
  return kOk;
}

// Rows [m0, m1) (m0 a multiple of 16) for the columns [c0, c1) of B (c1 - c0 >= 64; K a
// multiple of 32): the hybrid blocks on whole pair units of rows and 64-column sub-slices, the
// lanes-over-rows panels on the rest (the last rows, fewer than 32, and the last columns).
template <typename T>
SK_AVX512 int hyb_part_avx512(const T* values, const uint8_t* meta, const Dense& d,
                              const float* X, int64_t ldx, int64_t m0, int64_t m1, int64_t c0,
                              int64_t c1) {
  const int64_t units = (m1 - m0) / 32, mh = m0 + 32 * units, nc = c1 - c0;
  int64_t nh = nc / kHybCols * kHybCols;
  if (nc > nh && nc - nh < kLorMinN) nh -= kHybCols;  // the LOR passes need 7+ columns
  if (units == 0) nh = 0;
  int s = kOk;
  for (int64_t c = c0; s == kOk && c < c0 + nh; c += kLorSlice)
    s = hyb_slice<T>(values, meta, d, X, ldx, c, min_i64(kLorSlice, c0 + nh - c), m0, units);
  if (s == kOk && nc > nh && nh > 0)
    s = lor_panel_slice<T>(values, meta, d, X, ldx, c0 + nh, nc - nh, m0, mh);
  const int64_t rest = nh > 0 ? mh : m0;  // the first row the hybrid blocks did not cover
  if (s != kOk || rest == m1) return s;
  const int64_t slices = ceil_div(nc, kLorSlice);
  for (int64_t q = 0, c = c0; s == kOk && q < slices; ++q) {
    const int64_t w = (c1 - c) / (slices - q);
    s = lor_panel_slice<T>(values, meta, d, X, ldx, c, w, rest, m1);
    c += w;
  }
  return s;
}

// panel_tile_avx2 with zmm: R rows x NV zmm of a panel whose row stride is 16 * NV, over the
// groups [g0, g1) of one K chunk. Each panel row is a memory operand of its FMA. Each kept
// weight is broadcast straight from memory (REG false: a load, no shuffle; NV + 1 loads per
// NV multiply-adds), or from one load of a metadata byte's 4 weights by in-lane permutes (REG
// true: NV + 1/4 loads; see broadcast_in_registers). The sums are the same either way.
template <typename T, int R, int NV, bool REG>
SK_AVX512 void panel_tile_avx512(const T* v, const uint8_t* mt, const Semi24Rows& g4,
                                 const Dense& d, const float* P, int64_t n0, int64_t nb,
                                 int64_t m, int64_t g0, int64_t g1, float* t, int64_t ldt,
                                 bool first, bool last) {
  constexpr int64_t LDP = 16 * NV;
  __m512 acc[R][NV];
  SK_UNROLL for (int r = 0; r < R; ++r)
    SK_UNROLL for (int u = 0; u < NV; ++u)
      acc[r][u] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(t + r * ldt + 16 * u);
  const int64_t gfull = min_i64(g1, d.K / 4);  // groups whose 4 columns are all < K
  int64_t j = g0 >> 1;
  for (; 2 * j + 2 <= gfull; ++j) {
    const float* pj = P + 8 * j * LDP;
    SK_UNROLL for (int r = 0; r < R; ++r) {
      const unsigned b = mt[r * g4.mcols + j];  // validated by the caller
      const float* p[4] = {pj + (b & 3) * LDP, pj + ((b >> 2) & 3) * LDP,
                           pj + (4 + ((b >> 4) & 3)) * LDP, pj + (4 + (b >> 6)) * LDP};
      const T* w = v + r * g4.half + 4 * j;
      __m512 wi[4];
      bcast4x16<REG, NV>(w, wi);
      SK_UNROLL for (int i = 0; i < 4; ++i)
        SK_UNROLL for (int u = 0; u < NV; ++u)
          acc[r][u] = _mm512_fmadd_ps(wi[i], _mm512_loadu_ps(p[i] + 16 * u), acc[r][u]);
    }
  }
  for (int64_t g = 2 * j; g < g1; ++g) {  // an odd last group, or the padded one
    SK_UNROLL for (int r = 0; r < R; ++r) {
      const int nib = nibble(mt + r * g4.mcols, g);
      const int p[2] = {nib & 3, nib >> 2};
      SK_UNROLL for (int i = 0; i < 2; ++i) {
        if (4 * g + p[i] >= d.K) continue;  // format padding past K never counts
        const __m512 w = bcast16(v + r * g4.half + 2 * g + i);
        const float* b = P + (4 * g + p[i]) * LDP;
        SK_UNROLL for (int u = 0; u < NV; ++u)
          acc[r][u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(b + 16 * u), acc[r][u]);
      }
    }
  }
  if (!last) {
    SK_UNROLL for (int r = 0; r < R; ++r)
      SK_UNROLL for (int u = 0; u < NV; ++u) _mm512_storeu_ps(t + r * ldt + 16 * u, acc[r][u]);
    return;
  }
  if (d.ldy_m == 1 && d.ldy_n != 1) {  // column-major Y: columns of R rows (simd_avx2.h)
    alignas(64) float tile[R * 16 * NV];
    SK_UNROLL for (int r = 0; r < R; ++r) {
      const __m512 b = d.bias != nullptr ? _mm512_set1_ps(d.bias[(m + r) * d.bias_stride])
                                         : _mm512_setzero_ps();
      SK_UNROLL for (int u = 0; u < NV; ++u)
        _mm512_store_ps(tile + r * 16 * NV + 16 * u, _mm512_add_ps(acc[r][u], b));
    }
    store_tile_cols(tile, 16 * NV, R, min_i64(16 * NV, nb), d.Y + m + n0 * d.ldy_n, d.ldy_n);
    return;
  }
  SK_UNROLL for (int r = 0; r < R; ++r) {
    const __m512 b = d.bias != nullptr ? _mm512_set1_ps(d.bias[(m + r) * d.bias_stride])
                                       : _mm512_setzero_ps();
    float* y = d.Y + (m + r) * d.ldy_m + n0 * d.ldy_n;
    SK_UNROLL for (int u = 0; u < NV; ++u)
      if (16 * u < nb)
        store_lanes16(y + 16 * u * d.ldy_n, d.ldy_n, _mm512_add_ps(acc[r][u], b),
                      min_i64(16, nb - 16 * u));
  }
}

// Rows [m0, m1) over a panel of row stride 16 * NV, in blocks of a few tiles; each block runs
// over K in chunks of about 32 KB of the panel (the chunk stays in L1 while the block's rows
// use it; the partial sums wait in a per-thread tile between chunks).
template <typename T, int NV, bool REG>
SK_AVX512 int panel_rows_avx512_nv(const T* values, const uint8_t* meta, const Dense& d,
                                   const float* P, int64_t n0, int64_t nb, int64_t m0,
                                   int64_t m1) {
  // 24 accumulators (of 32 zmm) with 2+ zmm per row; 12 rows with one.
  constexpr int R = NV >= 4 ? 6 : NV == 3 ? 8 : 12;
  constexpr int64_t LDP = 16 * NV;
  constexpr int64_t kRowBlock = 4 * R;
  const Semi24Rows g4(d.K);
  // Groups per K chunk (even): 8192 floats of panel, 32 KB. (On the 2-vCPU Sapphire Rapids
  // VM, 4096x4096 at N=512 on 1 thread, no chunking measured the same, 169 vs 172 ms.)
  const int64_t gchunk = max_i64(2, (8192 / 4 / LDP) & ~int64_t{1});
  float* Tacc = scratch_tile().get_as<float>(kRowBlock * LDP);
  if (Tacc == nullptr) return kNoMemory;
  for (int64_t mb = m0; mb < m1; mb += kRowBlock) {
    const int64_t me = min_i64(mb + kRowBlock, m1);
    if (!meta_rows_valid_avx2(meta + mb * g4.mcols, me - mb, g4)) return kBadMeta;
    int64_t g0 = 0;
    do {
      const int64_t g1 = min_i64(g0 + gchunk, g4.G);
      const bool first = g0 == 0, last = g1 == g4.G;
      int64_t m = mb;
      for (; m + R <= me; m += R)
        panel_tile_avx512<T, R, NV, REG>(values + m * g4.half, meta + m * g4.mcols, g4, d, P, n0,
                                         nb, m, g0, g1, Tacc + (m - mb) * LDP, LDP, first, last);
      for (; m < me; ++m)
        panel_tile_avx512<T, 1, NV, REG>(values + m * g4.half, meta + m * g4.mcols, g4, d, P, n0,
                                         nb, m, g0, g1, Tacc + (m - mb) * LDP, LDP, first, last);
      g0 = g1;
    } while (g0 < g4.G);
  }
  return kOk;
}

template <typename T, bool REG>
int panel_rows_avx512_reg(const T* values, const uint8_t* meta, const Dense& d, const float* P,
                          int64_t ldp, int64_t n0, int64_t nb, int64_t m0, int64_t m1) {
  switch (ldp / 16) {
    case 1: return panel_rows_avx512_nv<T, 1, REG>(values, meta, d, P, n0, nb, m0, m1);
    case 2: return panel_rows_avx512_nv<T, 2, REG>(values, meta, d, P, n0, nb, m0, m1);
    case 3: return panel_rows_avx512_nv<T, 3, REG>(values, meta, d, P, n0, nb, m0, m1);
    case 4: return panel_rows_avx512_nv<T, 4, REG>(values, meta, d, P, n0, nb, m0, m1);
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

#endif  // SK_HAVE_AVX512_KERNELS

// ----------------------------------------------------------------------------- dispatch

template <typename T>
class Semi24Panels : public PanelWork {
 public:
  Semi24Panels(const T* values, const uint8_t* meta, const Dense& d, const int64_t* bounds,
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
    const bool avx2_ = isa_ == Isa::kAvx2;
    if (avx2_) {
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
int semi24_typed(const T* values, const uint8_t* meta, const Dense& d) {
  const Isa isa = active_isa();
  // The GEMV: gemv_rows_avx512 under avx512 (R rows share the activations; see there),
  // the AVX2 step under avx2. An earlier one-row zmm version measured 25% slower than the
  // AVX2 step on Zen 5; this one was 1.2-1.9x faster on Sapphire Rapids, 1 thread
  // (bench/results/g24-2026-12-03) and is not yet measured on Zen 5.
  const bool avx2 = SK_HAVE_AVX2_KERNELS && isa != Isa::kPortable;
  // The AVX-512 GEMV's entries count once: a second thread paid from ~115K stored entries on
  // (Zen 5, 2 threads, warm and from memory: 384x384 0.85x / 1.00x, 384x512 0.89x / 1.06x,
  // 512x512 1.20x / 1.19x, 768x768 1.41x / 1.28x; bench/results/gemv-threads-2026-12-07).
  const double gemv_cost = isa == Isa::kAvx512 ? 1.0 : kGemvCost;
  int nt = threads_for(d.num_threads, 0.5 * static_cast<double>(d.M) * d.K * d.N *
                                          (d.N == 1 ? gemv_cost : 1.0));
  if (nt > kMaxParts) nt = kMaxParts;
  if (nt > d.M) nt = static_cast<int>(d.M > 0 ? d.M : 1);
  const int parts = parts_for(nt, d.M, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  split_even(d.M, parts, bounds);  // every row holds the same number of entries
  // The GEMVs (AVX-512, AVX2) and the AVX-512 small-N kernel fetch ahead only for a weight
  // that does not look cached (fetch_next_tiles, isa.h).
  const int64_t weight_bytes = d.M * Semi24Rows(d.K).half * static_cast<int64_t>(sizeof(T));
  if (d.N == 1) {
    const float* x = gemv_x(d);
    if (x == nullptr) return kNoMemory;
    const bool fetch = avx2 && fetch_next_tiles(values, weight_bytes);
    return parallel_parts(parts, nt, [&](int p) {
#if SK_HAVE_AVX512_KERNELS
      if (isa == Isa::kAvx512)
        return gemv_rows_avx512<T>(values, meta, d, x, bounds[p], bounds[p + 1], fetch);
#endif
#if SK_HAVE_AVX2_KERNELS
      if (avx2) return gemv_rows_avx2<T>(values, meta, d, x, bounds[p], bounds[p + 1], fetch);
#endif
      return gemv_rows_portable<T>(values, meta, d, x, bounds[p], bounds[p + 1]);
    });
  }
#if SK_HAVE_AVX512_KERNELS
  // kLorMinN..kLorMaxN columns: lanes over rows (see lor_rows_avx512).
  // Past kLorMaxN columns when B's columns are contiguous (x.t(), as nn.Linear passes it):
  // panels of 16-row blocks (lor_panels_avx512). A row-major B keeps the packed panels (the
  // blocks would need B transposed first).
  const bool lor_big = isa == Isa::kAvx512 && d.N > kLorMaxN && d.ldb_k == 1;
  if (lor_big || (isa == Isa::kAvx512 && d.N >= kLorMinN && d.N <= kLorMaxN)) {
    int64_t ldx = 0;
    const float* X = small_n_columns(d, &ldx);
    if (X == nullptr) return kNoMemory;
    const int64_t blocks = ceil_div(d.M, kLorRows);
    split_even(blocks, parts, bounds);
    for (int p = 0; p <= parts; ++p) bounds[p] = min_i64(d.M, bounds[p] * kLorRows);
    // The hybrid blocks (hyb_part_avx512, K a multiple of 32): the parts split the rows when
    // each gets 8+ pair units, else B's columns when there are 64-column slices enough (rows
    // split 4 parts per thread left 1-2 units per part at M = 384, too few to pay for packing
    // B: 0.85-0.9x; columns split, each part streams the whole weight: 4096x11008 at N = 512
    // 0.92x, where the rows split holds).
    const bool hyb = lor_big && d.K > 0 && d.K % 32 == 0;  // (K = 0 never reaches a kernel)
    const int64_t col_slices = d.N / kHybCols;
    if (hyb && d.M / parts < 32 * 8 && col_slices >= 2 * nt) {
      const int cparts = parts_for(nt, col_slices, kMaxParts);
      int64_t cb[kMaxParts + 1];
      split_even(col_slices, cparts, cb);
      return parallel_parts(cparts, nt, [&](int p) {
        return hyb_part_avx512<T>(values, meta, d, X, ldx, 0, d.M, cb[p] * kHybCols,
                                  p + 1 == cparts ? d.N : cb[p + 1] * kHybCols);
      });
    }
    return parallel_parts(parts, nt, [&](int p) {
      if (hyb && d.M / parts >= 32 * 8)
        return hyb_part_avx512<T>(values, meta, d, X, ldx, bounds[p], bounds[p + 1], 0, d.N);
      if (lor_big) return lor_panels_avx512<T>(values, meta, d, X, ldx, bounds[p], bounds[p + 1]);
      return lor_rows_avx512<T>(values, meta, d, X, ldx, bounds[p], bounds[p + 1]);
    });
  }
#endif
  // 1-3 tail columns: the GEMV / small-N kernels beat a mostly empty panel vector (MiniLM's
  // 384x384, 1536x384, 384x1536 at 17, 18, 19 and 33 columns, 1 and 2 threads: 1.1-1.35x;
  // bench/results/panel-tail-2026-12-05).
  // The tail runs inside the head's panel work (PanelTail).
  Dense head, tail;
  PanelTail pt;
  const int ts = split_panel_tail(d, kSemi24PanelTail, &head, &tail, &pt);
  if (ts != kOk) return ts;
  const Dense& dp = pt.d != nullptr ? head : d;  // the panels' columns
#if SK_HAVE_AVX512_KERNELS
  if (pt.d == nullptr && isa == Isa::kAvx512 && d.N <= kSmallN) {
    int64_t ldx = 0;
    const float* X = small_n_columns(d, &ldx);
    if (X == nullptr) return kNoMemory;
    const bool fetch = fetch_next_tiles(values, weight_bytes);
    return parallel_parts(parts, nt, [&](int p) {
      return gemvn_rows_avx512<T>(values, meta, d, X, ldx, bounds[p], bounds[p + 1], fetch);
    });
  }
#endif
  const int64_t width = isa == Isa::kAvx512 ? kPanelWidth512 : kPanelWidth;
  const int pparts = panel_parts(nt, d.M, dp.N, width, kMaxParts);
  if (pparts != parts) split_even(d.M, pparts, bounds);
  Semi24Panels<T> work(values, meta, dp, bounds, isa, pt);
  return run_panels(dp, nt, pparts, width, work, isa == Isa::kAvx512 ? 16 : 8);
}

// ----------------------------------------------------------------------------- dense forms
// For the backward products at larger N, which run as dense GEMMs in the glue: one pass over
// the format, rows split between threads (each row's nibbles are checked as it goes).

// Row m of the weight as dense floats: out[0, K) (zeros where nothing is stored).
template <typename T>
bool dense_row(const T* v, const uint8_t* mt, const Semi24Rows& g4, float* out) {
  for (int64_t c = 0; c < g4.K; ++c) out[c] = 0.0f;
  for (int64_t g = 0; g < g4.G; ++g) {
    const int nib = nibble(mt, g), p0 = nib & 3, p1 = nib >> 2;
    if (p0 >= p1) return false;
    if (4 * g + p0 < g4.K) out[4 * g + p0] = to_float(v[2 * g]);
    if (4 * g + p1 < g4.K) out[4 * g + p1] = to_float(v[2 * g + 1]);
  }
  return true;
}

template <typename T>
int to_dense_typed(const T* values, const uint8_t* meta, int64_t M, int64_t K, float* out,
                   int num_threads) {
  const Semi24Rows g4(K);
  const int nt = threads_for(num_threads, static_cast<double>(M) * K);
  const int parts = parts_for(nt, M, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  split_even(M, parts, bounds);
  return parallel_parts(parts, nt, [&](int p) {
    for (int64_t m = bounds[p]; m < bounds[p + 1]; ++m)
      if (!dense_row(values + m * g4.half, meta + m * g4.mcols, g4, out + m * K))
        return static_cast<int>(kBadMeta);
    return static_cast<int>(kOk);
  });
}

}  // namespace

int semi24_to_dense(const void* values, WeightType wt, const uint8_t* meta, int64_t M, int64_t K,
                    float* out, int num_threads) {
  if (M < 0 || K < 0) return kBadArgument;
  if (M == 0 || K == 0) return kOk;
  return with_weight_type(wt, [&](auto tag) {
    return to_dense_typed(static_cast<decltype(tag)>(values), meta, M, K, out, num_threads);
  });
}

int semi24_gather(const float* S, const uint8_t* meta, int64_t M, int64_t K, float* out,
                  int num_threads) {
  if (M < 0 || K < 0) return kBadArgument;
  const Semi24Rows g4(K);
  if (M == 0 || g4.G == 0) return kOk;
  const int nt = threads_for(num_threads, static_cast<double>(M) * g4.half);
  const int parts = parts_for(nt, M, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  split_even(M, parts, bounds);
  return parallel_parts(parts, nt, [&](int p) {
    for (int64_t m = bounds[p]; m < bounds[p + 1]; ++m) {
      const uint8_t* mt = meta + m * g4.mcols;
      const float* s = S + m * K;
      float* o = out + m * g4.half;
      for (int64_t g = 0; g < g4.G; ++g) {
        const int nib = nibble(mt, g), p0 = nib & 3, p1 = nib >> 2;
        if (p0 >= p1) return static_cast<int>(kBadMeta);
        o[2 * g] = 4 * g + p0 < K ? s[4 * g + p0] : 0.0f;  // padding entries get 0
        o[2 * g + 1] = 4 * g + p1 < K ? s[4 * g + p1] : 0.0f;
      }
    }
    return static_cast<int>(kOk);
  });
}

int semi24_spmm(const void* values, WeightType wt, const uint8_t* meta, const Dense& d) {
  if (d.M < 0 || d.K < 0 || d.N < 0) return kBadArgument;
  if (d.M == 0 || d.N == 0) return kOk;
  return with_weight_type(wt, [&](auto tag) {
    return semi24_typed(static_cast<decltype(tag)>(values), meta, d);
  });
}

}  // namespace cpu
}  // namespace sparsekern
