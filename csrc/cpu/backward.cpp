// Backward kernels of spmm (see backward.h), one path for every layout:
//
// 1. The format is expanded to coordinates (row, column) per stored value, in the order of
//    `values`, checking every index as the forward kernels do; entries in a format's padding
//    get column -1. O(nnz), against the O(nnz * N) products below.
// 2. sampled_dot: each entry is a dot product of a row of G and a row of B (threads take
//    equal ranges of entries; the format's own order keeps one of the two rows hot).
// 3. spmm_transposed: the coordinates are sorted by column (a counting sort, the CSR form of
//    A^T with float weights), then every output row k gathers its entries' rows of G, chunk
//    by chunk of N with the accumulators in registers (no scatter, no write conflicts).
// The AVX-512 variants (active_isa) copy G and B into L2-sized column chunks first and run
// BSR as register-tiled block products (see "BSR, AVX-512"); AVX2 and portable ones as above.
// AVX-512 CSC with rows sorted in every column (what sparsekern's converters produce) skips
// steps 1 and 3: it reads the format in place, per column and block of rows (CscCells), and
// builds only the block boundaries per call. Nothing is cached between calls.
#include "backward.h"

#include <cstdlib>
#include <memory>
#include <vector>

#include "common.h"
#include "isa.h"
#include "parallel.h"
#include "simd_avx2.h"
#include "simd_avx512.h"

namespace sparsekern {
namespace cpu {
namespace {

constexpr int kMaxParts = 256;

template <typename T>
float weight_at(const void* values, int64_t i) {
  return to_float(static_cast<const T*>(values)[i]);
}

float weight(const Format& a, int64_t i) {
  switch (a.wt) {
    case WeightType::kF32: return weight_at<float>(a.values, i);
    case WeightType::kBF16: return weight_at<bf16>(a.values, i);
    case WeightType::kF16: return weight_at<f16>(a.values, i);
  }
  return 0.0f;
}

template <typename RI, typename PI>
int expand_csc(const Format& a, const RI* rows, const PI* ptr, int32_t* row, int32_t* col) {
  if (!offsets_ok(ptr, a.K, a.numel)) return kBadOffsets;
  for (int64_t k = 0; k < a.K; ++k) {
    const int64_t s = idx(ptr, k), e = idx(ptr, k + 1);
    for (int64_t j = s; j < e; ++j) {
      const int64_t r = rows[j];
      if (r < 0 || r >= a.M) return kBadIndex;
      row[j] = static_cast<int32_t>(r);
      col[j] = static_cast<int32_t>(k);
    }
  }
  return kOk;
}

int expand_bsr(const Format& a, int32_t* row, int32_t* col) {
  const int32_t* cols = static_cast<const int32_t*>(a.indices);
  const int32_t* ptr = static_cast<const int32_t*>(a.offsets);
  const int64_t Mb = ceil_div(a.M, a.bm), Kb = ceil_div(a.K, a.bk);
  if (!offsets_ok(ptr, Mb, a.nnzb)) return kBadOffsets;
  for (int64_t br = 0; br < Mb; ++br) {
    for (int64_t b = ptr[br]; b < ptr[br + 1]; ++b) {
      const int64_t bc = cols[b];
      if (bc < 0 || bc >= Kb) return kBadIndex;
      for (int64_t i = 0; i < a.bm; ++i) {
        const int64_t r = br * a.bm + i;
        for (int64_t j = 0; j < a.bk; ++j) {
          const int64_t c = bc * a.bk + j, e = (b * a.bm + i) * a.bk + j;
          const bool inside = r < a.M && c < a.K;
          row[e] = inside ? static_cast<int32_t>(r) : 0;
          col[e] = inside ? static_cast<int32_t>(c) : -1;
        }
      }
    }
  }
  return kOk;
}

int expand_semi24(const Format& a, int32_t* row, int32_t* col) {
  const uint8_t* meta = static_cast<const uint8_t*>(a.indices);
  const int64_t G = ceil_div(a.K, 4), half = 2 * G, mcols = ceil_div(G, 2);
  for (int64_t m = 0; m < a.M; ++m) {
    for (int64_t g = 0; g < G; ++g) {
      const int nib = (meta[m * mcols + g / 2] >> (4 * (g % 2))) & 0xF;
      const int p0 = nib & 3, p1 = nib >> 2;
      if (p0 >= p1) return kBadMeta;
      const int64_t e = m * half + 2 * g;
      const int64_t c0 = 4 * g + p0, c1 = 4 * g + p1;
      row[e] = row[e + 1] = static_cast<int32_t>(m);
      col[e] = c0 < a.K ? static_cast<int32_t>(c0) : -1;
      col[e + 1] = c1 < a.K ? static_cast<int32_t>(c1) : -1;
    }
  }
  return kOk;
}

// Coordinates of every stored value (see the file comment); returns a status.
int expand(const Format& a, int32_t* row, int32_t* col) {
  if (a.M > kMaxDim || a.K > kMaxDim) return kBadArgument;
  switch (a.layout) {
    case SparseLayout::kSemi24: return expand_semi24(a, row, col);
    case SparseLayout::kBsr: return expand_bsr(a, row, col);
    case SparseLayout::kCsc: {
      const bool r16 = a.idx_type == IndexType::kI16, p64 = a.off_type == IndexType::kI64;
      const void* r = a.indices;
      const void* p = a.offsets;
      if (r16 && p64) return expand_csc(a, static_cast<const int16_t*>(r), static_cast<const int64_t*>(p), row, col);
      if (r16) return expand_csc(a, static_cast<const int16_t*>(r), static_cast<const int32_t*>(p), row, col);
      if (p64) return expand_csc(a, static_cast<const int32_t*>(r), static_cast<const int64_t*>(p), row, col);
      return expand_csc(a, static_cast<const int32_t*>(r), static_cast<const int32_t*>(p), row, col);
    }
  }
  return kBadArgument;
}

// ----------------------------------------------------------------------------- sampled dot

float dot_portable(const float* x, const float* y, int64_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) s[u] += x[i + u] * y[i + u];
  float t = 0.0f;
  for (; i < n; ++i) t += x[i] * y[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])) + t;
}

#if SK_HAVE_AVX2_KERNELS
SK_AVX2 float dot_avx2(const float* x, const float* y, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}
#endif

// ----------------------------------------------------------------------------- transposed

// out[k, n0:n0+nb] = sum_j w[j] * G[row[j], n0:n0+nb] for k in [k0, k1).
void gather_rows_portable(const int64_t* ptr, const int32_t* row, const float* w, const float* G,
                          int64_t N, float* out, int64_t k0, int64_t k1, int64_t n0, int64_t nb) {
  float acc[64];
  for (int64_t k = k0; k < k1; ++k) {
    for (int64_t j = 0; j < nb; ++j) acc[j] = 0.0f;
    for (int64_t e = ptr[k]; e < ptr[k + 1]; ++e) {
      const float* g = G + static_cast<int64_t>(row[e]) * N + n0;
      const float v = w[e];
      for (int64_t j = 0; j < nb; ++j) acc[j] += v * g[j];
    }
    float* o = out + k * N + n0;
    for (int64_t j = 0; j < nb; ++j) o[j] = acc[j];
  }
}

#if SK_HAVE_AVX2_KERNELS
// NV accumulators (8 * NV columns) per output row: with NV = 8 they and the broadcast weight
// fill 9 of the 16 ymm registers (a second set of accumulators would spill), and 8 chains
// cover the FMA latency.
template <int NV>
SK_AVX2 void gather_rows_avx2_nv(const int64_t* ptr, const int32_t* row, const float* w,
                                 const float* G, int64_t N, float* out, int64_t k0, int64_t k1,
                                 int64_t n0) {
  for (int64_t k = k0; k < k1; ++k) {
    __m256 acc[NV];
    SK_UNROLL for (int u = 0; u < NV; ++u) acc[u] = _mm256_setzero_ps();
    for (int64_t e = ptr[k]; e < ptr[k + 1]; ++e) {
      const float* g = G + static_cast<int64_t>(row[e]) * N + n0;
      const __m256 wv = _mm256_broadcast_ss(w + e);
      SK_UNROLL for (int u = 0; u < NV; ++u)
        acc[u] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(g + 8 * u), acc[u]);
    }
    float* o = out + k * N + n0;
    SK_UNROLL for (int u = 0; u < NV; ++u) _mm256_storeu_ps(o + 8 * u, acc[u]);
  }
}
#endif

#if SK_HAVE_AVX512_KERNELS
// Mask of the first n (0 <= n <= 16) lanes.
SK_AVX512_INLINE __mmask16 lanes16(int64_t n) {
  return static_cast<__mmask16>(n >= 16 ? 0xFFFFu : n <= 0 ? 0u : (1u << n) - 1u);
}

#endif

// Rows [k0, k1) of out, all N columns, in chunks of 64 (then 8) columns.
void gather_rows(Isa isa, const int64_t* ptr, const int32_t* row, const float* w,
                 const float* G, int64_t N, float* out, int64_t k0, int64_t k1) {
  int64_t n0 = 0;
#if SK_HAVE_AVX2_KERNELS
  if (isa == Isa::kAvx2) {
    for (; n0 + 64 <= N; n0 += 64) gather_rows_avx2_nv<8>(ptr, row, w, G, N, out, k0, k1, n0);
    for (; n0 + 8 <= N; n0 += 8) gather_rows_avx2_nv<1>(ptr, row, w, G, N, out, k0, k1, n0);
  }
#endif
  for (; n0 < N; n0 += 64)
    gather_rows_portable(ptr, row, w, G, N, out, k0, k1, n0, min_i64(64, N - n0));
}

// ----------------------------------------------------------------------------- BSR, AVX-512
// BSR blocks are small dense matrices, so both products run as register-tiled micro-GEMMs
// per block instead of one entry at a time (no coordinate expansion).
#if SK_HAVE_AVX512_KERNELS

// Block rows of the blocks of block column bc: blocks cblk[cptr[bc] .. cptr[bc + 1]).
struct BsrByColumn {
  std::vector<int64_t> cptr;
  std::vector<int32_t> cblk, cbr;
};

// Checks a BSR's offsets and block columns (as expand_bsr) and sorts its blocks by column.
int bsr_by_column(const Format& a, BsrByColumn* t) {
  const int32_t* cols = static_cast<const int32_t*>(a.indices);
  const int32_t* ptr = static_cast<const int32_t*>(a.offsets);
  const int64_t Mb = ceil_div(a.M, a.bm), Kb = ceil_div(a.K, a.bk);
  if (!offsets_ok(ptr, Mb, a.nnzb)) return kBadOffsets;
  t->cptr.assign(static_cast<size_t>(Kb) + 1, 0);
  for (int64_t br = 0; br < Mb; ++br) {
    for (int64_t b = ptr[br]; b < ptr[br + 1]; ++b) {
      if (cols[b] < 0 || cols[b] >= Kb) return kBadIndex;
      ++t->cptr[static_cast<size_t>(cols[b]) + 1];
    }
  }
  for (int64_t k = 0; k < Kb; ++k) t->cptr[k + 1] += t->cptr[k];
  t->cblk.resize(static_cast<size_t>(max_i64(a.nnzb, 1)));
  t->cbr.resize(t->cblk.size());
  std::vector<int64_t> next(t->cptr.begin(), t->cptr.end() - 1);
  for (int64_t br = 0; br < Mb; ++br)
    for (int64_t b = ptr[br]; b < ptr[br + 1]; ++b) {
      const int64_t q = next[cols[b]]++;
      t->cblk[q] = static_cast<int32_t>(b);
      t->cbr[q] = static_cast<int32_t>(br);
    }
  return kOk;
}

// out rows c0 + [j0, j0 + JR), columns [n0, n0 + nb) (nb <= 16 * NV) = sum over the blocks
// of the column of block^T[j, i] * G[r0 + i, n0 ..]: each G row chunk loaded once serves
// JR output rows (JR * NV accumulators).
template <int JR, int NV>
SK_AVX512 void bsr_t_tile(const BsrByColumn& t, int64_t bc, const float* w, const Format& a,
                          const float* G, int64_t N, float* out, int64_t j0, int64_t n0,
                          int64_t nb) {
  __mmask16 mk[NV];
  SK_UNROLL for (int u = 0; u < NV; ++u) mk[u] = lanes16(nb - 16 * u);
  __m512 acc[JR][NV];
  SK_UNROLL for (int r = 0; r < JR; ++r)
    SK_UNROLL for (int u = 0; u < NV; ++u) acc[r][u] = _mm512_setzero_ps();
  const int64_t bsz = a.bm * a.bk;
  for (int64_t q = t.cptr[bc]; q < t.cptr[bc + 1]; ++q) {
    const int64_t r0 = static_cast<int64_t>(t.cbr[q]) * a.bm;
    const int64_t rows = min_i64(a.bm, a.M - r0);  // rows past M are format padding
    const float* wb = w + static_cast<int64_t>(t.cblk[q]) * bsz + j0;
    for (int64_t i = 0; i < rows; ++i) {
      const float* g = G + (r0 + i) * N + n0;
      __m512 gv[NV];
      SK_UNROLL for (int u = 0; u < NV; ++u) gv[u] = _mm512_maskz_loadu_ps(mk[u], g + 16 * u);
      SK_UNROLL for (int r = 0; r < JR; ++r) {
        const __m512 wv = _mm512_set1_ps(wb[i * a.bk + r]);
        SK_UNROLL for (int u = 0; u < NV; ++u) acc[r][u] = _mm512_fmadd_ps(wv, gv[u], acc[r][u]);
      }
    }
  }
  const int64_t c0 = bc * a.bk;
  SK_UNROLL for (int r = 0; r < JR; ++r) {
    float* o = out + (c0 + j0 + r) * N + n0;
    SK_UNROLL for (int u = 0; u < NV; ++u) _mm512_mask_storeu_ps(o + 16 * u, mk[u], acc[r][u]);
  }
}

// Block columns [b0, b1) of A^T @ G: every output row of them, all N columns.
SK_AVX512 void bsr_t_columns(const BsrByColumn& t, const float* w, const Format& a,
                             const float* G, int64_t N, float* out, int64_t b0, int64_t b1) {
  constexpr int kJR = 6, kNV = 4;  // 24 accumulators + 4 G vectors + 1 weight of 32 zmm
  for (int64_t bc = b0; bc < b1; ++bc) {
    const int64_t cols = min_i64(a.bk, a.K - bc * a.bk);  // columns past K are padding
    for (int64_t n0 = 0; n0 < N; n0 += 16 * kNV) {
      const int64_t nb = min_i64(16 * kNV, N - n0);
      int64_t j = 0;
      for (; j + kJR <= cols; j += kJR) bsr_t_tile<kJR, kNV>(t, bc, w, a, G, N, out, j, n0, nb);
      for (; j < cols; ++j) bsr_t_tile<1, kNV>(t, bc, w, a, G, N, out, j, n0, nb);
    }
  }
}

// out[b, i0 + [0, IR), j0 + [0, JR)] = G[r0 + i, :] . B[c0 + j, :] (IR * JR accumulators,
// IR + JR loads per IR * JR multiply-adds).
template <int IR, int JR>
SK_AVX512 void bsr_dot_tile(const float* G, const float* B, int64_t N, int64_t r0, int64_t c0,
                            int64_t i0, int64_t j0, float* o, int64_t bk) {
  __m512 acc[IR][JR];
  SK_UNROLL for (int i = 0; i < IR; ++i)
    SK_UNROLL for (int j = 0; j < JR; ++j) acc[i][j] = _mm512_setzero_ps();
  const float* g = G + (r0 + i0) * N;
  const float* b = B + (c0 + j0) * N;
  for (int64_t n = 0; n < N; n += 16) {
    const __mmask16 k = lanes16(N - n);
    __m512 gv[IR];
    SK_UNROLL for (int i = 0; i < IR; ++i) gv[i] = _mm512_maskz_loadu_ps(k, g + i * N + n);
    SK_UNROLL for (int j = 0; j < JR; ++j) {
      const __m512 bv = _mm512_maskz_loadu_ps(k, b + j * N + n);
      SK_UNROLL for (int i = 0; i < IR; ++i) acc[i][j] = _mm512_fmadd_ps(gv[i], bv, acc[i][j]);
    }
  }
  SK_UNROLL for (int i = 0; i < IR; ++i)
    SK_UNROLL for (int j = 0; j < JR; ++j)
      o[(i0 + i) * bk + j0 + j] = _mm512_reduce_add_ps(acc[i][j]);
}

// sampled_dot of blocks [q0, q1) (in the format's order; block row of block b: brow[b]).
SK_AVX512 void bsr_dot_blocks(const Format& a, const int32_t* brow, const float* G,
                              const float* B, int64_t N, float* out, int64_t q0, int64_t q1) {
  constexpr int kIR = 4, kJR = 4;
  const int32_t* cols = static_cast<const int32_t*>(a.indices);
  const int64_t bsz = a.bm * a.bk;
  for (int64_t b = q0; b < q1; ++b) {
    const int64_t r0 = static_cast<int64_t>(brow[b]) * a.bm, c0 = static_cast<int64_t>(cols[b]) * a.bk;
    const int64_t rows = min_i64(a.bm, a.M - r0), ncols = min_i64(a.bk, a.K - c0);
    float* o = out + b * bsz;
    if (rows < a.bm || ncols < a.bk)  // padding entries get 0
      for (int64_t e = 0; e < bsz; ++e) o[e] = 0.0f;
    int64_t i = 0;
    for (; i + kIR <= rows; i += kIR) {
      int64_t j = 0;
      for (; j + kJR <= ncols; j += kJR) bsr_dot_tile<kIR, kJR>(G, B, N, r0, c0, i, j, o, a.bk);
      for (; j < ncols; ++j) bsr_dot_tile<kIR, 1>(G, B, N, r0, c0, i, j, o, a.bk);
    }
    for (; i < rows; ++i) {
      int64_t j = 0;
      for (; j + kJR <= ncols; j += kJR) bsr_dot_tile<1, kJR>(G, B, N, r0, c0, i, j, o, a.bk);
      for (; j < ncols; ++j) bsr_dot_tile<1, 1>(G, B, N, r0, c0, i, j, o, a.bk);
    }
  }
}
#endif  // SK_HAVE_AVX512_KERNELS

// The values as float32 (a copy unless they already are).
const float* float_values(const Format& a, std::vector<float>* buf) {
  if (a.wt == WeightType::kF32) return static_cast<const float*>(a.values);
  buf->resize(static_cast<size_t>(max_i64(a.numel, 1)));
  for (int64_t i = 0; i < a.numel; ++i) (*buf)[i] = weight(a, i);
  return buf->data();
}

int bsr_transposed_avx512(const Format& a, const float* G, int64_t N, float* out,
                          int num_threads) {
#if SK_HAVE_AVX512_KERNELS
  BsrByColumn t;
  const int s = bsr_by_column(a, &t);
  if (s != kOk) return s;
  std::vector<float> wbuf;
  const float* w = float_values(a, &wbuf);
  const int64_t Kb = ceil_div(a.K, a.bk);
  const double work = (static_cast<double>(a.numel) + a.K) * static_cast<double>(N) / 16.0;
  const int nt = threads_for(num_threads, work);
  const int parts = parts_for(nt, Kb, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  split_by_prefix(t.cptr.data(), Kb, 1.0, parts, bounds);
  return parallel_parts(parts, nt, [&](int p) {
    bsr_t_columns(t, w, a, G, N, out, bounds[p], bounds[p + 1]);
    return static_cast<int>(kOk);
  });
#else
  (void)a, (void)G, (void)N, (void)out, (void)num_threads;
  return kBadArgument;
#endif
}

int bsr_sampled_dot_avx512(const Format& a, const float* G, const float* B, int64_t N,
                           float* out, int num_threads) {
#if SK_HAVE_AVX512_KERNELS
  const int32_t* cols = static_cast<const int32_t*>(a.indices);
  const int32_t* ptr = static_cast<const int32_t*>(a.offsets);
  const int64_t Mb = ceil_div(a.M, a.bm), Kb = ceil_div(a.K, a.bk);
  if (!offsets_ok(ptr, Mb, a.nnzb)) return kBadOffsets;
  std::vector<int32_t> brow(static_cast<size_t>(max_i64(a.nnzb, 1)));
  for (int64_t br = 0; br < Mb; ++br) {
    for (int64_t b = ptr[br]; b < ptr[br + 1]; ++b) {
      if (cols[b] < 0 || cols[b] >= Kb) return kBadIndex;
      brow[b] = static_cast<int32_t>(br);
    }
  }
  const int nt = threads_for(num_threads, static_cast<double>(a.numel) * N / 16.0);
  const int parts = parts_for(nt, a.nnzb, kMaxParts);
  return parallel_parts(parts, nt, [&](int p) {
    bsr_dot_blocks(a, brow.data(), G, B, N, out, a.nnzb * p / parts, a.nnzb * (p + 1) / parts);
    return static_cast<int>(kOk);
  });
#else
  (void)a, (void)G, (void)B, (void)N, (void)out, (void)num_threads;
  return kBadArgument;
#endif
}

// ----------------------------------------------------------------------------- chunked G, B
// The entry-wise products read rows of G (and B) in random order. With N a power of two the
// rows' chunks fall into a few cache sets (a 2 KB row stride maps every row to the same
// 1/32 of L2), so the AVX-512 paths first copy G (and B) chunk by chunk of C <= 64 columns
// into contiguous [rows, C] slabs: one slab (1 MB at M = 4096) then stays in L2 while every
// entry uses it.
struct Chunks {
  const float* data = nullptr;  // chunk c of row r: data + (c * rows + r) * width
  int64_t rows = 0, width = 0, count = 0;
};

// 16 to 64 columns (never 0: N == 0 never reaches the chunked paths, but the width divides).
int64_t chunk_width(int64_t N) { return min_i64(64, max_i64(16, round_up(N, 16))); }

#if SK_HAVE_AVX512_KERNELS
// dst[i * ldd + j] = src[j * lds + i] for i, j < 16: a 16 x 16 transpose in registers.
SK_AVX512 void transpose16(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m512 r[16];
  SK_UNROLL for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  transpose16x16(r);
  SK_UNROLL for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ldd, r[i]);
}
#endif

// dst[(r - r0) * ldd + j] = X(r, n0 + j) for r in [r0, r1), j in [0, nb): a row-contiguous X
// row by row, a column-contiguous one (a transposed view: dY of x @ W.T) in 16 x 16 tiles
// (transposed in registers on AVX-512), any other (expanded, sliced) element
// by element.
void gather_block(Strided X, int64_t r0, int64_t r1, int64_t n0, int64_t nb, float* dst,
                  int64_t ldd) {
  if (X.cs == 1 || nb == 1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* src = X.data + r * X.rs + n0 * X.cs;
      float* o = dst + (r - r0) * ldd;
      if (X.cs == 1) std::memcpy(o, src, static_cast<size_t>(nb) * sizeof(float));
      else o[0] = src[0];
    }
    return;
  }
  if (X.rs == 1) {
#if SK_HAVE_AVX512_KERNELS
    const bool wide = active_isa() == Isa::kAvx512;
#else
    const bool wide = false;
#endif
    for (int64_t j0 = 0; j0 < nb; j0 += 16)
      for (int64_t i0 = r0; i0 < r1; i0 += 16) {
        const int64_t jn = min_i64(nb, j0 + 16), in = min_i64(r1, i0 + 16);
#if SK_HAVE_AVX512_KERNELS
        if (wide && jn - j0 == 16 && in - i0 == 16) {
          transpose16(X.data + (n0 + j0) * X.cs + i0, X.cs, dst + (i0 - r0) * ldd + j0, ldd);
          continue;
        }
#endif
        for (int64_t j = j0; j < jn; ++j) {
          const float* src = X.data + (n0 + j) * X.cs;
          for (int64_t i = i0; i < in; ++i) dst[(i - r0) * ldd + j] = src[i];
        }
      }
    return;
  }
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t j = 0; j < nb; ++j) dst[(r - r0) * ldd + j] = X.data[r * X.rs + (n0 + j) * X.cs];
}

// Work units of copying rows x N floats, for threads_for.
double copy_work(int64_t rows, int64_t N) {
  return static_cast<double>(rows) * static_cast<double>(N) / 4.0;
}

// Packs X [rows, N] (any strides) into buf as Chunks (tails zero-padded), 64 rows at a
// time (wide: 128 columns from N = 128 on, for the sampled dot: half the horizontal sums
// per entry); kNoMemory when the buffer cannot be had.
int pack_chunks(Strided X, int64_t rows, int64_t N, Scratch& buf, int nt, Chunks* c,
                bool wide = false) {
  c->rows = rows;
  c->width = wide && N >= 128 ? 128 : chunk_width(N);
  c->count = ceil_div(N, c->width);
  int64_t per_chunk;
  if (!checked_mul(rows, c->width, &per_chunk)) return kNoMemory;
  float* d = buf.get_as<float>(per_chunk, c->count);
  if (d == nullptr) return kNoMemory;
  c->data = d;
  const int64_t W = c->width;
  const int parts = parts_for(nt, ceil_div(rows, 64), kMaxParts);
  const int64_t blocks = ceil_div(rows, 64);
  return parallel_parts(parts, nt, [&](int p) {
    for (int64_t rb = blocks * p / parts; rb < blocks * (p + 1) / parts; ++rb) {
      const int64_t r0 = rb * 64, r1 = min_i64(rows, r0 + 64);
      for (int64_t ch = 0; ch < c->count; ++ch) {
        const int64_t n0 = ch * W, nb = min_i64(W, N - n0);
        float* o = d + (ch * rows + r0) * W;
        gather_block(X, r0, r1, n0, nb, o, W);
        if (nb < W)
          for (int64_t r = r0; r < r1; ++r)
            for (int64_t j = nb; j < W; ++j) o[(r - r0) * W + j] = 0.0f;
      }
    }
    return static_cast<int>(kOk);
  });
}

// Copies X into out [rows, N] row-major, 64 rows per part.
int copy_rows(Strided X, int64_t rows, int64_t N, float* d, int num_threads) {
  const int nt = threads_for(num_threads, copy_work(rows, N));
  const int64_t blocks = ceil_div(rows, 64);
  const int parts = parts_for(nt, blocks, kMaxParts);
  return parallel_parts(parts, nt, [&](int p) {
    for (int64_t rb = blocks * p / parts; rb < blocks * (p + 1) / parts; ++rb) {
      const int64_t r0 = rb * 64, r1 = min_i64(rows, r0 + 64);
      gather_block(X, r0, r1, 0, N, d + r0 * N, N);
    }
    return static_cast<int>(kOk);
  });
}

// X as a row-major [rows, N] array: its own memory when it is one, else a copy in buf
// (kNoMemory when the copy cannot be had).
int row_major(Strided X, int64_t rows, int64_t N, Scratch& buf, int num_threads,
              const float** out) {
  if ((N <= 1 || X.cs == 1) && (rows <= 1 || X.rs == N)) {
    *out = X.data;
    return kOk;
  }
  float* d = buf.get_as<float>(rows, N);
  if (d == nullptr) return kNoMemory;
  *out = d;
  return copy_rows(X, rows, N, d, num_threads);
}

#if SK_HAVE_AVX512_KERNELS
// out rows [k0, k1), columns of chunk ch: gather_rows_avx512_nv over a packed slab.
template <int NV>
SK_AVX512 void gather_chunk_avx512(const int64_t* ptr, const int32_t* row, const float* w,
                                   const Chunks& g, int64_t ch, int64_t N, float* out,
                                   int64_t k0, int64_t k1) {
  const float* slab = g.data + ch * g.rows * g.width;
  const int64_t n0 = ch * g.width, nb = min_i64(g.width, N - n0);
  __mmask16 mk[NV];
  SK_UNROLL for (int u = 0; u < NV; ++u) mk[u] = lanes16(nb - 16 * u);
  for (int64_t k = k0; k < k1; ++k) {
    __m512 acc[NV];
    SK_UNROLL for (int u = 0; u < NV; ++u) acc[u] = _mm512_setzero_ps();
    for (int64_t e = ptr[k]; e < ptr[k + 1]; ++e) {
      const float* gr = slab + static_cast<int64_t>(row[e]) * (16 * NV);
      const __m512 wv = _mm512_set1_ps(w[e]);
      SK_UNROLL for (int u = 0; u < NV; ++u)
        acc[u] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(gr + 16 * u), acc[u]);
    }
    float* o = out + k * N + n0;
    SK_UNROLL for (int u = 0; u < NV; ++u) _mm512_mask_storeu_ps(o + 16 * u, mk[u], acc[u]);
  }
}

SK_AVX512 void gather_rows_chunked_avx512(const int64_t* ptr, const int32_t* row,
                                          const float* w, const Chunks& g, int64_t N,
                                          float* out, int64_t k0, int64_t k1) {
  for (int64_t ch = 0; ch < g.count; ++ch) {
    switch (g.width / 16) {
      case 1: gather_chunk_avx512<1>(ptr, row, w, g, ch, N, out, k0, k1); break;
      case 2: gather_chunk_avx512<2>(ptr, row, w, g, ch, N, out, k0, k1); break;
      case 3: gather_chunk_avx512<3>(ptr, row, w, g, ch, N, out, k0, k1); break;
      default: gather_chunk_avx512<4>(ptr, row, w, g, ch, N, out, k0, k1); break;
    }
  }
}


// The entries bucketed by (block of kTileRows rows, column): a block's G chunk (kTileRows x
// 64 floats, 32 KB; 64 KB for the sampled dot's 128-column chunks, then L2 but still close)
// stays near while every column's entries in it use it, so each G row chunk comes from
// memory once per block instead of once per entry. ptr[mb * K + k] ..
// ptr[mb * K + k + 1]: the entries of column k in row block mb; per entry its row, float
// weight and index in `values`; cnt[k]: column k's entries (the thread split).
constexpr int64_t kTileRows = 128;
struct Tiles {
  int64_t nmb = 0, K = 0;
  std::vector<int64_t> ptr, cnt;
  std::vector<int32_t> row;
  std::vector<float> w;
  std::vector<int64_t> ent;
};

// The two ways entries reach the tiled kernels. Cells(mb, k) = the entries of column k in
// row block mb, [begin, end); per entry its row, float weight and index in `values`.
// TileCells: bucketed copies (make_tiles), any layout. CscCells: a CSC matrix whose rows are
// sorted within each column, read in place: a cell is then a contiguous run of its column,
// so only the run boundaries are built per call (csc_row_blocks), no copy of the entries.
struct TileCells {
  const Tiles& t;
  int64_t begin(int64_t mb, int64_t k) const { return t.ptr[mb * t.K + k]; }
  int64_t end(int64_t mb, int64_t k) const { return t.ptr[mb * t.K + k + 1]; }
  int64_t row(int64_t e) const { return t.row[e]; }
  float w(int64_t e) const { return t.w[e]; }
  int64_t ent(int64_t e) const { return t.ent[e]; }
};

template <typename RI>
struct CscCells {
  const int64_t* bnd;  // [(nmb + 1) * K]: bnd[mb * K + k] = first entry of column k in block mb
  int64_t K;
  const RI* rows;
  const float* wf;  // the values as float32 (null for the sampled dot, which needs none)
  int64_t begin(int64_t mb, int64_t k) const { return bnd[mb * K + k]; }
  int64_t end(int64_t mb, int64_t k) const { return bnd[(mb + 1) * K + k]; }
  int64_t row(int64_t e) const { return static_cast<int64_t>(rows[e]); }
  float w(int64_t e) const { return wf[e]; }
  int64_t ent(int64_t e) const { return e; }
};

// acc += the entries [e, e1) of one cell (one column, one block of rows) times their rows of
// the slab (NV vectors each).
template <int NV, class Cells>
SK_AVX512 inline void tiles_t_tail(const Cells& c, const float* slab, int64_t e, int64_t e1,
                                   __m512* acc) {
  constexpr int64_t W = 16 * NV;
  for (; e < e1; ++e) {
    const float* gr = slab + c.row(e) * W;
    const __m512 wv = _mm512_set1_ps(c.w(e));
    SK_UNROLL for (int u = 0; u < NV; ++u)
      acc[u] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(gr + 16 * u), acc[u]);
  }
}

// out rows [k0, k1) of A^T @ G over the packed chunks of G (NV = width / 16).
template <int NV, class Cells>
SK_AVX512 void tiles_t_chunk(const Cells& c, int64_t nmb, const Chunks& g, int64_t ch, int64_t N,
                             float* out, int64_t k0, int64_t k1) {
  constexpr int64_t W = 16 * NV;
  const float* slab = g.data + ch * g.rows * W;
  const int64_t n0 = ch * W, nb = min_i64(W, N - n0);
  __mmask16 mk[NV];
  SK_UNROLL for (int u = 0; u < NV; ++u) mk[u] = lanes16(nb - 16 * u);
  for (int64_t k = k0; k < k1; ++k)
    SK_UNROLL for (int u = 0; u < NV; ++u)
      _mm512_mask_storeu_ps(out + k * N + n0 + 16 * u, mk[u], _mm512_setzero_ps());
  // Two columns at a time: their entries feed two independent sets of NV accumulators, so
  // 2 * NV FMA chains hide the FMA latency (one column's NV chains left the FMA units half
  // idle: a cell holds ~10 entries, each a dependent FMA per accumulator).
  for (int64_t mb = 0; mb < nmb; ++mb) {
    int64_t k = k0;
    for (; k + 1 < k1; k += 2) {
      int64_t ea = c.begin(mb, k), eb = c.begin(mb, k + 1);
      const int64_t ea1 = c.end(mb, k), eb1 = c.end(mb, k + 1);
      if (ea == ea1 && eb == eb1) continue;
      float* oa = out + k * N + n0;
      float* ob = oa + N;
      __m512 acc[NV], bcc[NV];
      SK_UNROLL for (int u = 0; u < NV; ++u) {
        acc[u] = _mm512_maskz_loadu_ps(mk[u], oa + 16 * u);
        bcc[u] = _mm512_maskz_loadu_ps(mk[u], ob + 16 * u);
      }
      for (; ea < ea1 && eb < eb1; ++ea, ++eb) {
        const float* ga = slab + c.row(ea) * W;
        const float* gb = slab + c.row(eb) * W;
        const __m512 wa = _mm512_set1_ps(c.w(ea)), wb = _mm512_set1_ps(c.w(eb));
        SK_UNROLL for (int u = 0; u < NV; ++u) {
          acc[u] = _mm512_fmadd_ps(wa, _mm512_loadu_ps(ga + 16 * u), acc[u]);
          bcc[u] = _mm512_fmadd_ps(wb, _mm512_loadu_ps(gb + 16 * u), bcc[u]);
        }
      }
      tiles_t_tail<NV>(c, slab, ea, ea1, acc);
      tiles_t_tail<NV>(c, slab, eb, eb1, bcc);
      SK_UNROLL for (int u = 0; u < NV; ++u) {
        _mm512_mask_storeu_ps(oa + 16 * u, mk[u], acc[u]);
        _mm512_mask_storeu_ps(ob + 16 * u, mk[u], bcc[u]);
      }
    }
    if (k < k1) {
      const int64_t e0 = c.begin(mb, k), e1 = c.end(mb, k);
      if (e0 == e1) continue;
      float* o = out + k * N + n0;
      __m512 acc[NV];
      SK_UNROLL for (int u = 0; u < NV; ++u) acc[u] = _mm512_maskz_loadu_ps(mk[u], o + 16 * u);
      tiles_t_tail<NV>(c, slab, e0, e1, acc);
      SK_UNROLL for (int u = 0; u < NV; ++u) _mm512_mask_storeu_ps(o + 16 * u, mk[u], acc[u]);
    }
  }
}

// The 16 lane-wise partial sums of gr[0 : 16 * NV] * bv, in two FMA chains.
template <int NV>
SK_AVX512 inline __m512 dot_chunk(const float* gr, const __m512* bv) {
  __m512 a = _mm512_mul_ps(_mm512_loadu_ps(gr), bv[0]);
  if (NV == 1) return a;
  __m512 b = _mm512_mul_ps(_mm512_loadu_ps(gr + 16), bv[1]);
  SK_UNROLL for (int u = 2; u < NV; u += 2) {
    a = _mm512_fmadd_ps(_mm512_loadu_ps(gr + 16 * u), bv[u], a);
    if (u + 1 < NV) b = _mm512_fmadd_ps(_mm512_loadu_ps(gr + 16 * (u + 1)), bv[u + 1], b);
  }
  return _mm512_add_ps(a, b);
}

// {sum of a's lanes, of b's, of c's, of d's}.
SK_AVX512 inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] and the same for c, d
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  // per 128-bit lane: [a, b, c, d] partial sums (shuffle_ps picks within each 128-bit lane)
  const __m512 q = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(q),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(q), 1)));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// out[ent] += the chunk's part of G[row] . B[k] for the entries of columns [k0, k1).
template <int NV, class Cells>
SK_AVX512 void tiles_dot_chunk(const Cells& c, int64_t nmb, const Chunks& g, const Chunks& b,
                               int64_t ch, float* out, int64_t k0, int64_t k1) {
  constexpr int64_t W = 16 * NV;
  const float* gs = g.data + ch * g.rows * W;
  const float* bs = b.data + ch * b.rows * W;
  for (int64_t mb = 0; mb < nmb; ++mb) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t e0 = c.begin(mb, k), e1 = c.end(mb, k);
      if (e0 == e1) continue;
      __m512 bv[NV];
      SK_UNROLL for (int u = 0; u < NV; ++u) bv[u] = _mm512_loadu_ps(bs + k * W + 16 * u);
      int64_t e = e0;
      // Four entries at a time, their sums reduced together (reduce4: 2 shuffles and ~1 add
      // per entry against 4 and 4 for a lone _mm512_reduce_add_ps, whose shuffles compete
      // with the FMAs for the same port).
      for (; e + 4 <= e1; e += 4) {
        const __m128 s = reduce4(dot_chunk<NV>(gs + c.row(e) * W, bv),
                                 dot_chunk<NV>(gs + c.row(e + 1) * W, bv),
                                 dot_chunk<NV>(gs + c.row(e + 2) * W, bv),
                                 dot_chunk<NV>(gs + c.row(e + 3) * W, bv));
        alignas(16) float v[4];
        _mm_store_ps(v, s);
        SK_UNROLL for (int j = 0; j < 4; ++j) out[c.ent(e + j)] += v[j];
      }
      for (; e < e1; ++e)
        out[c.ent(e)] += _mm512_reduce_add_ps(dot_chunk<NV>(gs + c.row(e) * W, bv));
    }
  }
}

// Columns [k0, k1): every chunk of N (templated on the chunk width).
template <class Cells>
SK_AVX512 void tiles_columns(const Cells& c, int64_t nmb, const Chunks& g, const Chunks* b,
                             int64_t N, float* out, int64_t k0, int64_t k1) {
  for (int64_t ch = 0; ch < g.count; ++ch) {
    const int nv = static_cast<int>(g.width / 16);
    if (b == nullptr) {
      if (nv == 1) tiles_t_chunk<1>(c, nmb, g, ch, N, out, k0, k1);
      else if (nv == 2) tiles_t_chunk<2>(c, nmb, g, ch, N, out, k0, k1);
      else if (nv == 3) tiles_t_chunk<3>(c, nmb, g, ch, N, out, k0, k1);
      else tiles_t_chunk<4>(c, nmb, g, ch, N, out, k0, k1);
    } else {
      if (nv == 1) tiles_dot_chunk<1>(c, nmb, g, *b, ch, out, k0, k1);
      else if (nv == 2) tiles_dot_chunk<2>(c, nmb, g, *b, ch, out, k0, k1);
      else if (nv == 3) tiles_dot_chunk<3>(c, nmb, g, *b, ch, out, k0, k1);
      else if (nv == 4) tiles_dot_chunk<4>(c, nmb, g, *b, ch, out, k0, k1);
      else tiles_dot_chunk<8>(c, nmb, g, *b, ch, out, k0, k1);
    }
  }
}
#endif  // SK_HAVE_AVX512_KERNELS

struct Coords {
  std::vector<int32_t> row, col;
};

int make_coords(const Format& a, Coords* c) {
  c->row.resize(static_cast<size_t>(a.numel));
  c->col.resize(static_cast<size_t>(a.numel));
  return expand(a, c->row.data(), c->col.data());
}

// Buckets the coordinates (see Tiles); false when the bucket table would be much larger
// than the entries (a very tall or wide A: the caller takes the per-entry path).
bool make_tiles(const Format& a, const Coords& c, Tiles* t) {
  t->nmb = ceil_div(a.M, kTileRows);
  t->K = a.K;
  int64_t cells;
  if (!checked_mul(t->nmb, a.K, &cells) || cells > max_i64(4 * a.numel, int64_t{1} << 20))
    return false;
  t->ptr.assign(static_cast<size_t>(cells) + 1, 0);
  t->cnt.assign(static_cast<size_t>(a.K) + 1, 0);
  for (int64_t e = 0; e < a.numel; ++e) {
    const int32_t k = c.col[e];
    if (k < 0) continue;
    ++t->ptr[(c.row[e] / kTileRows) * a.K + k + 1];
    ++t->cnt[static_cast<size_t>(k) + 1];
  }
  for (int64_t i = 0; i < cells; ++i) t->ptr[i + 1] += t->ptr[i];
  for (int64_t k = 0; k < a.K; ++k) t->cnt[k + 1] += t->cnt[k];
  const int64_t nnz = t->ptr[cells];
  t->row.resize(static_cast<size_t>(max_i64(nnz, 1)));
  t->w.resize(t->row.size());
  t->ent.resize(t->row.size());
  std::vector<int64_t> next(t->ptr.begin(), t->ptr.end() - 1);
  for (int64_t e = 0; e < a.numel; ++e) {
    const int32_t k = c.col[e];
    if (k < 0) continue;
    const int64_t q = next[(c.row[e] / kTileRows) * a.K + k]++;
    t->row[q] = c.row[e];
    t->w[q] = weight(a, e);
    t->ent[q] = e;
  }
  return true;
}

#if SK_HAVE_AVX512_KERNELS
// Both products over cells (B == nullptr: A^T @ G into out [K, N]; else the sampled dot
// products into out [numel]); prefix [K + 1]: entries before each column (the thread split).
// kNoMemory when the chunk buffers cannot be had.
template <class Cells, typename P>
int run_cells(const Format& a, const Cells& cells, int64_t nmb, const P* prefix, Strided G,
              const Strided* B, int64_t N, float* out, int num_threads) {
  const double entries = static_cast<double>(prefix[a.K] - prefix[0]);
  const int nt = threads_for(num_threads, (entries + a.K) * static_cast<double>(N) / 16.0);
  Chunks gc, bc;
  int s = pack_chunks(G, a.M, N, scratch_panel(), nt, &gc, B != nullptr);
  if (s == kOk && B != nullptr) s = pack_chunks(*B, a.K, N, scratch_accum(), nt, &bc, true);
  if (s != kOk) return s;
  if (B != nullptr)
    for (int64_t e = 0; e < a.numel; ++e) out[e] = 0.0f;  // padding entries stay 0
  const int parts = parts_for(nt, a.K, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  split_by_prefix(prefix, a.K, 1.0, parts, bounds);
  return parallel_parts(parts, nt, [&](int p) {
    tiles_columns(cells, nmb, gc, B != nullptr ? &bc : nullptr, N, out, bounds[p],
                  bounds[p + 1]);
    return static_cast<int>(kOk);
  });
}

// Returned by csc_row_blocks for a column whose rows are not sorted (not an error: the
// caller takes the bucketing path).
constexpr int kUnsorted = 100;

// bnd [(nmb + 1) * K] for CscCells: bnd[mb * K + k] = the first entry of column k with row
// >= mb * kTileRows, checking every offset and row index on the way. kUnsorted when some
// column's rows decrease; kBadArgument when the table would be much larger than the entries.
template <typename RI, typename PI>
int csc_row_blocks(const Format& a, const RI* rows, const PI* ptr, int64_t nmb, int nt,
                   std::vector<int64_t>* bnd) {
  if (!offsets_ok(ptr, a.K, a.numel)) return kBadOffsets;
  int64_t cells;
  if (!checked_mul(nmb + 1, a.K, &cells) || cells > max_i64(4 * a.numel, int64_t{1} << 20))
    return kBadArgument;
  bnd->resize(static_cast<size_t>(cells));
  int64_t* out = bnd->data();
  const int parts = parts_for(threads_for(nt, static_cast<double>(a.numel + cells) / 4.0), a.K,
                              kMaxParts);
  return parallel_parts(parts, nt, [&](int p) {
    for (int64_t k = a.K * p / parts; k < a.K * (p + 1) / parts; ++k) {
      const int64_t e1 = idx(ptr, k + 1);
      int64_t j = idx(ptr, k), prev = -1;
      for (int64_t mb = 0; mb < nmb; ++mb) {
        out[mb * a.K + k] = j;
        const int64_t limit = (mb + 1) * kTileRows;
        for (; j < e1; ++j) {
          const int64_t r = rows[j];
          if (r < 0 || r >= a.M) return static_cast<int>(kBadIndex);
          if (r < prev) return kUnsorted;
          if (r >= limit) break;
          prev = r;
        }
      }
      if (j != e1) return static_cast<int>(kBadIndex);  // rows past the last block (unreachable)
      out[nmb * a.K + k] = e1;
    }
    return static_cast<int>(kOk);
  });
}

// The CSC products with rows read in place (CscCells); kUnsorted or kBadArgument (nothing
// written) when the caller must take the bucketing path instead.
template <typename RI, typename PI>
int csc_cells_avx512(const Format& a, const RI* rows, const PI* ptr, Strided G, const Strided* B,
                     int64_t N, float* out, int num_threads) {
  const int64_t nmb = ceil_div(a.M, kTileRows);
  std::vector<int64_t> bnd;
  int s = csc_row_blocks(a, rows, ptr, nmb, num_threads, &bnd);
  if (s != kOk) return s;
  std::vector<float> wbuf;
  const float* wf = B == nullptr ? float_values(a, &wbuf) : nullptr;
  const CscCells<RI> cells{bnd.data(), a.K, rows, wf};
  return run_cells(a, cells, nmb, ptr, G, B, N, out, num_threads);
}

int csc_sorted_avx512(const Format& a, Strided G, const Strided* B, int64_t N, float* out,
                      int num_threads) {
  const bool r16 = a.idx_type == IndexType::kI16, p64 = a.off_type == IndexType::kI64;
  const void* r = a.indices;
  const void* p = a.offsets;
  if (r16 && p64)
    return csc_cells_avx512(a, static_cast<const int16_t*>(r), static_cast<const int64_t*>(p), G, B, N, out, num_threads);
  if (r16)
    return csc_cells_avx512(a, static_cast<const int16_t*>(r), static_cast<const int32_t*>(p), G, B, N, out, num_threads);
  if (p64)
    return csc_cells_avx512(a, static_cast<const int32_t*>(r), static_cast<const int64_t*>(p), G, B, N, out, num_threads);
  return csc_cells_avx512(a, static_cast<const int32_t*>(r), static_cast<const int32_t*>(p), G, B, N, out, num_threads);
}
#endif  // SK_HAVE_AVX512_KERNELS

// Both products over Tiles (any layout; see run_cells). kBadArgument (nothing written) when
// the tiles would be too large, so the caller falls back.
int tiled_avx512(const Format& a, const Coords& c, Strided G, const Strided* B, int64_t N,
                 float* out, int num_threads) {
#if SK_HAVE_AVX512_KERNELS
  Tiles t;
  if (N == 0 || !make_tiles(a, c, &t)) return kBadArgument;
  return run_cells(a, TileCells{t}, t.nmb, t.cnt.data(), G, B, N, out, num_threads);
#else
  (void)a, (void)c, (void)G, (void)B, (void)N, (void)out, (void)num_threads;
  return kBadArgument;
#endif
}

// The AVX-512 CSC path for sorted rows (csc_sorted_avx512): kOk or an error status, or -1
// when the caller must take the coordinate path (unsorted rows, tall A, no AVX-512, N == 0).
int csc_direct(const Format& a, Strided G, const Strided* B, int64_t N, float* out,
               int num_threads) {
#if SK_HAVE_AVX512_KERNELS
  if (a.layout != SparseLayout::kCsc || active_isa() != Isa::kAvx512 || N == 0) return -1;
  const int s = csc_sorted_avx512(a, G, B, N, out, num_threads);
  return s == kUnsorted || s == kBadArgument ? -1 : s;
#else
  (void)a, (void)G, (void)B, (void)N, (void)out, (void)num_threads;
  return -1;
#endif
}

}  // namespace

int copy_row_major(Strided X, int64_t rows, int64_t N, float* out, int num_threads) {
  if (rows < 0 || N < 0) return kBadArgument;
  return copy_rows(X, rows, N, out, num_threads);
}

bool reads_strided(SparseLayout layout) {
  return active_isa() == Isa::kAvx512 && layout != SparseLayout::kBsr;
}

int sampled_dot(const Format& a, Strided Gs, Strided Bs, int64_t N, float* out, int num_threads) {
  if (a.M < 0 || a.K < 0 || N < 0 || a.numel < 0) return kBadArgument;
  if (a.M > kMaxDim || a.K > kMaxDim) return kBadArgument;
  const float *G = nullptr, *B = nullptr;
  if (a.layout == SparseLayout::kBsr && active_isa() == Isa::kAvx512) {
    int s = row_major(Gs, a.M, N, scratch_panel(), num_threads, &G);
    if (s == kOk) s = row_major(Bs, a.K, N, scratch_accum(), num_threads, &B);
    return s != kOk ? s : bsr_sampled_dot_avx512(a, G, B, N, out, num_threads);
  }
  if (a.K > 0) {
    const int d = csc_direct(a, Gs, &Bs, N, out, num_threads);
    if (d >= 0) return d;
  }
  Coords c;
  int s = make_coords(a, &c);
  if (s != kOk) return s;
  const Isa isa = active_isa();
  if (isa == Isa::kAvx512) {
    const int st = tiled_avx512(a, c, Gs, &Bs, N, out, num_threads);
    if (st != kBadArgument) return st;
  }
  s = row_major(Gs, a.M, N, scratch_panel(), num_threads, &G);
  if (s == kOk) s = row_major(Bs, a.K, N, scratch_accum(), num_threads, &B);
  if (s != kOk) return s;
  const int64_t n = a.numel;
  int nt = threads_for(num_threads, static_cast<double>(n) * static_cast<double>(N) / 8.0);
  const int parts = parts_for(nt, n, kMaxParts);
  return parallel_parts(parts, nt, [&](int p) {
    const int64_t e0 = n * p / parts, e1 = n * (p + 1) / parts;
    for (int64_t e = e0; e < e1; ++e) {
      const int32_t k = c.col[e];
      if (k < 0) {
        out[e] = 0.0f;
        continue;
      }
      const float* g = G + static_cast<int64_t>(c.row[e]) * N;
      const float* b = B + static_cast<int64_t>(k) * N;
#if SK_HAVE_AVX2_KERNELS
      if (isa == Isa::kAvx2) {
        out[e] = dot_avx2(g, b, N);
        continue;
      }
#endif
      out[e] = dot_portable(g, b, N);
    }
    return static_cast<int>(kOk);
  });
}

int spmm_transposed(const Format& a, Strided Gs, int64_t N, float* out, int num_threads) {
  if (a.M < 0 || a.K < 0 || N < 0 || a.numel < 0) return kBadArgument;
  if (N == 0 || a.K == 0) return kOk;  // no output element (K is then backed by out's memory)
  if (a.M > kMaxDim || a.K > kMaxDim) return kBadArgument;
  // 2:4 reaches here from 256 columns on, or with a G holding an Inf or NaN (ops.cpp runs a
  // finite one below 256 as a GEMM of the decompressed weight); the sorted kernel serves both
  // on AVX-512 (1536x1536, one Inf in G: 1 column 19 -> 3.0 ms, 16 columns 16.7 -> 5.0 ms).
  if (a.layout == SparseLayout::kSemi24 && semi24_transposed_available()) {
    const int s = semi24_transposed(a, Gs, N, out, num_threads);
    if (s != kNoMemory) return s;  // else the entry-wise path below, which needs less
  }
  const float* G = nullptr;
  if (a.layout == SparseLayout::kBsr && active_isa() == Isa::kAvx512) {
    const int s = row_major(Gs, a.M, N, scratch_panel(), num_threads, &G);
    return s != kOk ? s : bsr_transposed_avx512(a, G, N, out, num_threads);
  }
  const int d = csc_direct(a, Gs, nullptr, N, out, num_threads);
  if (d >= 0) return d;
  Coords c;
  int s = make_coords(a, &c);
  if (s != kOk) return s;
  if (active_isa() == Isa::kAvx512) {
    s = tiled_avx512(a, c, Gs, nullptr, N, out, num_threads);
    if (s != kBadArgument) return s;
  }
  // Counting sort by column: ptr [K + 1], then each entry's row and float weight.
  std::vector<int64_t> ptr(static_cast<size_t>(a.K) + 1, 0);
  for (int64_t e = 0; e < a.numel; ++e)
    if (c.col[e] >= 0) ++ptr[static_cast<size_t>(c.col[e]) + 1];
  for (int64_t k = 0; k < a.K; ++k) ptr[k + 1] += ptr[k];
  const int64_t nnz = ptr[a.K];
  std::vector<int32_t> srow(static_cast<size_t>(max_i64(nnz, 1)));
  std::vector<float> sw(static_cast<size_t>(max_i64(nnz, 1)));
  {
    std::vector<int64_t> next(ptr.begin(), ptr.end() - 1);
    for (int64_t e = 0; e < a.numel; ++e) {
      const int32_t k = c.col[e];
      if (k < 0) continue;
      const int64_t q = next[k]++;
      srow[q] = c.row[e];
      sw[q] = weight(a, e);
    }
  }
  const Isa isa = active_isa();
  int nt = threads_for(num_threads, (static_cast<double>(nnz) + a.K) * static_cast<double>(N) / 8.0);
  const int parts = parts_for(nt, a.K, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  split_by_prefix(ptr.data(), a.K, 1.0, parts, bounds);
#if SK_HAVE_AVX512_KERNELS
  if (isa == Isa::kAvx512) {
    Chunks gc;
    s = pack_chunks(Gs, a.M, N, scratch_panel(), nt, &gc);
    if (s != kOk) return s;
    return parallel_parts(parts, nt, [&](int p) {
      gather_rows_chunked_avx512(ptr.data(), srow.data(), sw.data(), gc, N, out, bounds[p],
                                 bounds[p + 1]);
      return static_cast<int>(kOk);
    });
  }
#endif
  s = row_major(Gs, a.M, N, scratch_panel(), num_threads, &G);
  if (s != kOk) return s;
  return parallel_parts(parts, nt, [&](int p) {
    gather_rows(isa, ptr.data(), srow.data(), sw.data(), G, N, out, bounds[p], bounds[p + 1]);
    return static_cast<int>(kOk);
  });
}

}  // namespace cpu
}  // namespace sparsekern
