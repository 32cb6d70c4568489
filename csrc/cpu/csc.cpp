// Unstructured (CSC) spmm on the CPU.
//
// N == 1 (GEMV) has two kernels. EIE-style column walk: only the columns whose activation is
// non-zero are walked (ReLU outputs are often half zeros), each scattering value *
// activation into the rows it stores; threads take ranges of active columns of equal
// stored-entry count, accumulate into private row vectors and sum them at the end (rows of
// different columns overlap). Row gather: each row of the repacked weight (CSR, below)
// gathers its activations 8 at a time. A scatter costs about 3 gathers, so the walk
// runs only when enough activations are zero (or when the caller has no repack).
//
// N >= 2: scattering rows of N values is load/store bound, so the weight is repacked once
// into rows (CSR, see CsrRepack; the glue caches it per weight) and each row is a chain of
// broadcast-FMAs over a packed panel of B with its accumulators in registers.
#include <cmath>
#include <cstdint>
#include <cstdlib>

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
constexpr double kScatterPerGather = 3.0;  // GEMV cost of a CSC entry over a CSR entry (measured)



// ----------------------------------------------------------------------------- GEMV (CSC)

// Whether a column whose activation is 0 may be skipped: its values vals[s..e) are all
// finite and its row indices in range (a bad one is then reported by the walk, as in any
// other column).
template <typename T, typename RI>
inline bool column_skippable(const T* vals, const RI* rows, int64_t s, int64_t e, int64_t M) {
  bool ok = true;
  for (int64_t j = s; j < e; ++j)
    ok &= is_finite_weight(vals[j]) &
          (static_cast<uint64_t>(static_cast<int64_t>(rows[j])) < static_cast<uint64_t>(M));
  return ok;
}

// y[rows[j]] += vals[j] * xk for j in [s, e); false when a row index is out of range (checked
// before its write).
template <typename T, typename RI>
inline bool scatter_column(const T* vals, const RI* rows, int64_t s, int64_t e, float xk,
                           float* y, int64_t M) {
  for (int64_t j = s; j < e; ++j) {
    const int64_t r = rows[j];
    if (static_cast<uint64_t>(r) >= static_cast<uint64_t>(M)) return false;
    y[r] += to_float(vals[j]) * xk;
  }
  return true;
}

#if SK_HAVE_AVX2_KERNELS
SK_AVX2_INLINE __m256i load_rows8(const int16_t* p) {
  return _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
SK_AVX2_INLINE __m256i load_rows8(const int32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// scatter_column, 8 entries at a time: the products and the range check are vectors, the
// scatter-add stays scalar (AVX2 has no scatter).
template <typename T, typename RI>
SK_AVX2 bool scatter_column_avx2(const T* vals, const RI* rows, int64_t s, int64_t e, float xk,
                                 float* y, int64_t M) {
  const __m256 xv = _mm256_set1_ps(xk);
  const __m256i last = _mm256_set1_epi32(static_cast<int32_t>(min_i64(M - 1, INT32_MAX)));
  alignas(32) float prod[8];
  alignas(32) int32_t idx8[8];
  int64_t j = s;
  for (; j + 8 <= e; j += 8) {
    const __m256i r = load_rows8(rows + j);
    // Unsigned max: a negative index becomes huge, so one compare checks both ends.
    if (_mm256_movemask_ps(_mm256_castsi256_ps(
            _mm256_cmpeq_epi32(_mm256_max_epu32(r, last), last))) != 0xFF)
      return false;
    _mm256_store_ps(prod, _mm256_mul_ps(load8(vals + j), xv));
    _mm256_store_si256(reinterpret_cast<__m256i*>(idx8), r);
    SK_UNROLL for (int i = 0; i < 8; ++i) y[idx8[i]] += prod[i];
  }
  return scatter_column(vals, rows, j, e, xk, y, M);
}
#endif

#if SK_HAVE_AVX512_KERNELS
SK_AVX512_INLINE __m512i rows16(const int16_t* p) {
  return _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
SK_AVX512_INLINE __m512i rows16(const int32_t* p) { return _mm512_loadu_si512(p); }
// scatter_column with the range check one zmm compare per 16 rows. The scatter-adds: with
// `vector` (see cpu::vector_scatter: Intel) one gather-FMA-scatter per 16 entries whose rows
// strictly increase (distinct, so exact; a column's rows are sorted as sparsekern stores
// them); scalar otherwise (Zen 4/5 microcode vscatterdps: 16 scalar read-FMA-writes, which
// the out-of-order core overlaps, measured ~2x faster there). Both round y[r] + v * x once
// (FMA), so the two give the same sums.
template <typename T, typename RI>
SK_AVX512 bool scatter_column_avx512(const T* vals, const RI* rows, int64_t s, int64_t e,
                                     float xk, float* y, int64_t M, bool vector) {
  const __m512i lim = _mm512_set1_epi32(static_cast<int32_t>(min_i64(M, INT32_MAX)));
  int64_t j = s;
  const __m512 xv = _mm512_set1_ps(xk);
  const __m512i shift = _mm512_set_epi32(14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0);
  for (; j + 16 <= e; j += 16) {
    const __m512i r = rows16(rows + j);
    if (_mm512_cmplt_epu32_mask(r, lim) != 0xFFFF) return false;
    // rows strictly increasing within the 16: distinct, so one gather-FMA-scatter is exact.
    const __m512i prev = _mm512_permutexvar_epi32(shift, r);
    if (vector && (_mm512_cmpgt_epi32_mask(r, prev) | 1u) == 0xFFFF) {
      const __m512 yv = _mm512_i32gather_ps(r, y, 4);
      _mm512_i32scatter_ps(y, r, _mm512_fmadd_ps(load16(vals + j), xv, yv), 4);
      continue;
    }
    SK_UNROLL for (int i = 0; i < 16; ++i)
      y[rows[j + i]] = std::fma(to_float(vals[j + i]), xk, y[rows[j + i]]);
  }
  return scatter_column(vals, rows, j, e, xk, y, M);
}

// column_skippable, 16 entries per step: finite (v - v == 0 is false for Inf and NaN) and in
// range (one unsigned compare), then the scalar check for the tail.
template <typename T, typename RI>
SK_AVX512 bool column_skippable_avx512(const T* vals, const RI* rows, int64_t s, int64_t e,
                                       int64_t M) {
  const __m512i lim = _mm512_set1_epi32(static_cast<int32_t>(min_i64(M, INT32_MAX)));
  int64_t j = s;
  for (; j + 16 <= e; j += 16) {
    const __m512 v = load16(vals + j);
    const __mmask16 ok = _mm512_cmp_ps_mask(_mm512_sub_ps(v, v), _mm512_setzero_ps(), _CMP_EQ_OQ) &
                         _mm512_cmplt_epu32_mask(rows16(rows + j), lim);
    if (ok != 0xFFFF) return false;
  }
  return column_skippable(vals, rows, j, e, M);
}
#endif


template <typename T, typename RI>
inline bool skippable_avx512(const T* vals, const RI* rows, int64_t s, int64_t e, int64_t M) {
#if SK_HAVE_AVX512_KERNELS
  return column_skippable_avx512(vals, rows, s, e, M);
#else
  return column_skippable(vals, rows, s, e, M);
#endif
}

template <typename T, typename RI, typename PI>
int gemv_csc(const T* vals, const RI* rows, const PI* colptr, int64_t nnz, bool skip,
             const CsrRepack* csr, const Dense& d) {
  const int64_t M = d.M, K = d.K;
  if (!offsets_ok(colptr, K, nnz)) return kBadOffsets;
  const Isa isa = active_isa();
  const bool avx2 = SK_HAVE_AVX2_KERNELS && isa == Isa::kAvx2;
  const bool vector = vector_scatter();
  const float* B = d.B;
  const int64_t sb = d.ldb_k;

  // The columns to walk (every non-empty one) and the running cost of the walk before list
  // item i (cum[i]). A column whose activation is 0 adds nothing unless it stores an Inf or
  // NaN (0 * Inf is NaN): with `skip` the walk only checks its values and rows (no cached flag
  // to go stale), in column order with the others so the weight streams through once, and
  // scatters it only when the check fails. A check costs about a quarter of a scatter.
  int64_t* list = scratch_index().get_as<int64_t>(2, K + 1);
  if (list == nullptr) return kNoMemory;
  int64_t* cum = list + (K + 1);
  int64_t n_active = 0;
  cum[0] = 0;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t cnt = idx(colptr, k + 1) - idx(colptr, k);
    if (cnt == 0) continue;
    const bool zero = skip && B[k * sb] == 0.0f;
    list[n_active] = k;
    cum[n_active + 1] = cum[n_active] + (zero ? cnt / 4 + 1 : cnt);
    ++n_active;
  }
  const int64_t work = cum[n_active];
  // Scattering an entry costs about kScatterPerGather times gathering one from the row-wise
  // repack, so the repack (when the caller has one) wins unless enough columns are skipped.
  if (csr != nullptr && static_cast<double>(work) * kScatterPerGather > static_cast<double>(nnz))
    return csr_gemv(*csr, d);

  int nt = threads_for(d.num_threads, kEntryCost * work + static_cast<double>(M));
  if (nt > kMaxParts) nt = kMaxParts;
  // Each part's private rows cost M adds in the final sum: not worth it for few entries.
  if (nt > 1 && work < 4 * M * nt) nt = static_cast<int>(max_i64(1, work / (4 * M)));
  // Two parts per thread, taken dynamically: a thread whose core is busy takes fewer parts
  // instead of holding up the call (two private row vectors per thread to sum, not more).
  const int parts = nt > 1 ? static_cast<int>(min_i64(2 * nt, kMaxParts)) : 1;
  int64_t bounds[kMaxParts + 1];
  split_by_prefix(cum, n_active, 1.0, parts, bounds);
  float* acc = scratch_accum().get_as<float>(parts, M);
  if (acc == nullptr) return kNoMemory;

  auto accumulate = [&](int p) -> int {
    float* y = acc + static_cast<int64_t>(p) * M;
    for (int64_t m = 0; m < M; ++m) y[m] = 0.0f;
    for (int64_t i = bounds[p]; i < bounds[p + 1]; ++i) {
      const int64_t k = list[i];
      const float xk = B[k * sb];
      const int64_t s = idx(colptr, k), e = idx(colptr, k + 1);
      if (skip && xk == 0.0f &&
          (isa == Isa::kAvx512 ? skippable_avx512(vals, rows, s, e, M)
                               : column_skippable(vals, rows, s, e, M)))
        continue;
#if SK_HAVE_AVX512_KERNELS
      if (isa == Isa::kAvx512) {
        if (!scatter_column_avx512(vals, rows, s, e, xk, y, M, vector)) return kBadIndex;
        continue;
      }
#endif
#if SK_HAVE_AVX2_KERNELS
      if (avx2) {
        if (!scatter_column_avx2(vals, rows, s, e, xk, y, M)) return kBadIndex;
        continue;
      }
#endif
      if (!scatter_column(vals, rows, s, e, xk, y, M)) return kBadIndex;
    }
    return kOk;
  };
  auto reduce = [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      float s = acc[m];
      for (int p = 1; p < parts; ++p) s += acc[static_cast<int64_t>(p) * M + m];
      store_out(d, m, 0, s);
    }
  };
  const int status = parallel_parts(parts, nt, accumulate);
  if (status != kOk) return status;
  // The sum of the parts: on the calling thread unless large (a second pool round trip
  // costs more than a few thousand adds).
  if (nt == 1 || M * parts <= (int64_t{1} << 18)) {
    reduce(0, M);
    return kOk;
  }
  return parallel_parts(nt, [&](int p) {
    reduce(M * p / nt, M * (p + 1) / nt);
    return static_cast<int>(kOk);
  });
}

template <typename T, typename RI>
int gemv_csc_ptr(const T* vals, const RI* rows, const Csc& a, bool skip, const CsrRepack* csr,
                 const Dense& d) {
  if (a.ptr_type == IndexType::kI32)
    return gemv_csc(vals, rows, static_cast<const int32_t*>(a.colptr), a.nnz, skip, csr, d);
  if (a.ptr_type == IndexType::kI64)
    return gemv_csc(vals, rows, static_cast<const int64_t*>(a.colptr), a.nnz, skip, csr, d);
  return kBadArgument;
}

template <typename T>
int gemv_csc_rows(const T* vals, const Csc& a, bool skip, const CsrRepack* csr, const Dense& d) {
  if (a.row_type == IndexType::kI16)
    return gemv_csc_ptr(vals, static_cast<const int16_t*>(a.rows), a, skip, csr, d);
  if (a.row_type == IndexType::kI32)
    return gemv_csc_ptr(vals, static_cast<const int32_t*>(a.rows), a, skip, csr, d);
  return kBadArgument;
}

// ----------------------------------------------------------------------------- scan, repack

template <typename T, typename RI, typename PI>
int scan_typed(const T* vals, const RI* rows, const PI* colptr, int64_t nnz, int64_t M, int64_t K,
               bool* all_finite) {
  if (!offsets_ok(colptr, K, nnz)) return kBadOffsets;
  bool finite = true;
  for (int64_t j = 0; j < nnz; ++j) {
    if (static_cast<uint64_t>(static_cast<int64_t>(rows[j])) >= static_cast<uint64_t>(M))
      return kBadIndex;
    finite = finite && is_finite_weight(vals[j]);
  }
  *all_finite = finite;
  return kOk;
}

template <typename T, typename CI, typename RI, typename PI>
int repack_typed(const T* vals, const RI* rows, const PI* colptr, int64_t nnz, int64_t M,
                 int64_t K, CsrRepack* out) {
  bool finite = true;
  const int s = scan_typed(vals, rows, colptr, nnz, M, K, &finite);
  if (s != kOk) return s;
  out->all_finite = finite;
  auto pattern = std::make_shared<CsrPattern>();
  out->pattern = pattern;
  int64_t* rowptr = static_cast<int64_t*>(std::calloc(static_cast<size_t>(M + 1), sizeof(int64_t)));
  CI* cols = static_cast<CI*>(std::malloc(static_cast<size_t>(max_i64(nnz, 1)) * sizeof(CI)));
  T* v = static_cast<T*>(std::malloc(static_cast<size_t>(max_i64(nnz, 1)) * sizeof(T)));
  int32_t* src = nnz <= INT32_MAX
      ? static_cast<int32_t*>(std::malloc(static_cast<size_t>(max_i64(nnz, 1)) * sizeof(int32_t)))
      : nullptr;
  pattern->rowptr = rowptr;
  pattern->cols = cols;
  pattern->src = src;
  out->rowptr = rowptr;
  out->cols = cols;
  out->values = v;
  if (rowptr == nullptr || cols == nullptr || v == nullptr || (nnz <= INT32_MAX && !src))
    return kNoMemory;
  for (int64_t j = 0; j < nnz; ++j) ++rowptr[static_cast<int64_t>(rows[j]) + 1];
  for (int64_t m = 0; m < M; ++m) rowptr[m + 1] += rowptr[m];
  int64_t* next = static_cast<int64_t*>(std::malloc(static_cast<size_t>(max_i64(M, 1)) * sizeof(int64_t)));
  if (next == nullptr) return kNoMemory;
  for (int64_t m = 0; m < M; ++m) next[m] = rowptr[m];
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t j = idx(colptr, k); j < idx(colptr, k + 1); ++j) {
      const int64_t pos = next[rows[j]]++;
      cols[pos] = static_cast<CI>(k);
      v[pos] = vals[j];
      if (src != nullptr) src[pos] = static_cast<int32_t>(j);
    }
  }
  std::free(next);
  return kOk;
}

// out->values[i] = vals[src[i]] in CSR order, rows split across threads; all_finite too.
template <typename T>
int revalue_typed(const CsrRepack& from, const T* vals, int num_threads, CsrRepack* out) {
  T* v = static_cast<T*>(std::malloc(static_cast<size_t>(max_i64(from.nnz, 1)) * sizeof(T)));
  out->values = v;
  if (v == nullptr) return kNoMemory;
  const int32_t* src = from.pattern->src;
  const int nt = threads_for(num_threads, static_cast<double>(from.nnz) * kEntryCost);
  const int parts = parts_for(nt, from.M, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  split_by_prefix(from.rowptr, from.M, 1.0, parts, bounds);
  bool finite[kMaxParts];
  const int s = parallel_parts(parts, nt, [&](int p) {
    bool ok = true;
    for (int64_t i = from.rowptr[bounds[p]]; i < from.rowptr[bounds[p + 1]]; ++i) {
      v[i] = vals[src[i]];
      ok &= is_finite_weight(v[i]);
    }
    finite[p] = ok;
    return static_cast<int>(kOk);
  });
  if (s != kOk) return s;
  out->all_finite = true;
  for (int p = 0; p < parts; ++p) out->all_finite = out->all_finite && finite[p];
  return kOk;
}

// Calls f(vals, rows, colptr) with the index tensors' C types.
template <typename T, typename F>
int with_csc_types(const Csc& a, F&& f) {
  const T* vals = static_cast<const T*>(a.values);
  if (a.row_type == IndexType::kI16 && a.ptr_type == IndexType::kI32)
    return f(vals, static_cast<const int16_t*>(a.rows), static_cast<const int32_t*>(a.colptr));
  if (a.row_type == IndexType::kI16 && a.ptr_type == IndexType::kI64)
    return f(vals, static_cast<const int16_t*>(a.rows), static_cast<const int64_t*>(a.colptr));
  if (a.row_type == IndexType::kI32 && a.ptr_type == IndexType::kI32)
    return f(vals, static_cast<const int32_t*>(a.rows), static_cast<const int32_t*>(a.colptr));
  if (a.row_type == IndexType::kI32 && a.ptr_type == IndexType::kI64)
    return f(vals, static_cast<const int32_t*>(a.rows), static_cast<const int64_t*>(a.colptr));
  return kBadArgument;
}

// ----------------------------------------------------------------------------- CSR x panel

template <typename T, typename CI>
int csr_rows_portable(const CsrRepack& a, const Dense& d, const float* P, int64_t ldp, int64_t n0,
                      int64_t nb, int64_t m0, int64_t m1) {
  const T* vals = static_cast<const T*>(a.values);
  const CI* cols = static_cast<const CI*>(a.cols);
  float acc[kPanelWidth];
  for (int64_t m = m0; m < m1; ++m) {
    for (int64_t j = 0; j < ldp; ++j) acc[j] = 0.0f;
    for (int64_t i = a.rowptr[m]; i < a.rowptr[m + 1]; ++i) {
      const float w = to_float(vals[i]);
      const float* p = P + static_cast<int64_t>(cols[i]) * ldp;
      for (int64_t j = 0; j < ldp; ++j) acc[j] += w * p[j];
    }
    store_tile(d, m, 1, n0, nb, acc, ldp);
  }
  return kOk;
}

#if SK_HAVE_AVX2_KERNELS
constexpr int64_t kRowBlock = 16;  // rows whose partial sums stay in the tile buffer

// Rows [m0, m1) in blocks of kRowBlock rows. The loop can walk K in chunks (a row's entries
// of a chunk are contiguous: the repack keeps columns sorted) but one chunk measured fastest:
// a row's entries hit the panel at random, and L1-sized chunks leave few entries per row. Per
// row, two sets of NV accumulators take alternate
// entries (2 * NV independent FMA chains).
template <typename T, typename CI, int NV>
SK_AVX2 int csr_rows_avx2_nv(const CsrRepack& a, const Dense& d, const float* P, int64_t n0,
                             int64_t nb, int64_t m0, int64_t m1) {
  constexpr int64_t LDP = 8 * NV;
  const T* vals = static_cast<const T*>(a.values);
  const CI* cols = static_cast<const CI*>(a.cols);
  const int64_t kc = d.K;
  float* Tacc = scratch_tile().get_as<float>(kRowBlock * LDP);
  if (Tacc == nullptr) return kNoMemory;
  // A column-major Y (a Linear's output) is written 8 rows x the panel at a time.
  const bool colmajor = d.ldy_m == 1 && d.ldy_n != 1;
  int64_t cursor[kRowBlock];
  for (int64_t mb = m0; mb < m1; mb += kRowBlock) {
    const int64_t me = min_i64(mb + kRowBlock, m1);
    for (int64_t m = mb; m < me; ++m) cursor[m - mb] = a.rowptr[m];
    int64_t k0 = 0;
    do {
      const int64_t k1 = min_i64(k0 + kc, d.K);
      const bool first = k0 == 0, last = k1 == d.K;
      for (int64_t m = mb; m < me; ++m) {
        float* t = Tacc + (m - mb) * LDP;
        __m256 acc0[NV], acc1[NV];
        SK_UNROLL for (int u = 0; u < NV; ++u) {
          acc0[u] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(t + 8 * u);
          acc1[u] = _mm256_setzero_ps();
        }
        int64_t i = cursor[m - mb];
        const int64_t e = a.rowptr[m + 1];
        for (; i + 1 < e && static_cast<int64_t>(cols[i + 1]) < k1; i += 2) {
          const __m256 w0 = bcast(vals + i), w1 = bcast(vals + i + 1);
          const float* p0 = P + static_cast<int64_t>(cols[i]) * LDP;
          const float* p1 = P + static_cast<int64_t>(cols[i + 1]) * LDP;
          SK_UNROLL for (int u = 0; u < NV; ++u) {
            acc0[u] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0 + 8 * u), acc0[u]);
            acc1[u] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(p1 + 8 * u), acc1[u]);
          }
        }
        if (i < e && static_cast<int64_t>(cols[i]) < k1) {
          const __m256 w0 = bcast(vals + i);
          const float* p0 = P + static_cast<int64_t>(cols[i]) * LDP;
          SK_UNROLL for (int u = 0; u < NV; ++u)
            acc0[u] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0 + 8 * u), acc0[u]);
          ++i;
        }
        cursor[m - mb] = i;
        if (!last) {
          SK_UNROLL for (int u = 0; u < NV; ++u)
            _mm256_storeu_ps(t + 8 * u, _mm256_add_ps(acc0[u], acc1[u]));
          continue;
        }
        const __m256 b = d.bias != nullptr ? _mm256_set1_ps(d.bias[m * d.bias_stride])
                                           : _mm256_setzero_ps();
        if (colmajor) {  // the row's sums wait in Tacc; written as columns below
          SK_UNROLL for (int u = 0; u < NV; ++u)
            _mm256_storeu_ps(t + 8 * u, _mm256_add_ps(_mm256_add_ps(acc0[u], acc1[u]), b));
          continue;
        }
        float* y = d.Y + m * d.ldy_m + n0 * d.ldy_n;
        SK_UNROLL for (int u = 0; u < NV; ++u)
          if (8 * u < nb)
            store_lanes(y + 8 * u * d.ldy_n, d.ldy_n,
                        _mm256_add_ps(_mm256_add_ps(acc0[u], acc1[u]), b), min_i64(8, nb - 8 * u));
      }
      k0 = k1;
    } while (k0 < d.K);
    for (int64_t r = mb; colmajor && r < me; r += 8)
      store_tile_cols(Tacc + (r - mb) * LDP, LDP, static_cast<int>(min_i64(8, me - r)),
                      min_i64(LDP, nb), d.Y + r + n0 * d.ldy_n, d.ldy_n);
  }
  return kOk;
}

template <typename T, typename CI>
int csr_rows_avx2(const CsrRepack& a, const Dense& d, const float* P, int64_t ldp, int64_t n0,
                  int64_t nb, int64_t m0, int64_t m1) {
  switch (ldp / 8) {
    case 1: return csr_rows_avx2_nv<T, CI, 1>(a, d, P, n0, nb, m0, m1);
    case 2: return csr_rows_avx2_nv<T, CI, 2>(a, d, P, n0, nb, m0, m1);
    case 3: return csr_rows_avx2_nv<T, CI, 3>(a, d, P, n0, nb, m0, m1);
    case 4: return csr_rows_avx2_nv<T, CI, 4>(a, d, P, n0, nb, m0, m1);
    default: return kBadArgument;
  }
}
#endif

// ----------------------------------------------------------------------------- CSR GEMV

template <typename T, typename CI>
int csr_gemv_rows_portable(const CsrRepack& a, const float* x, const Dense& d, int64_t m0,
                           int64_t m1) {
  const T* vals = static_cast<const T*>(a.values);
  const CI* cols = static_cast<const CI*>(a.cols);
  for (int64_t m = m0; m < m1; ++m) {
    float s0 = 0.0f, s1 = 0.0f;
    int64_t i = a.rowptr[m];
    const int64_t e = a.rowptr[m + 1];
    for (; i + 2 <= e; i += 2) {
      s0 += to_float(vals[i]) * x[cols[i]];
      s1 += to_float(vals[i + 1]) * x[cols[i + 1]];
    }
    if (i < e) s0 += to_float(vals[i]) * x[cols[i]];
    store_out(d, m, 0, s0 + s1);
  }
  return kOk;
}

#if SK_HAVE_AVX2_KERNELS
// Each row gathers its activations 8 at a time (vgatherdps) into two accumulators.
template <typename T, typename CI>
SK_AVX2 int csr_gemv_rows_avx2(const CsrRepack& a, const float* x, const Dense& d, int64_t m0,
                               int64_t m1) {
  const T* vals = static_cast<const T*>(a.values);
  const CI* cols = static_cast<const CI*>(a.cols);
  for (int64_t m = m0; m < m1; ++m) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = a.rowptr[m];
    const int64_t e = a.rowptr[m + 1];
    for (; i + 16 <= e; i += 16) {
      const __m256 x0 = _mm256_i32gather_ps(x, load_rows8(cols + i), 4);
      const __m256 x1 = _mm256_i32gather_ps(x, load_rows8(cols + i + 8), 4);
      acc0 = _mm256_fmadd_ps(load8(vals + i), x0, acc0);
      acc1 = _mm256_fmadd_ps(load8(vals + i + 8), x1, acc1);
    }
    if (i + 8 <= e) {
      acc0 = _mm256_fmadd_ps(load8(vals + i), _mm256_i32gather_ps(x, load_rows8(cols + i), 4), acc0);
      i += 8;
    }
    float s = hsum(_mm256_add_ps(acc0, acc1));
    for (; i < e; ++i) s += to_float(vals[i]) * x[cols[i]];
    store_out(d, m, 0, s);
  }
  return kOk;
}
#endif

#if SK_HAVE_AVX512_KERNELS
SK_AVX512_INLINE __m512i load_idx16(const int16_t* p) {
  return _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
SK_AVX512_INLINE __m512i load_idx16(const int32_t* p) { return _mm512_loadu_si512(p); }
SK_AVX512_INLINE __m512i load_idx16(const int16_t* p, __mmask16 k) {
  return _mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(k, p));
}
SK_AVX512_INLINE __m512i load_idx16(const int32_t* p, __mmask16 k) {
  return _mm512_maskz_loadu_epi32(k, p);
}
SK_AVX512_INLINE __m512 load16(const float* p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
SK_AVX512_INLINE __m512 load16(const bf16* p, __mmask16 k) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
SK_AVX512_INLINE __m512 load16(const f16* p, __mmask16 k) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p));
}

// Each row gathers its activations 16 at a time (vgatherdps zmm) into two accumulators; the
// row's last < 16 entries with one masked gather.
template <typename T, typename CI>
SK_AVX512 int csr_gemv_rows_avx512(const CsrRepack& a, const float* x, const Dense& d,
                                   int64_t m0, int64_t m1) {
  const T* vals = static_cast<const T*>(a.values);
  const CI* cols = static_cast<const CI*>(a.cols);
  for (int64_t m = m0; m < m1; ++m) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t i = a.rowptr[m];
    const int64_t e = a.rowptr[m + 1];
    for (; i + 32 <= e; i += 32) {
      const __m512 x0 = _mm512_i32gather_ps(load_idx16(cols + i), x, 4);
      const __m512 x1 = _mm512_i32gather_ps(load_idx16(cols + i + 16), x, 4);
      acc0 = _mm512_fmadd_ps(load16(vals + i), x0, acc0);
      acc1 = _mm512_fmadd_ps(load16(vals + i + 16), x1, acc1);
    }
    if (i + 16 <= e) {
      acc0 = _mm512_fmadd_ps(load16(vals + i), _mm512_i32gather_ps(load_idx16(cols + i), x, 4),
                             acc0);
      i += 16;
    }
    if (i < e) {
      const __mmask16 k = static_cast<__mmask16>((1u << (e - i)) - 1u);
      const __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, load_idx16(cols + i, k),
                                                 x, 4);
      acc1 = _mm512_fmadd_ps(load16(vals + i, k), xv, acc1);
    }
    store_out(d, m, 0, _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)));
  }
  return kOk;
}

// csr_rows_avx2_nv with zmm over a panel of row stride 16 * NV.
template <typename T, typename CI, int NV>
SK_AVX512 int csr_rows_avx512_nv(const CsrRepack& a, const Dense& d, const float* P, int64_t n0,
                                 int64_t nb, int64_t m0, int64_t m1) {
  constexpr int64_t LDP = 16 * NV;
  const T* vals = static_cast<const T*>(a.values);
  const CI* cols = static_cast<const CI*>(a.cols);
  // A column-major Y (a Linear's output) is written 8 rows x the panel at a time.
  const bool colmajor = d.ldy_m == 1 && d.ldy_n != 1;
  alignas(64) float tile[8 * LDP];
  int64_t tile_m0 = m0;
  for (int64_t m = m0; m < m1; ++m) {
    __m512 acc0[NV], acc1[NV], acc2[NV], acc3[NV];
    SK_UNROLL for (int u = 0; u < NV; ++u) {
      acc0[u] = _mm512_setzero_ps();
      acc1[u] = acc0[u];
      acc2[u] = acc0[u];
      acc3[u] = acc0[u];
    }
    int64_t i = a.rowptr[m];
    const int64_t e = a.rowptr[m + 1];
    for (; i + 4 <= e; i += 4) {
      const __m512 w0 = bcast16(vals + i), w1 = bcast16(vals + i + 1);
      const __m512 w2 = bcast16(vals + i + 2), w3 = bcast16(vals + i + 3);
      const float* p0 = P + static_cast<int64_t>(cols[i]) * LDP;
      const float* p1 = P + static_cast<int64_t>(cols[i + 1]) * LDP;
      const float* p2 = P + static_cast<int64_t>(cols[i + 2]) * LDP;
      const float* p3 = P + static_cast<int64_t>(cols[i + 3]) * LDP;
      SK_UNROLL for (int u = 0; u < NV; ++u) {
        acc0[u] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(p0 + 16 * u), acc0[u]);
        acc1[u] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(p1 + 16 * u), acc1[u]);
        acc2[u] = _mm512_fmadd_ps(w2, _mm512_loadu_ps(p2 + 16 * u), acc2[u]);
        acc3[u] = _mm512_fmadd_ps(w3, _mm512_loadu_ps(p3 + 16 * u), acc3[u]);
      }
    }
    for (; i < e; ++i) {
      const __m512 w0 = bcast16(vals + i);
      const float* p0 = P + static_cast<int64_t>(cols[i]) * LDP;
      SK_UNROLL for (int u = 0; u < NV; ++u)
        acc0[u] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(p0 + 16 * u), acc0[u]);
    }
    const __m512 b = d.bias != nullptr ? _mm512_set1_ps(d.bias[m * d.bias_stride])
                                       : _mm512_setzero_ps();
    if (colmajor) {
      SK_UNROLL for (int u = 0; u < NV; ++u)
        _mm512_store_ps(tile + (m - tile_m0) * LDP + 16 * u,
                        _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(acc0[u], acc1[u]),
                                                    _mm512_add_ps(acc2[u], acc3[u])), b));
      if (m + 1 - tile_m0 == 8 || m + 1 == m1) {
        store_tile_cols(tile, LDP, static_cast<int>(m + 1 - tile_m0), min_i64(LDP, nb),
                        d.Y + tile_m0 + n0 * d.ldy_n, d.ldy_n);
        tile_m0 = m + 1;
      }
      continue;
    }
    float* y = d.Y + m * d.ldy_m + n0 * d.ldy_n;
    SK_UNROLL for (int u = 0; u < NV; ++u)
      if (16 * u < nb) {
        const __m512 sum = _mm512_add_ps(_mm512_add_ps(acc0[u], acc1[u]),
                                         _mm512_add_ps(acc2[u], acc3[u]));
        store_lanes16(y + 16 * u * d.ldy_n, d.ldy_n, _mm512_add_ps(sum, b),
                      min_i64(16, nb - 16 * u));
      }
  }
  return kOk;
}

template <typename T, typename CI>
int csr_rows_avx512(const CsrRepack& a, const Dense& d, const float* P, int64_t ldp, int64_t n0,
                    int64_t nb, int64_t m0, int64_t m1) {
  switch (ldp / 16) {
    case 1: return csr_rows_avx512_nv<T, CI, 1>(a, d, P, n0, nb, m0, m1);
    case 2: return csr_rows_avx512_nv<T, CI, 2>(a, d, P, n0, nb, m0, m1);
    default: return kBadArgument;
  }
}
#endif

template <typename T, typename CI>
int csr_gemv_typed(const CsrRepack& a, const Dense& d) {
  const Isa isa = active_isa();
  const bool avx2 = SK_HAVE_AVX2_KERNELS && isa == Isa::kAvx2;
  const float* x = gemv_x(d);
  if (x == nullptr) return kNoMemory;
  int nt = threads_for(d.num_threads, kEntryCost * a.nnz + static_cast<double>(d.M));
  if (nt > kMaxParts) nt = kMaxParts;
  if (nt > d.M) nt = static_cast<int>(max_i64(d.M, 1));
  const int parts = parts_for(nt, d.M, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  split_by_prefix(a.rowptr, d.M, 2.0, parts, bounds);
  return parallel_parts(parts, nt, [&](int p) {
#if SK_HAVE_AVX512_KERNELS
    if (isa == Isa::kAvx512) return csr_gemv_rows_avx512<T, CI>(a, x, d, bounds[p], bounds[p + 1]);
#endif
#if SK_HAVE_AVX2_KERNELS
    if (avx2) return csr_gemv_rows_avx2<T, CI>(a, x, d, bounds[p], bounds[p + 1]);
#endif
    return csr_gemv_rows_portable<T, CI>(a, x, d, bounds[p], bounds[p + 1]);
  });
}

template <typename T, typename CI>
class CsrPanels : public PanelWork {
 public:
  CsrPanels(const CsrRepack& a, const Dense& d, const int64_t* bounds, Isa isa,
            PanelTail tail = PanelTail())
      : a_(a), d_(d), bounds_(bounds), isa_(isa), tail_(tail) {}
  int run(int part, const float* P, int64_t ldp, int64_t n0, int64_t nb) override {
    const int64_t m0 = bounds_[part], m1 = bounds_[part + 1];
#if SK_HAVE_AVX512_KERNELS
    if (isa_ == Isa::kAvx512) {
      const int s = csr_rows_avx512<T, CI>(a_, d_, P, ldp, n0, nb, m0, m1);
      if (s != kOk || tail_.d == nullptr || n0 + nb != d_.N) return s;
      // Once per row part: with the head's last panel (see PanelTail).
      return csr_gemv_rows_avx512<T, CI>(a_, tail_.X, *tail_.d, m0, m1);
    }
#endif
#if SK_HAVE_AVX2_KERNELS
    if (isa_ == Isa::kAvx2) {
      const int s = csr_rows_avx2<T, CI>(a_, d_, P, ldp, n0, nb, m0, m1);
      if (s != kOk || tail_.d == nullptr || n0 + nb != d_.N) return s;
      return csr_gemv_rows_avx2<T, CI>(a_, tail_.X, *tail_.d, m0, m1);
    }
#endif
    return csr_rows_portable<T, CI>(a_, d_, P, ldp, n0, nb, m0, m1);
  }

 private:
  const CsrRepack& a_;
  const Dense& d_;
  const int64_t* bounds_;
  Isa isa_;
  PanelTail tail_;
};

// Threads the batched product (N >= 2) of `a` uses.
int panel_threads(const CsrRepack& a, const Dense& d) {
  // Work in panel steps: each entry (and each row's store) once per vector of columns.
  const int64_t lanes = active_isa() == Isa::kAvx512 ? 16 : 8;
  const double steps = static_cast<double>(a.nnz + d.M) * static_cast<double>(ceil_div(d.N, lanes));
  int nt = threads_for(d.num_threads, kPanelEntryCost * steps);
  if (nt > kMaxParts) nt = kMaxParts;
  if (nt > d.M) nt = static_cast<int>(max_i64(d.M, 1));
  return nt;
}

// Columns past 16q that run as the row-gather GEMV inside the panel work (PanelTail): 1 or
// none. Two or three columns stay in the panel: a second GEMV pass costs about as much as the
// panel's second vector. Where gathers are microcoded (AMD Zen 4/5: !vector_scatter(), which
// SPARSEKERN_CPU_SCATTER can force either way) one column pays only when it saves a panel
// pass of its own (33, 65, ... columns) or when the panel's K rows spill L1, so the extra
// vector's loads come from L2 (Zen 5, 90%, 17 columns: 0.80-0.98x on K = 384 and 768,
// 1.03-1.20x from K = 1024; the whole MiniLM 0.94-0.96x at 17 tokens; Intel 1.03-1.35x on
// every shape: bench/results/csc-tail-amd-2026-12-06, semi24-fused-tail-2026-12-06).
int64_t csc_tail_columns(const Dense& d) {
  constexpr int64_t kSpillK = 1024;
  if (vector_scatter() || d.K >= kSpillK) return 1;
  return (d.N - 1) % kPanelWidth == 0 ? 1 : 0;
}

template <typename T, typename CI>
int csr_typed(const CsrRepack& a, const Dense& d) {
  const Isa isa = active_isa();
  const int nt = panel_threads(a, d);
  // 16q + 1 columns (AVX-512 and AVX2): see csc_tail_columns.
  Dense head, tail;
  PanelTail pt;
  const int ts = split_panel_tail(d, csc_tail_columns(d), &head, &tail, &pt);
  if (ts != kOk) return ts;
  const Dense& dp = pt.d != nullptr ? head : d;  // the panels' columns
  const int parts = panel_parts(nt, d.M, dp.N, kPanelWidth, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  split_by_prefix(a.rowptr, d.M, 2.0, parts, bounds);  // a row costs ~2 entries (its stores)
  CsrPanels<T, CI> work(a, dp, bounds, isa, pt);
  return run_panels(dp, nt, parts, kPanelWidth, work, isa == Isa::kAvx512 ? 16 : 8);
}

}  // namespace

CsrPattern::~CsrPattern() {
  std::free(rowptr);
  std::free(cols);
  std::free(src);
}

CsrRepack::~CsrRepack() { std::free(values); }

int64_t CsrRepack::nbytes() const {
  const int64_t vsize = wt == WeightType::kF32 ? 4 : 2;
  const int64_t src = pattern && pattern->src ? 4 : 0;
  return (M + 1) * 8 + nnz * ((cols16 ? 2 : 4) + vsize + src);
}

int csc_scan(const Csc& a, int64_t M, int64_t K, bool* all_finite) {
  if (M < 0 || K < 0 || a.nnz < 0) return kBadArgument;
  return with_weight_type(a.wt, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    return with_csc_types<T>(a, [&](const T* vals, auto rows, auto colptr) {
      return scan_typed(vals, rows, colptr, a.nnz, M, K, all_finite);
    });
  });
}

int csc_to_csr(const Csc& a, int64_t M, int64_t K, CsrRepack* out) {
  if (M < 0 || K < 0 || a.nnz < 0) return kBadArgument;
  out->M = M;
  out->K = K;
  out->nnz = a.nnz;
  out->wt = a.wt;
  out->cols16 = K <= 32768;
  return with_weight_type(a.wt, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    return with_csc_types<T>(a, [&](const T* vals, auto rows, auto colptr) {
      if (out->cols16) return repack_typed<T, int16_t>(vals, rows, colptr, a.nnz, M, K, out);
      return repack_typed<T, int32_t>(vals, rows, colptr, a.nnz, M, K, out);
    });
  });
}

int csr_revalue(const CsrRepack& from, const Csc& a, int num_threads, CsrRepack* out) {
  if (!from.pattern || from.pattern->src == nullptr || a.nnz != from.nnz || a.wt != from.wt)
    return kBadArgument;
  out->M = from.M;
  out->K = from.K;
  out->nnz = from.nnz;
  out->wt = from.wt;
  out->cols16 = from.cols16;
  out->pattern = from.pattern;
  out->rowptr = from.rowptr;
  out->cols = from.cols;
  return with_weight_type(a.wt, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    return revalue_typed(from, static_cast<const T*>(a.values), num_threads, out);
  });
}

int csr_gemv(const CsrRepack& a, const Dense& d) {
  return with_weight_type(a.wt, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    return a.cols16 ? csr_gemv_typed<T, int16_t>(a, d) : csr_gemv_typed<T, int32_t>(a, d);
  });
}

int csr_spmm(const CsrRepack& a, const Dense& d) {
  if (d.M != a.M || d.K != a.K || d.N < 0) return kBadArgument;
  if (d.M == 0 || d.N == 0) return kOk;
  if (d.N == 1) return csr_gemv(a, d);
  return with_weight_type(a.wt, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    return a.cols16 ? csr_typed<T, int16_t>(a, d) : csr_typed<T, int32_t>(a, d);
  });
}

int csr_spmm_checked(const CsrRepack& a, const Dense& d, CheckFn check, void* ctx,
                     bool* passed) {
  *passed = false;
  if (d.N < 2 || d.M == 0 || d.num_threads < 2 || panel_threads(a, d) > 1) {
    if (!check(ctx, d.num_threads)) return kOk;
    *passed = true;
    return csr_spmm(a, d);
  }
  Dense one = d;
  one.num_threads = 1;
  bool ok = false;
  const int s = parallel_parts(2, 2, [&](int p) -> int {
    if (p == 0) return csr_spmm(a, one);
    ok = check(ctx, 1);
    return kOk;
  });
  *passed = ok;
  return s;
}

int csc_spmm(const Csc& a, bool skip_zero_columns, const CsrRepack* csr, const Dense& d) {
  if (d.M < 0 || d.K < 0 || d.N < 0 || a.nnz < 0) return kBadArgument;
  if (d.M == 0 || d.N == 0) return kOk;
  if (d.N != 1) {  // without a cached repack: build one for this call
    CsrRepack r;
    const int s = csc_to_csr(a, d.M, d.K, &r);
    return s != kOk ? s : csr_spmm(r, d);
  }
  return with_weight_type(a.wt, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    return gemv_csc_rows(static_cast<const T*>(a.values), a, skip_zero_columns, csr, d);
  });
}

}  // namespace cpu
}  // namespace sparsekern
