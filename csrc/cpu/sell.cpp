// Row-sliced unstructured (SELL-16x64) spmm on the CPU.
//
// The format (sparsekern/formats/sell.py): rows in slices of 16, columns in blocks of 64;
// group g = s * KB + b (slice s, block b, KB = ceil(K/64)) owns steps
// [offsets[g][0], offsets[g + 1][0]) and values [offsets[g][1], offsets[g + 1][1]). Step t
// holds one lane per row of the slice: indices[t][l] is the column (within the block) of row
// 16 s + l's entry, or 255 (no entry); the entries' values follow one another in `values`,
// step by step, lane by lane (no padding stored).
//
// Why: a CSC or CSR GEMV moves each activation with a gather or a scatter, about one element
// per cycle on Zen 5 (2.2-2.7 G entries/s at 4096² 90%, one thread). Here the 64 activations
// of a block sit in 4 zmm and each step picks the 16 lanes' activations with two vpermt2ps and
// a blend: register permutes instead of memory gathers. A step's values are the next
// popcount(lanes) of the stream, expanded into their lanes (vexpandps); lanes without an
// entry add nothing, so 0 * Inf never happens (the product has the stored entries' terms
// only, as the reference backend's). Bytes per entry at 90%: 4 (value) + ~1.7 (index lanes).
//
// Every index is checked as it is used (255 or below the block's width; lanes past M hold
// 255), every offset before any step is read, and each step's values against its group's
// range before they are used (AVX-512 loads 16 at once while 16 remain in the stream, masked
// at its end): a bad one is kBadIndex / kBadOffsets, never a read out of bounds. N > 1 runs
// the same loop per column of B while a slice's steps stay in L2, so its time grows with N:
// a GEMV layout (csc's batched kernels are faster from N ~ 3 at 2048² 90%; the benchmarks
// and `layout="auto"` time it for N <= 2 only).
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

constexpr int64_t kLanes = 16;   // rows per slice
constexpr int64_t kBlock = 64;   // columns per block
constexpr uint8_t kNone = 255;   // index of a lane without an entry
constexpr int kMaxParts = 256;
constexpr int64_t kColumnChunk = 8;  // columns of B per padded copy (bounds the scratch)

struct SellCall {
  int64_t S, KB;      // slices, column blocks
  const float* X;     // N columns of KB * 64 activations (zero past K)
  int64_t ldx;        // floats between columns of X
  int64_t nnz = 0;    // values readable from v (the whole stream)
};

inline int64_t block_width(int64_t K, int64_t b) { return min_i64(kBlock, K - kBlock * b); }
inline int64_t slice_rows(int64_t M, int64_t s) { return min_i64(kLanes, M - kLanes * s); }

// offsets[g][c] of the [G + 1, 2] offsets.
template <typename PI>
inline int64_t off_at(const PI* off, int64_t g, int c) {
  return static_cast<int64_t>(off[2 * g + c]);
}

// Both columns start at 0, never decrease and end at the steps / values.
template <typename PI>
bool sell_offsets_ok(const PI* off, int64_t groups, int64_t steps, int64_t nnz) {
  if (off_at(off, 0, 0) != 0 || off_at(off, 0, 1) != 0 || off_at(off, groups, 0) != steps ||
      off_at(off, groups, 1) != nnz)
    return false;
  for (int64_t g = 0; g < groups; ++g)
    if (off[2 * g + 2] < off[2 * g] || off[2 * g + 3] < off[2 * g + 1]) return false;
  return true;
}

// B's N columns copied into blocks of 64 floats, zero past K (a block's 64 activations are
// always readable); null when out of memory.
const float* padded_columns(const Dense& d, int64_t KB, int64_t* ldx) {
  const int64_t kp = max_i64(KB * kBlock, 1);
  float* X = scratch_x().get_as<float>(d.N, kp);
  if (X == nullptr) return nullptr;
  for (int64_t n = 0; n < d.N; ++n) {
    float* x = X + n * kp;
    const float* b = d.B + n * d.ldb_n;
    if (d.ldb_k == 1) {
      std::memcpy(x, b, static_cast<size_t>(d.K) * sizeof(float));
    } else {
      for (int64_t k = 0; k < d.K; ++k) x[k] = b[k * d.ldb_k];
    }
    for (int64_t k = d.K; k < kp; ++k) x[k] = 0.0f;
  }
  *ldx = kp;
  return X;
}

// One slice, every column of B, one lane at a time.
template <typename T, typename PI>
int slice_portable(const T* v, const uint8_t* ix, const PI* off, int64_t s, const SellCall& c,
                   const Dense& d) {
  const int64_t rows = slice_rows(d.M, s);
  for (int64_t n = 0; n < d.N; ++n) {
    float acc[kLanes] = {};
    for (int64_t b = 0; b < c.KB; ++b) {
      const int64_t g = s * c.KB + b, width = block_width(d.K, b);
      const float* x = c.X + n * c.ldx + kBlock * b;
      int64_t p = off_at(off, g, 1);
      const int64_t pe = off_at(off, g + 1, 1);
      for (int64_t t = off_at(off, g, 0); t < off_at(off, g + 1, 0); ++t) {
        for (int64_t l = 0; l < kLanes; ++l) {
          const int64_t col = ix[t * kLanes + l];
          if (col == kNone) continue;
          if (col >= width || l >= rows) return kBadIndex;
          if (p >= pe) return kBadOffsets;
          acc[l] += to_float(v[p++]) * x[col];
        }
      }
      if (p != pe) return kBadOffsets;
    }
    for (int64_t l = 0; l < rows; ++l) store_out(d, kLanes * s + l, n, acc[l]);
  }
  return kOk;
}

#if SK_HAVE_AVX2_KERNELS
// kPrefix8[m][l]: the entries of mask m before lane l (the value each real lane takes).
struct Prefix8 {
  int32_t pos[256][8];
  Prefix8() {
    for (int m = 0; m < 256; ++m)
      for (int l = 0, c = 0; l < 8; ++l) {
        pos[m][l] = c;
        c += (m >> l) & 1;
      }
  }
};
const Prefix8& prefix8() {
  static const Prefix8 table;
  return table;
}

// 8 lanes' values (mask `real`, their values the next popcount(real) of the stream at p).
template <typename T>
SK_AVX2_INLINE __m256 expand8(const T* p, int real, __m256 mask) {
  alignas(32) float f[8] = {};
  for (int l = 0, c = 0; l < 8; ++l)
    if ((real >> l) & 1) f[l] = to_float(p[c++]);
  (void)mask;
  return _mm256_load_ps(f);
}
SK_AVX2_INLINE __m256 expand8(const float* p, int real, __m256 mask) {
  const __m256i pos = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(prefix8().pos[real]));
  return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), p, pos, mask, 4);  // real lanes only
}

// The same, 8 lanes per ymm: a masked gather of the lanes' activations (AVX2 has no
// two-table permute); float values through a masked gather at their prefix positions.
template <typename T, typename PI>
SK_AVX2 int slice_avx2(const T* v, const uint8_t* ix, const PI* off, int64_t s,
                       const SellCall& c, const Dense& d) {
  const int64_t rows = slice_rows(d.M, s);
  const __m256i none = _mm256_set1_epi32(kNone);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  // Lanes that are rows (< M), per half.
  const __m256i is_row[2] = {_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rows)), lane),
                             _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rows) - 8), lane)};
  for (int64_t n = 0; n < d.N; ++n) {
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256i bad = _mm256_setzero_si256();
    for (int64_t b = 0; b < c.KB; ++b) {
      const int64_t g = s * c.KB + b;
      const __m256i lim = _mm256_set1_epi32(static_cast<int>(block_width(d.K, b)));
      const float* x = c.X + n * c.ldx + kBlock * b;
      int64_t p = off_at(off, g, 1);
      const int64_t pe = off_at(off, g + 1, 1);
      for (int64_t t = off_at(off, g, 0); t < off_at(off, g + 1, 0); ++t) {
        SK_UNROLL for (int h = 0; h < 2; ++h) {
          const __m256i id = _mm256_cvtepu8_epi32(
              _mm_loadl_epi64(reinterpret_cast<const __m128i*>(ix + t * kLanes + 8 * h)));
          const __m256i real = _mm256_and_si256(_mm256_cmpgt_epi32(lim, id), is_row[h]);
          const __m256i ok = _mm256_or_si256(real, _mm256_cmpeq_epi32(id, none));
          bad = _mm256_or_si256(bad, _mm256_andnot_si256(ok, _mm256_set1_epi32(-1)));
          const __m256 rm = _mm256_castsi256_ps(real);
          const int bits = _mm256_movemask_ps(rm);
          const int cnt = __builtin_popcount(static_cast<unsigned>(bits));
          if (p + cnt > pe) return _mm256_testz_si256(bad, bad) ? kBadOffsets : kBadIndex;
          const __m256 xv = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x,
                                                     _mm256_and_si256(id, real), rm, 4);
          // Lanes without an entry: value 0 times x 0 (the gather's zero), never 0 * Inf.
          acc[h] = _mm256_fmadd_ps(expand8(v + p, bits, rm), xv, acc[h]);
          p += cnt;
        }
      }
      // A bad index also leaves its lane without a value: report the index.
      if (!_mm256_testz_si256(bad, bad)) return kBadIndex;
      if (p != pe) return kBadOffsets;
    }
    alignas(32) float out[kLanes];
    _mm256_store_ps(out, acc[0]);
    _mm256_store_ps(out + 8, acc[1]);
    for (int64_t l = 0; l < rows; ++l) store_out(d, kLanes * s + l, n, out[l]);
  }
  return kOk;
}
#endif

#if SK_HAVE_AVX512_KERNELS
// The first n (0..16) weights at p as floats in lanes 0..n-1 (masked: nothing past them is
// read).
SK_AVX512_INLINE __m512 load_first(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
SK_AVX512_INLINE __m512 load_first(const bf16* p, __mmask16 m) {
  const __m256i w = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(w), 16));
}
SK_AVX512_INLINE __m512 load_first(const f16* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

// One step: acc += (the next values, expanded into the lanes whose index is below their limit:
// the block's width, 0 past M) * (the lanes' activations). Every other lane's index is
// folded into `other` (a lane-wise min), which must stay 255. *p advances by the lanes used;
// false when they would pass `pe` (the group's last value). `vend`: the values in the stream.
template <typename T>
SK_AVX512_INLINE bool sell_step(const T* v, int64_t* p, int64_t pe, int64_t vend,
                                const uint8_t* ix, __m512 x0, __m512 x1, __m512 x2, __m512 x3,
                                __m512i lim, __m512* acc, __m512i* other) {
  const __m512i id = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ix)));
  const __mmask16 real = _mm512_cmplt_epu32_mask(id, lim);
  *other = _mm512_mask_min_epu32(*other, static_cast<__mmask16>(~real), *other, id);
  const int cnt = __builtin_popcount(static_cast<unsigned>(real));
  if (*p + cnt > pe) return false;
  // The expand takes the first cnt of 16 values loaded whole while 16 remain in the stream
  // (a load masked to cnt waits on the popcount: 1.10-1.18x warm, 1.03-1.10x cold at 90-95%,
  // bench/results/sell-unmasked-load-2026-12-06); masked only at the stream's end, so nothing
  // past the values is read. The lanes past cnt belong to later steps and are never used.
  const __m512 src = *p + kLanes <= vend
                         ? load16(v + *p)
                         : load_first(v + *p, static_cast<__mmask16>((1u << cnt) - 1u));
  const __m512 vals = _mm512_maskz_expand_ps(real, src);
  *p += cnt;
  const __m512 lo = _mm512_permutex2var_ps(x0, id, x1);  // columns 0..31 (index bits 0-4)
  const __m512 hi = _mm512_permutex2var_ps(x2, id, x3);  // columns 32..63
  const __m512 xv = _mm512_mask_blend_ps(_mm512_test_epi32_mask(id, _mm512_set1_epi32(32)), lo, hi);
  *acc = _mm512_mask3_fmadd_ps(vals, xv, *acc, real);  // others unchanged (x may be Inf)
  return true;
}

// One slice, every column of B: the block's 64 activations in 4 zmm, 4 accumulators (the
// FMA latency, not the permutes, would bound one chain).
template <typename T, typename PI>
SK_AVX512 int slice_avx512(const T* v, const uint8_t* ix, const PI* off, int64_t s,
                           const SellCall& c, const Dense& d) {
  const int64_t rows = slice_rows(d.M, s);
  const __mmask16 rowmask = static_cast<__mmask16>(rows >= kLanes ? 0xFFFFu : (1u << rows) - 1u);
  const __m512i none = _mm512_set1_epi32(kNone);
  for (int64_t n = 0; n < d.N; ++n) {
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
    __m512i other = none;
    for (int64_t b = 0; b < c.KB; ++b) {
      const int64_t g = s * c.KB + b;
      // Lanes past M have limit 0: any index there but 255 shows in `other`.
      const __m512i lim = _mm512_maskz_set1_epi32(
          rowmask, static_cast<int>(block_width(d.K, b)));
      const float* x = c.X + n * c.ldx + kBlock * b;
      const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
      const __m512 x2 = _mm512_loadu_ps(x + 32), x3 = _mm512_loadu_ps(x + 48);
      int64_t t = off_at(off, g, 0), p = off_at(off, g, 1);
      const int64_t e = off_at(off, g + 1, 0), pe = off_at(off, g + 1, 1);
      bool fits = true;
      for (; fits && t + 4 <= e; t += 4) {
        const uint8_t* it = ix + t * kLanes;
        fits = sell_step(v, &p, pe, c.nnz, it, x0, x1, x2, x3, lim, &a[0], &other) &&
               sell_step(v, &p, pe, c.nnz, it + 16, x0, x1, x2, x3, lim, &a[1], &other) &&
               sell_step(v, &p, pe, c.nnz, it + 32, x0, x1, x2, x3, lim, &a[2], &other) &&
               sell_step(v, &p, pe, c.nnz, it + 48, x0, x1, x2, x3, lim, &a[3], &other);
      }
      for (; fits && t < e; ++t)
        fits = sell_step(v, &p, pe, c.nnz, ix + t * kLanes, x0, x1, x2, x3, lim, &a[0], &other);
      // A bad index also leaves its lane without a value: report the index.
      if (_mm512_cmpneq_epi32_mask(other, none) != 0) return kBadIndex;
      if (!fits || p != pe) return kBadOffsets;
    }
    alignas(64) float out[kLanes];
    _mm512_store_ps(out, _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
    for (int64_t l = 0; l < rows; ++l) store_out(d, kLanes * s + l, n, out[l]);
  }
  return kOk;
}
#endif

// Columns [0, d.N) of one chunk of B (at most kColumnChunk; offsets already checked).
template <typename T, typename PI>
int sell_columns(const T* v, const uint8_t* ix, const PI* off, int64_t steps, int64_t nnz,
                 const Dense& d) {
  SellCall c;
  c.S = ceil_div(d.M, kLanes);
  c.KB = ceil_div(d.K, kBlock);
  c.X = padded_columns(d, c.KB, &c.ldx);
  if (c.X == nullptr) return kNoMemory;
  c.nnz = nnz;
  const Isa isa = active_isa();
  auto slice = [&](int64_t s) -> int {
#if SK_HAVE_AVX512_KERNELS
    if (isa == Isa::kAvx512) return slice_avx512(v, ix, off, s, c, d);
#endif
#if SK_HAVE_AVX2_KERNELS
    if (isa == Isa::kAvx2) return slice_avx2(v, ix, off, s, c, d);
#endif
    return slice_portable(v, ix, off, s, c, d);
  };
  // A step is ~12-20 vector instructions for 16 lanes; each (slice, block) adds a few more.
  const double work = 6.0 * static_cast<double>(d.N) *
                      (static_cast<double>(steps) + static_cast<double>(c.S * c.KB));
  const int nt = threads_for(d.num_threads, work);
  const int parts = static_cast<int>(min_i64(parts_for(nt, c.S, kMaxParts), c.S));
  if (parts <= 1) {
    for (int64_t s = 0; s < c.S; ++s) {
      const int st = slice(s);
      if (st != kOk) return st;
    }
    return kOk;
  }
  // Parts of about equal steps (plus a per-slice share for its block loop).
  int64_t* start = scratch_index().get_as<int64_t>(c.S + 1);
  if (start == nullptr) return kNoMemory;
  for (int64_t s = 0; s <= c.S; ++s) start[s] = off_at(off, s * c.KB, 0);
  int64_t bounds[kMaxParts + 1];
  split_by_prefix(start, c.S, static_cast<double>(c.KB), parts, bounds);
  return parallel_parts(parts, nt, [&](int p) -> int {
    for (int64_t s = bounds[p]; s < bounds[p + 1]; ++s) {
      const int st = slice(s);
      if (st != kOk) return st;
    }
    return static_cast<int>(kOk);
  });
}

// B's columns in chunks: each chunk's padded copy stays small (a per-thread scratch buffer
// never shrinks: a whole B of 8192 columns kept 128 MB for the life of the thread).
template <typename T, typename PI>
int sell_typed(const T* v, const uint8_t* ix, const PI* off, int64_t steps, int64_t nnz,
               const Dense& d) {
  if (!sell_offsets_ok(off, ceil_div(d.M, kLanes) * ceil_div(d.K, kBlock), steps, nnz))
    return kBadOffsets;
  for (int64_t n0 = 0; n0 < d.N; n0 += kColumnChunk) {
    Dense part = d;
    part.N = min_i64(kColumnChunk, d.N - n0);
    part.B = d.B + n0 * d.ldb_n;
    part.Y = d.Y + n0 * d.ldy_n;
    const int st = sell_columns(v, ix, off, steps, nnz, part);
    if (st != kOk) return st;
  }
  return kOk;
}

}  // namespace

int sell_offsets_status(const Sell& a, int64_t M, int64_t K) {
  if (M < 0 || K < 0 || a.steps < 0 || a.nnz < 0) return kBadArgument;
  const int64_t groups = ceil_div(M, kLanes) * ceil_div(K, kBlock);
  const bool ok = a.ptr_type == IndexType::kI64
                      ? sell_offsets_ok(static_cast<const int64_t*>(a.offsets), groups, a.steps, a.nnz)
                      : sell_offsets_ok(static_cast<const int32_t*>(a.offsets), groups, a.steps, a.nnz);
  return ok ? kOk : kBadOffsets;
}

int sell_spmm(const Sell& a, const Dense& d) {
  if (d.M < 0 || d.K < 0 || d.N < 0 || a.steps < 0 || a.nnz < 0) return kBadArgument;
  if (d.M == 0 || d.N == 0) return kOk;
  return with_weight_type(a.wt, [&](auto tag) -> int {
    const auto* v = static_cast<decltype(tag)>(a.values);
    if (a.ptr_type == IndexType::kI64)
      return sell_typed(v, a.indices, static_cast<const int64_t*>(a.offsets), a.steps, a.nnz, d);
    return sell_typed(v, a.indices, static_cast<const int32_t*>(a.offsets), a.steps, a.nnz, d);
  });
}

}  // namespace cpu
}  // namespace sparsekern
