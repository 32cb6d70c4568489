// The 2:4 input gradient, A^T @ G, without the zeros (AVX-512).
//
// A [M, K] stores 2 of every 4 columns per row, so out [K, N] = A^T G has the 2:4 structure in
// its output rows: row m of G adds to 2 of each group's 4 output rows, which 2 depend on the
// row. Accumulators cannot be picked at run time, so each call first sorts every group's M
// rows by block of 512 rows, then by their pair of positions (6 pairs; a counting sort over
// tiles of 64 groups: O(M K / 4), threaded, 12 bytes per row and group, nothing cached
// between calls, so nothing can go stale). Then a group's 4 output rows x 16 NV columns stay
// in registers while its 6 row lists run, each with its two accumulator rows fixed at compile
// time: per row of G, NV panel loads and 2 NV FMAs, half the dense product's. G is packed in
// panels of 64 columns (run_panels: any strides), which a group reads one 512-row block
// (128 KB) at a time.
// Each output element is summed by one thread in a fixed order: the same bits at any thread
// count.
#include <cstdint>

#include "backward.h"
#include "common.h"
#include "isa.h"
#include "parallel.h"
#include "simd_avx512.h"

namespace sparsekern {
namespace cpu {
namespace {

constexpr int kMaxParts = 256;
constexpr int64_t kPanelWidth = 64;
// From this many columns on: the sort costs about as much as ~100 columns of the product, so
// the dense GEMM (ops.cpp) wins below (2 threads, Zen 5: 1536x384 N = 128 0.96x, N = 256
// 1.24x, N = 2048 1.76x; 4096 x 4096 N = 128 0.96x, N = 512 1.27x;
// bench/results/semi24-transposed-2026-12-07).
constexpr int64_t kMinN = 256;

// The 6 position pairs, in list order, and the metadata nibble (p0 | p1 << 2) -> pair.
constexpr int kPairs = 6;
constexpr int8_t kPairOf[16] = {-1, -1, -1, -1, 0, -1, -1, -1, 1, 3, -1, -1, 2, 4, 5, -1};

// The positions (p0, p1) of each pair, in list order (kPairOf's inverse).
constexpr int kPairCols[kPairs][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
// The values' gradient runs from this many columns of G on (below, the GEMM of ops.cpp), up
// to kDotMaxN (above, a row block's G rows would not fit the L2 budget in blocks of at least
// kDotMinBlock rows; a longer N would need N chunks). Against the GEMM read at the stored
// entries (2 threads, Zen 5; bench/results/semi24-values-gradient-2026-12-07): 1536x384
// N = 256 0.9-1.0x, N = 512 1.4x, N = 2048 1.3x; 384x1536 N = 2048 1.0x; 4096² N = 512 1.25x.
constexpr int64_t kDotMinN = 512;
constexpr int64_t kDotMaxN = 8192;
// Rows per block: as many as fit kDotL2Bytes of G rows, between kDotMinBlock and kDotBlock.
constexpr int64_t kDotBlock = 512;
constexpr int64_t kDotMinBlock = 16;
constexpr int64_t kDotL2Bytes = 512 * 1024;

// One row of a group's sorted list: the row of G and its two weights.
struct Entry {
  int32_t m;
  float w0, w1;
};

// A by group, each group's M rows sorted by block of kChunk rows, then by pair: group g's
// entries of chunk c and pair p are entries[g * M + i] for i in [off[g * no + 6 c + p],
// off[... + 1]). A stream read in order by the kernel (the weights looked up per row by the
// kernel from a per-group array missed cache at 4096 x 4096: ~25% of its time).
struct ByPair {
  Entry* entries;
  int64_t* off;
  int64_t M, groups, chunks, no;  // no = 6 * chunks + 1
};

// Rows of G per chunk: a group's lists run one chunk at a time, the chunk's panel rows (128 KB
// at 64 columns) staying in L2 (a whole 4096-row panel, 1 MB, did not: 4096 x 4096, N = 512,
// ~50% of peak).
constexpr int64_t kChunk = 512;

// Groups per tile of the sort: a tile's rows are read 64 groups (512 bytes of float values) at
// a time (one pass per group read 8 bytes a row, a page and a TLB miss each).
constexpr int64_t kTile = 64;

// The pair of group g in a row's metadata mt (-1: a first position >= the second).
inline int pair_at(const uint8_t* mt, int64_t g) {
  return kPairOf[(mt[g / 2] >> (4 * (g % 2))) & 0xF];
}

// The groups [g0, g1) of A sorted into a.entries / a.off: a counting pass over the metadata,
// then each row's entries written to their places; kBadMeta for a first position >= the
// second. (Through a transposed copy of the tile's values and pairs first: the same speed,
// 9 more bytes per row and group.)
template <typename T>
int by_pair(const T* vals, const uint8_t* meta, const ByPair& a, int64_t g0, int64_t g1) {
  const int64_t M = a.M, half = 2 * a.groups, mcols = ceil_div(a.groups, 2), no = a.no;
  int64_t* const off = a.off;
  Entry* const entries = a.entries;
  for (int64_t gb = g0; gb < g1; gb += kTile) {
    const int64_t ge = min_i64(gb + kTile, g1);
    for (int64_t i = gb * no; i < ge * no; ++i) off[i] = 0;
    int bad = 0;
    for (int64_t m = 0; m < M; ++m) {
      const uint8_t* mt = meta + m * mcols;
      const int64_t key = (m / kChunk) * kPairs + 1;
      for (int64_t g = gb; g < ge; ++g) {
        const int p = pair_at(mt, g);
        bad |= p;
        ++off[g * no + key + (p < 0 ? 0 : p)];  // (a bad one is reported after the pass)
      }
    }
    if (bad < 0) return kBadMeta;
    for (int64_t g = gb; g < ge; ++g)
      for (int64_t i = 1; i < no; ++i) off[g * no + i] += off[g * no + i - 1];
    // off[key] runs as the fill count of key, then moves back one place.
    for (int64_t m = 0; m < M; ++m) {
      const T* v = vals + m * half;
      const uint8_t* mt = meta + m * mcols;
      const int64_t key = (m / kChunk) * kPairs;
      for (int64_t g = gb; g < ge; ++g) {
        const int p = pair_at(mt, g);
        entries[g * M + off[g * no + key + p]++] =
            Entry{static_cast<int32_t>(m), to_float(v[2 * g]), to_float(v[2 * g + 1])};
      }
    }
    for (int64_t g = gb; g < ge; ++g) {
      for (int64_t i = no - 1; i > 0; --i) off[g * no + i] = off[g * no + i - 1];
      off[g * no] = 0;
    }
  }
  return kOk;
}

#if SK_HAVE_AVX512_KERNELS
// acc[A] += w0 * G(m), acc[B] += w1 * G(m) for the entries [e, e1).
template <int A, int B, int NV>
SK_AVX512_INLINE void pair_rows(const Entry* e, const Entry* e1, const float* P, int64_t ldp,
                                __m512 (&acc)[4][NV]) {
  for (; e < e1; ++e) {
    const float* g = P + static_cast<int64_t>(e->m) * ldp;
    const __m512 w0 = _mm512_set1_ps(e->w0), w1 = _mm512_set1_ps(e->w1);
    SK_UNROLL for (int u = 0; u < NV; ++u) {
      const __m512 x = _mm512_loadu_ps(g + 16 * u);
      acc[A][u] = _mm512_fmadd_ps(w0, x, acc[A][u]);
      acc[B][u] = _mm512_fmadd_ps(w1, x, acc[B][u]);
    }
  }
}

// Output rows 4g..4g+3 (those < K) x columns [n0, n0 + nb) for the groups [g0, g1).
template <int NV>
SK_AVX512 void groups_t(const ByPair& a, const float* P, int64_t ldp, int64_t g0, int64_t g1,
                        int64_t K, int64_t n0, int64_t nb, float* out, int64_t ldo) {
  __mmask16 mask[NV];
  SK_UNROLL for (int u = 0; u < NV; ++u) {
    const int64_t n = min_i64(16, max_i64(0, nb - 16 * u));
    mask[u] = static_cast<__mmask16>((1u << n) - 1u);
  }
  for (int64_t c = 0; c < a.chunks; ++c)
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t rows = min_i64(4, K - 4 * g);  // the padding's rows (K % 4 != 0) dropped
      __m512 acc[4][NV];
      SK_UNROLL for (int r = 0; r < 4; ++r)
        SK_UNROLL for (int u = 0; u < NV; ++u)
          acc[r][u] = c > 0 && r < rows
                          ? _mm512_maskz_loadu_ps(mask[u], out + (4 * g + r) * ldo + n0 + 16 * u)
                          : _mm512_setzero_ps();
      const Entry* e = a.entries + g * a.M;
      const int64_t* off = a.off + g * a.no + c * kPairs;
      pair_rows<0, 1, NV>(e + off[0], e + off[1], P, ldp, acc);
      pair_rows<0, 2, NV>(e + off[1], e + off[2], P, ldp, acc);
      pair_rows<0, 3, NV>(e + off[2], e + off[3], P, ldp, acc);
      pair_rows<1, 2, NV>(e + off[3], e + off[4], P, ldp, acc);
      pair_rows<1, 3, NV>(e + off[4], e + off[5], P, ldp, acc);
      pair_rows<2, 3, NV>(e + off[5], e + off[6], P, ldp, acc);
      SK_UNROLL for (int r = 0; r < 4; ++r) {
        if (r >= rows) break;
        float* o = out + (4 * g + r) * ldo + n0;
        SK_UNROLL for (int u = 0; u < NV; ++u)
          _mm512_mask_storeu_ps(o + 16 * u, mask[u], acc[r][u]);
      }
    }
}

class GroupPanels : public PanelWork {
 public:
  GroupPanels(const ByPair& a, const int64_t* bounds, int64_t K, float* out, int64_t ldo)
      : a_(a), bounds_(bounds), K_(K), out_(out), ldo_(ldo) {}
  int run(int part, const float* P, int64_t ldp, int64_t n0, int64_t nb) override {
    const int64_t g0 = bounds_[part], g1 = bounds_[part + 1];
    switch (ldp / 16) {
      case 1: groups_t<1>(a_, P, ldp, g0, g1, K_, n0, nb, out_, ldo_); return kOk;
      case 2: groups_t<2>(a_, P, ldp, g0, g1, K_, n0, nb, out_, ldo_); return kOk;
      case 3: groups_t<3>(a_, P, ldp, g0, g1, K_, n0, nb, out_, ldo_); return kOk;
      case 4: groups_t<4>(a_, P, ldp, g0, g1, K_, n0, nb, out_, ldo_); return kOk;
      default: return kBadArgument;
    }
  }

 private:
  const ByPair& a_;
  const int64_t* bounds_;
  int64_t K_;
  float* out_;
  int64_t ldo_;
};
#endif

#if SK_HAVE_AVX512_KERNELS
// ----------------------------------------------------------------------------- values' gradient
// out[m, 2g + s] = G(m, :) . B(4g + p_s, :) at the two kept positions p_0 < p_1 of row m's
// group g: half the multiply-adds of the dense G B^T that the GEMM path computes and then
// reads at the stored entries. Rows are taken in blocks whose G rows (N floats each) stay in
// L2 while every group runs over them; a group's rows are sorted by their pair (6 lists), so
// a tile of up to 8 rows of one list has its two B rows fixed: per 16 columns, 8 G loads, 2 B
// loads and 16 FMAs, each dot product summed in registers over all N and reduced once. G and B
// are read row-major (copied so when strided). Every output is summed by one thread in a fixed
// order: the same bits at any thread count.

// The dot products of R rows (Gp rows rows[0..R)) with b0 and b1 over n columns (nv whole
// vectors and a masked tail).
template <int R>
SK_AVX512 void dot_tile(const float* Gp, int64_t ldg, const int32_t* rows, const float* b0,
                        const float* b1, int64_t nv, __mmask16 tail, float* r0, float* r1) {
  __m512 a0[R], a1[R];
  const float* g[R];
  SK_UNROLL for (int r = 0; r < R; ++r) {
    a0[r] = _mm512_setzero_ps();
    a1[r] = _mm512_setzero_ps();
    g[r] = Gp + static_cast<int64_t>(rows[r]) * ldg;
  }
  for (int64_t v = 0; v < nv; ++v) {
    const __m512 x0 = _mm512_loadu_ps(b0 + 16 * v), x1 = _mm512_loadu_ps(b1 + 16 * v);
    SK_UNROLL for (int r = 0; r < R; ++r) {
      const __m512 y = _mm512_loadu_ps(g[r] + 16 * v);
      a0[r] = _mm512_fmadd_ps(y, x0, a0[r]);
      a1[r] = _mm512_fmadd_ps(y, x1, a1[r]);
    }
  }
  if (tail != 0) {
    const __m512 x0 = _mm512_maskz_loadu_ps(tail, b0 + 16 * nv);
    const __m512 x1 = _mm512_maskz_loadu_ps(tail, b1 + 16 * nv);
    SK_UNROLL for (int r = 0; r < R; ++r) {
      const __m512 y = _mm512_maskz_loadu_ps(tail, g[r] + 16 * nv);
      a0[r] = _mm512_fmadd_ps(y, x0, a0[r]);
      a1[r] = _mm512_fmadd_ps(y, x1, a1[r]);
    }
  }
  SK_UNROLL for (int r = 0; r < R; ++r) {
    r0[r] = _mm512_reduce_add_ps(a0[r]);
    r1[r] = _mm512_reduce_add_ps(a1[r]);
  }
}

SK_AVX512 void dot_rows(const float* Gp, int64_t ldg, const int32_t* rows, int n,
                        const float* b0, const float* b1, int64_t nv, __mmask16 tail, float* r0,
                        float* r1) {
  for (; n >= 8; n -= 8, rows += 8, r0 += 8, r1 += 8)
    dot_tile<8>(Gp, ldg, rows, b0, b1, nv, tail, r0, r1);
  switch (n) {
    case 7: dot_tile<7>(Gp, ldg, rows, b0, b1, nv, tail, r0, r1); break;
    case 6: dot_tile<6>(Gp, ldg, rows, b0, b1, nv, tail, r0, r1); break;
    case 5: dot_tile<5>(Gp, ldg, rows, b0, b1, nv, tail, r0, r1); break;
    case 4: dot_tile<4>(Gp, ldg, rows, b0, b1, nv, tail, r0, r1); break;
    case 3: dot_tile<3>(Gp, ldg, rows, b0, b1, nv, tail, r0, r1); break;
    case 2: dot_tile<2>(Gp, ldg, rows, b0, b1, nv, tail, r0, r1); break;
    case 1: dot_tile<1>(Gp, ldg, rows, b0, b1, nv, tail, r0, r1); break;
    default: break;
  }
}

// Rows [m0, m1) (m1 - m0 <= kDotBlock) of the values' gradient; kBadMeta for a bad pair.
SK_AVX512 int dot_block(const uint8_t* meta, int64_t K, const float* Gp, int64_t ldg,
                        const float* Bp, int64_t ldb, int64_t N, int64_t m0, int64_t m1,
                        float* out) {
  const int64_t groups = ceil_div(K, 4), half = 2 * groups, mcols = ceil_div(groups, 2);
  const int64_t nv = N / 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (N % 16)) - 1u);
  int32_t rows[kPairs][kDotBlock];
  float r0[kDotBlock], r1[kDotBlock];
  for (int64_t g = 0; g < groups; ++g) {
    int count[kPairs] = {0, 0, 0, 0, 0, 0};
    for (int64_t m = m0; m < m1; ++m) {
      const int p = pair_at(meta + m * mcols, g);
      if (p < 0) return kBadMeta;
      rows[p][count[p]++] = static_cast<int32_t>(m);
    }
    for (int p = 0; p < kPairs; ++p) {
      if (count[p] == 0) continue;
      const int c0 = kPairCols[p][0], c1 = kPairCols[p][1];
      // the padding's columns (K % 4 != 0) read row K - 1 and store 0 (below)
      const float* b0 = Bp + min_i64(4 * g + c0, K - 1) * ldb;
      const float* b1 = Bp + min_i64(4 * g + c1, K - 1) * ldb;
      dot_rows(Gp, ldg, rows[p], count[p], b0, b1, nv, tail, r0, r1);
      for (int i = 0; i < count[p]; ++i) {
        float* o = out + static_cast<int64_t>(rows[p][i]) * half + 2 * g;
        o[0] = 4 * g + c0 < K ? r0[i] : 0.0f;
        o[1] = 4 * g + c1 < K ? r1[i] : 0.0f;
      }
    }
  }
  return kOk;
}
#endif

}  // namespace

bool semi24_transposed_available() {
  return SK_HAVE_AVX512_KERNELS && active_isa() == Isa::kAvx512;
}

bool semi24_transposed_native(int64_t N) { return semi24_transposed_available() && N >= kMinN; }

int semi24_transposed(const Format& a, Strided G, int64_t N, float* out, int num_threads) {
#if SK_HAVE_AVX512_KERNELS
  const int64_t M = a.M, K = a.K, groups = ceil_div(K, 4);
  if (!semi24_transposed_available() || a.layout != SparseLayout::kSemi24 || M > INT32_MAX ||
      a.numel != M * 2 * groups)
    return kBadArgument;
  if (N == 0 || K == 0) return kOk;
  // The sorted form, in one scratch buffer: off, then entries (64-byte aligned).
  int64_t sizes[2];
  const int64_t chunks = max_i64(1, ceil_div(M, kChunk)), no = kPairs * chunks + 1;
  if (!checked_mul(groups, no * 8, &sizes[0]) || !checked_mul(groups, M * 12, &sizes[1]))
    return kNoMemory;
  const int64_t at1 = round_up(sizes[0], 64);
  char* buf = scratch_index().get_as<char>(at1 + sizes[1]);
  if (buf == nullptr) return kNoMemory;
  const ByPair bp{reinterpret_cast<Entry*>(buf + at1), reinterpret_cast<int64_t*>(buf), M,
                  groups, chunks, no};
  // Two multiply-adds per row of a group and vector of 16 columns.
  const double madds = 2.0 * static_cast<double>(M) * static_cast<double>(groups) *
                      static_cast<double>(ceil_div(N, 16));
  const int nt = threads_for(num_threads, kPanelEntryCost * madds);
  const int64_t tiles = ceil_div(groups, kTile);
  const int sort_parts = parts_for(nt, tiles, kMaxParts);
  const int s = with_weight_type(a.wt, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    const T* vals = static_cast<const T*>(a.values);
    const uint8_t* meta = static_cast<const uint8_t*>(a.indices);
    return parallel_parts(sort_parts, nt, [&](int p) {
      return by_pair(vals, meta, bp, min_i64(groups, tiles * p / sort_parts * kTile),
                     min_i64(groups, tiles * (p + 1) / sort_parts * kTile));
    });
  });
  if (s != kOk) return s;
  Dense d;  // G as the panels' B: its M rows, N columns; the output's K rows
  d.M = K;
  d.K = M;
  d.N = N;
  d.B = G.data;
  d.ldb_k = G.rs;
  d.ldb_n = G.cs;
  d.num_threads = nt;
  const int parts = panel_parts(nt, groups, N, kPanelWidth, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  split_even(groups, parts, bounds);
  GroupPanels work(bp, bounds, K, out, N);
  return run_panels(d, nt, parts, kPanelWidth, work, 16);
#else
  (void)a, (void)G, (void)N, (void)out, (void)num_threads;
  return kBadArgument;
#endif
}

namespace {
// X [rows, N] as row-major rows (*out, row stride *ld): X itself when its rows are contiguous
// and apart, else a copy in `scratch`.
int row_major_rows(Strided X, int64_t rows, int64_t N, Scratch& scratch, int num_threads,
                   const float** out, int64_t* ld) {
  if (X.cs == 1 && X.rs >= N) {
    *out = X.data;
    *ld = X.rs;
    return kOk;
  }
  float* buf = scratch.get_as<float>(rows, N);
  if (buf == nullptr) return kNoMemory;
  *out = buf;
  *ld = N;
  return copy_row_major(X, rows, N, buf, num_threads);
}
}  // namespace

bool semi24_sampled_dot_native(int64_t N) {
  return semi24_transposed_available() && N >= kDotMinN && N <= kDotMaxN;
}

int semi24_sampled_dot(const Format& a, Strided G, Strided B, int64_t N, float* out,
                       int num_threads) {
#if SK_HAVE_AVX512_KERNELS
  const int64_t M = a.M, K = a.K, groups = ceil_div(K, 4);
  if (!semi24_transposed_available() || a.layout != SparseLayout::kSemi24 || M > INT32_MAX ||
      N < 0 || N > kDotMaxN || a.numel != M * 2 * groups)
    return kBadArgument;
  if (M == 0 || K == 0) return kOk;
  const uint8_t* meta = static_cast<const uint8_t*>(a.indices);
  if (N == 0) {  // empty sums; the metadata is still checked
    for (int64_t m = 0; m < M; ++m)
      for (int64_t g = 0; g < groups; ++g)
        if (pair_at(meta + m * ceil_div(groups, 2), g) < 0) return kBadMeta;
    for (int64_t i = 0; i < a.numel; ++i) out[i] = 0.0f;
    return kOk;
  }
  // G and B row-major (views of the caller's when they are, else copies).
  const float *Gp = nullptr, *Bp = nullptr;
  int64_t ldg = 0, ldb = 0;
  int s = row_major_rows(G, M, N, scratch_panel(), num_threads, &Gp, &ldg);
  if (s == kOk) s = row_major_rows(B, K, N, scratch_accum(), num_threads, &Bp, &ldb);
  if (s != kOk) return s;
  const int64_t block = max_i64(kDotMinBlock, min_i64(kDotBlock, kDotL2Bytes / (4 * N)));
  const int64_t blocks = ceil_div(M, block);
  const double madds = 2.0 * static_cast<double>(M) * static_cast<double>(groups) *
                       static_cast<double>(ceil_div(N, 16));
  const int nt = threads_for(num_threads, kPanelEntryCost * madds);
  // One block per part where it can (parts_for's few parts per thread left 4 of 6 blocks to
  // one thread at 384 rows); the threads take them as they finish.
  const int parts = nt > 1 ? static_cast<int>(min_i64(blocks, kMaxParts)) : 1;
  return parallel_parts(parts, nt, [&](int p) {
    const int64_t b0 = blocks * p / parts, b1 = blocks * (p + 1) / parts;
    for (int64_t b = b0; b < b1; ++b) {
      const int s = dot_block(meta, K, Gp, ldg, Bp, ldb, N, b * block,
                              min_i64(M, (b + 1) * block), out);
      if (s != kOk) return s;
    }
    return static_cast<int>(kOk);
  });
#else
  (void)a, (void)G, (void)B, (void)N, (void)out, (void)num_threads;
  return kBadArgument;
#endif
}

}  // namespace cpu
}  // namespace sparsekern
