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
// The AVX2 variants run when the CPU has AVX2 (active_isa); the portable ones otherwise.
#include "backward.h"

#include <cstdlib>
#include <memory>
#include <vector>

#include "common.h"
#include "isa.h"
#include "parallel.h"
#include "simd_avx2.h"

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
  if (idx(ptr, 0) != 0 || idx(ptr, a.K) != a.numel) return kBadOffsets;
  for (int64_t k = 0; k < a.K; ++k) {
    const int64_t s = idx(ptr, k), e = idx(ptr, k + 1);
    if (e < s) return kBadOffsets;
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
  if (ptr[0] != 0 || ptr[Mb] != a.nnzb) return kBadOffsets;
  for (int64_t br = 0; br < Mb; ++br) {
    if (ptr[br + 1] < ptr[br]) return kBadOffsets;
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

// Rows [k0, k1) of out, all N columns, in chunks of 64 (then 8) columns.
void gather_rows(bool avx2, const int64_t* ptr, const int32_t* row, const float* w,
                 const float* G, int64_t N, float* out, int64_t k0, int64_t k1) {
  int64_t n0 = 0;
#if SK_HAVE_AVX2_KERNELS
  if (avx2) {
    for (; n0 + 64 <= N; n0 += 64) gather_rows_avx2_nv<8>(ptr, row, w, G, N, out, k0, k1, n0);
    for (; n0 + 8 <= N; n0 += 8) gather_rows_avx2_nv<1>(ptr, row, w, G, N, out, k0, k1, n0);
  }
#endif
  for (; n0 < N; n0 += 64)
    gather_rows_portable(ptr, row, w, G, N, out, k0, k1, n0, min_i64(64, N - n0));
}

struct Coords {
  std::vector<int32_t> row, col;
};

int make_coords(const Format& a, Coords* c) {
  c->row.resize(static_cast<size_t>(a.numel));
  c->col.resize(static_cast<size_t>(a.numel));
  return expand(a, c->row.data(), c->col.data());
}

}  // namespace

int sampled_dot(const Format& a, const float* G, const float* B, int64_t N, float* out,
                int num_threads) {
  if (a.M < 0 || a.K < 0 || N < 0 || a.numel < 0) return kBadArgument;
  Coords c;
  const int s = make_coords(a, &c);
  if (s != kOk) return s;
  const bool avx2 = SK_HAVE_AVX2_KERNELS && active_isa() == Isa::kAvx2;
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
      if (avx2) {
        out[e] = dot_avx2(g, b, N);
        continue;
      }
#endif
      out[e] = dot_portable(g, b, N);
    }
    return static_cast<int>(kOk);
  });
}

int spmm_transposed(const Format& a, const float* G, int64_t N, float* out, int num_threads) {
  if (a.M < 0 || a.K < 0 || N < 0 || a.numel < 0) return kBadArgument;
  if (N == 0 || a.K == 0) return kOk;  // no output element (K is then backed by out's memory)
  Coords c;
  int s = make_coords(a, &c);
  if (s != kOk) return s;
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
  const bool avx2 = SK_HAVE_AVX2_KERNELS && active_isa() == Isa::kAvx2;
  int nt = threads_for(num_threads, (static_cast<double>(nnz) + a.K) * static_cast<double>(N) / 8.0);
  const int parts = parts_for(nt, a.K, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  split_by_prefix(ptr.data(), a.K, 1.0, parts, bounds);
  return parallel_parts(parts, nt, [&](int p) {
    gather_rows(avx2, ptr.data(), srow.data(), sw.data(), G, N, out, bounds[p], bounds[p + 1]);
    return static_cast<int>(kOk);
  });
}

}  // namespace cpu
}  // namespace sparsekern
