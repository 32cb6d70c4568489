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
// a time, so that R * NV independent accumulators hide the FMA latency.
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
// 1.7x -> 2.0-2.7x). Past ~12 columns the panel's broadcast FMAs use enough of each zmm.
constexpr int64_t kSmallN = 8;
// Up to this many columns (> kSmallN) it runs in chunks of at most kSmallN columns over each
// 2-row tile (gemvn_rows_chunked_avx512): N = 9-11 1.05-1.27x the 16-column panel, whose
// zmm then have 5-7 idle lanes; from 12 the panel is as fast or faster (2 threads, Zen 5,
// MiniLM/BERT shapes and 4096²; bench/results/semi24-small-n-chunks-2026-12-06).
constexpr int64_t kSmallNChunked = 11;
// The same with float32 weights when the panels broadcast in registers
// (broadcast_in_registers): the panel is then 1.04-1.22x faster at N = 10-11 (2 threads;
// 1.09-1.24x on one), mixed at 9 (0.94-1.09x); 16-bit weights keep 11 (N = 10 0.88-1.02x)
// (bench/results/semi24-register-broadcast-2026-12-06).
constexpr int64_t kSmallNChunkedRegF32 = 9;
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
                           int64_t m0, int64_t m1) {
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
      // does not reach the memory bandwidth on its own).
      _mm_prefetch(reinterpret_cast<const char*>(v + 4 * j) + kPrefetchBytes, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(v + 4 * j) + kPrefetchBytes + 64, _MM_HINT_T0);
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

template <typename T>
SK_AVX512 int gemv_rows_avx512(const T* values, const uint8_t* meta, const Dense& d,
                               const float* x, int64_t m0, int64_t m1) {
  constexpr int R = 4;  // rows sharing one load of the activations (2, 4 and 8 measured alike)
  const Semi24Rows g4(d.K);
  int64_t m = m0;
  for (; m + R <= m1; m += R) {
    // The rows' metadata is checked first (vectorized; it then sits in L1 for the loop).
    if (!meta_rows_valid_avx2(meta + m * g4.mcols, R, g4)) return kBadMeta;
    const int64_t nr = min_i64(R, m1 - m - R);  // the next rows of this part (<= 0: none)
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
                                   const float* X, int64_t ldx, int64_t m0, int64_t m1) {
  constexpr int R = NC <= 4 ? 4 : 2;  // R * NC accumulators, R index and R value registers
  const Semi24Rows g4(d.K);
  int64_t m = m0;
  for (; m + R <= m1; m += R) {
    if (!meta_rows_valid_avx2(meta + m * g4.mcols, R, g4)) return kBadMeta;
    // The next 4-row tile into L2 (2 threads, from memory, old / new ms: N=2 4096² 1.41 /
    // 0.98, 3072x768 0.29 / 0.15; N=8 (2-row tiles) 3072x768 0.30 / 0.30-0.39, so not there).
    const int64_t nr = R >= 4 ? min_i64(R, m1 - m - R) : 0;  // the next rows (<= 0: none)
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

// One chunk of NC (1..8) columns for R rows (gemvn_tile_avx512 with the chunk's Dense).
template <typename T, int R>
SK_AVX512_INLINE void gemvn_chunk_tile(const T* v, const uint8_t* mt, const Semi24Rows& g4,
                                       const Dense& dc, const float* Xc, int64_t ldx, int64_t m) {
  switch (dc.N) {
    case 1: gemvn_tile_avx512<T, R, 1>(v, mt, g4, dc, Xc, ldx, m); break;
    case 2: gemvn_tile_avx512<T, R, 2>(v, mt, g4, dc, Xc, ldx, m); break;
    case 3: gemvn_tile_avx512<T, R, 3>(v, mt, g4, dc, Xc, ldx, m); break;
    case 4: gemvn_tile_avx512<T, R, 4>(v, mt, g4, dc, Xc, ldx, m); break;
    case 5: gemvn_tile_avx512<T, R, 5>(v, mt, g4, dc, Xc, ldx, m); break;
    case 6: gemvn_tile_avx512<T, R, 6>(v, mt, g4, dc, Xc, ldx, m); break;
    case 7: gemvn_tile_avx512<T, R, 7>(v, mt, g4, dc, Xc, ldx, m); break;
    default: gemvn_tile_avx512<T, R, 8>(v, mt, g4, dc, Xc, ldx, m); break;
  }
}

// N > 8 columns in chunks of at most 8 (sizes within one of each other), R = 2 row tiles:
// the tile's values and metadata stay in L1 while every chunk of columns passes over them.
template <typename T>
SK_AVX512 int gemvn_rows_chunked_avx512(const T* values, const uint8_t* meta, const Dense& d,
                                        const float* X, int64_t ldx, int64_t m0, int64_t m1) {
  constexpr int kMaxChunks = (kSmallNChunked + kSmallN - 1) / kSmallN;
  const int64_t nch = ceil_div(d.N, kSmallN);
  if (nch > kMaxChunks) return kBadArgument;
  Dense dc[kMaxChunks];
  const float* Xc[kMaxChunks];
  for (int64_t q = 0, c0 = 0; q < nch; ++q) {
    const int64_t nc = (d.N - c0) / (nch - q);
    dc[q] = d;
    dc[q].N = nc;
    dc[q].Y = d.Y + c0 * d.ldy_n;
    Xc[q] = X + c0 * ldx;
    c0 += nc;
  }
  const Semi24Rows g4(d.K);
  int64_t m = m0;
  for (; m + 2 <= m1; m += 2) {
    if (!meta_rows_valid_avx2(meta + m * g4.mcols, 2, g4)) return kBadMeta;
    for (int64_t q = 0; q < nch; ++q)
      gemvn_chunk_tile<T, 2>(values + m * g4.half, meta + m * g4.mcols, g4, dc[q], Xc[q], ldx, m);
  }
  for (; m < m1; ++m) {
    if (!meta_rows_valid_avx2(meta + m * g4.mcols, 1, g4)) return kBadMeta;
    for (int64_t q = 0; q < nch; ++q)
      gemvn_chunk_tile<T, 1>(values + m * g4.half, meta + m * g4.mcols, g4, dc[q], Xc[q], ldx, m);
  }
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
    case 7: return gemvn_rows_avx512_nc<T, 7>(values, meta, d, X, ldx, m0, m1);
    case 8: return gemvn_rows_avx512_nc<T, 8>(values, meta, d, X, ldx, m0, m1);
    default:
      if (d.N > kSmallN && d.N <= kSmallNChunked)
        return gemvn_rows_chunked_avx512<T>(values, meta, d, X, ldx, m0, m1);
      return kBadArgument;
  }
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
  int nt = threads_for(d.num_threads, 0.5 * static_cast<double>(d.M) * d.K * d.N *
                                          (d.N == 1 ? kGemvCost : 1.0));
  if (nt > kMaxParts) nt = kMaxParts;
  if (nt > d.M) nt = static_cast<int>(d.M > 0 ? d.M : 1);
  const int parts = parts_for(nt, d.M, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  split_even(d.M, parts, bounds);  // every row holds the same number of entries
  if (d.N == 1) {
    const float* x = gemv_x(d);
    if (x == nullptr) return kNoMemory;
    return parallel_parts(parts, nt, [&](int p) {
#if SK_HAVE_AVX512_KERNELS
      if (isa == Isa::kAvx512)
        return gemv_rows_avx512<T>(values, meta, d, x, bounds[p], bounds[p + 1]);
#endif
#if SK_HAVE_AVX2_KERNELS
      if (avx2) return gemv_rows_avx2<T>(values, meta, d, x, bounds[p], bounds[p + 1]);
#endif
      return gemv_rows_portable<T>(values, meta, d, x, bounds[p], bounds[p + 1]);
    });
  }
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
  const int64_t chunked = std::is_same<T, float>::value && broadcast_in_registers()
                              ? kSmallNChunkedRegF32 : kSmallNChunked;
  if (pt.d == nullptr && isa == Isa::kAvx512 && d.N <= chunked) {
    int64_t ldx = 0;
    const float* X = small_n_columns(d, &ldx);
    if (X == nullptr) return kNoMemory;
    return parallel_parts(parts, nt, [&](int p) {
      return gemvn_rows_avx512<T>(values, meta, d, X, ldx, bounds[p], bounds[p + 1]);
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
