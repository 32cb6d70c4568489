// Torch-free CPU kernel entry points of sparsekern (pointers, sizes, strides in; status out).
//
// Every kernel computes Y[M, N] = A @ B (+ bias[:, None]) for a sparse A [M, K] in one of the
// three formats (see sparsekern/formats/*.py for the exact tensor layouts), B dense [K, N]
// float32 with any strides, Y float32 with any strides, accumulation in float32. A kernel
// reads B only in rows [0, K) and writes every element of Y exactly once (after a kOk
// status). Each kernel checks every index it uses and returns a status instead of reading
// out of bounds; the glue turns a non-zero status into an error.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace sparsekern {
namespace cpu {

// Status a kernel returns; the glue turns a non-zero status into an error naming it.
enum Status : int {
  kOk = 0,
  kBadIndex = 1,     // an index read from the format is out of range
  kBadOffsets = 2,   // offsets do not start at 0, decrease, or do not end at the entry count
  kBadMeta = 3,      // 2:4 metadata with a first position >= the second
  kBadArgument = 4,  // sizes/strides inconsistent (a bug in the caller)
  kNoMemory = 5,     // a scratch buffer could not be allocated
  kInternal = 6,     // the thread pool ran a work item twice (a bug: reported, never a hang)
};

class CsrRepack;

// Element type of the sparse values (B, bias and Y are always float32).
enum class WeightType : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

// Integer type of an index tensor.
enum class IndexType : int { kI16 = 0, kI32 = 1, kI64 = 2 };

// The dense side of a call: B [K, N] in, Y [M, N] out (element strides, any sign-free values).
struct Dense {
  int64_t M = 0, K = 0, N = 0;
  const float* B = nullptr;  // B(k, n) = B[k * ldb_k + n * ldb_n]
  int64_t ldb_k = 0, ldb_n = 0;
  const float* bias = nullptr;  // bias(m) = bias[m * bias_stride], or null
  int64_t bias_stride = 1;
  float* Y = nullptr;  // Y(m, n) = Y[m * ldy_m + n * ldy_n]
  int64_t ldy_m = 0, ldy_n = 0;
  int num_threads = 1;  // threads to use (the caller's intra-op thread count)
};

// 2:4 semi-structured A: values [M, Kp/2] (Kp = ceil(K/4)*4) row-major, meta [M, ceil(Kp/8)]
// uint8 (one nibble per group of 4: bits 0-1 first kept position, bits 2-3 second).
int semi24_spmm(const void* values, WeightType wt, const uint8_t* meta, const Dense& d);

// 1:4 semi-structured A (forward, any N): values [M, ceil(K/4)] row-major, meta
// [M, ceil(K/16)] uint8 (2 bits per group: group g at bits 2*(g%4) of byte g/4). Every
// position is valid; positions in the padded columns (>= K) never count.
int nm14_spmm(const void* values, WeightType wt, const uint8_t* meta, const Dense& d);
// The same 2:4 A as dense floats: out [M, K] row-major (zeros where nothing is stored).
int semi24_to_dense(const void* values, WeightType wt, const uint8_t* meta, int64_t M, int64_t K,
                    float* out, int num_threads);

// S [M, K] row-major at A's stored entries: out [M, Kp/2] (0 for entries in the padding).
int semi24_gather(const float* S, const uint8_t* meta, int64_t M, int64_t K, float* out,
                  int num_threads);

// BSR A: values [nnzb, bm, bk] (each block row-major), block_cols [nnzb] int32,
// block_rowptr [ceil(M/bm) + 1] int32.
int bsr_spmm(const void* values, WeightType wt, int64_t nnzb, int64_t bm, int64_t bk,
             const int32_t* block_cols, const int32_t* block_rowptr, const Dense& d);

// CSC A: values [nnz], rows [nnz] (int16 or int32), colptr [K + 1] (int32 or int64).
// `skip_zero_columns`: the N == 1 kernel skips columns whose activation B(k, 0) is 0
// (EIE) and whose stored values it has checked to be finite (Inf * 0 is NaN).
// `csr` (optional, the same matrix repacked, see CsrRepack): N == 1 uses its row-wise gather
// instead when too few columns are skipped for scattering to be cheaper.
struct Csc {
  const void* values = nullptr;
  WeightType wt = WeightType::kF32;
  const void* rows = nullptr;
  IndexType row_type = IndexType::kI32;
  const void* colptr = nullptr;
  IndexType ptr_type = IndexType::kI64;
  int64_t nnz = 0;
};
int csc_spmm(const Csc& a, bool skip_zero_columns, const CsrRepack* csr, const Dense& d);

// SELL-16x64 A (sparsekern/formats/sell.py): values [nnz] (the entries, step by step, lane
// by lane), indices [steps, 16] uint8 (column within a 64-column block, 255 = no entry),
// offsets [G + 1, 2] int32 or int64, G = ceil(M/16) * ceil(K/64): group g = slice * ceil(K/64)
// + block starts at step offsets[g][0] and value offsets[g][1].
struct Sell {
  const void* values = nullptr;
  WeightType wt = WeightType::kF32;
  const uint8_t* indices = nullptr;
  const void* offsets = nullptr;
  IndexType ptr_type = IndexType::kI32;
  int64_t steps = 0, nnz = 0;
};
int sell_spmm(const Sell& a, const Dense& d);
// The offsets of a SELL A [M, K] checked as sell_spmm checks them (kBadOffsets), for a
// product no kernel runs (an empty sum: K == 0 stores no step).
int sell_offsets_status(const Sell& a, int64_t M, int64_t K);

// A CSC matrix repacked row by row (CSR) for N > 1: built once per weight and cached by the
// glue. Values keep the weight's element type; column indices are int16 when K <= 32768.
// The pattern arrays (rowptr, cols, src) are shared with the repacks csr_revalue makes from
// this one (the same pattern with new values: a training step changes values only).
struct CsrPattern {
  CsrPattern() = default;
  CsrPattern(const CsrPattern&) = delete;
  CsrPattern& operator=(const CsrPattern&) = delete;
  ~CsrPattern();
  int64_t* rowptr = nullptr;  // [M + 1]
  void* cols = nullptr;       // [nnz] int16 or int32
  int32_t* src = nullptr;     // [nnz] CSC position of each CSR entry; null when nnz > 2^31 - 1
};

class CsrRepack {
 public:
  CsrRepack() = default;
  CsrRepack(const CsrRepack&) = delete;
  CsrRepack& operator=(const CsrRepack&) = delete;
  ~CsrRepack();
  int64_t M = 0, K = 0, nnz = 0;
  WeightType wt = WeightType::kF32;
  bool cols16 = true;
  std::shared_ptr<const CsrPattern> pattern;  // owns rowptr and cols
  const int64_t* rowptr = nullptr;            // [M + 1]
  const void* cols = nullptr;                 // [nnz] int16 or int32
  void* values = nullptr;                     // [nnz] of wt (owned)
  bool all_finite = true;                     // every stored value is finite (see csc_spmm)
  int64_t nbytes() const;
};

// Checks `a` completely (offsets and every row index), then fills `out`. Returns a status.
int csc_to_csr(const Csc& a, int64_t M, int64_t K, CsrRepack* out);

// The repack of `a` when its row indices and offsets are byte for byte those `from` was built
// from (the caller checks; only values differ): shares from's pattern and gathers a's values
// into CSR order (threaded), O(nnz) without the row sort. kBadArgument when `from` has no src
// (more than 2^31 - 1 entries) or a's sizes differ: the caller repacks instead.
int csr_revalue(const CsrRepack& from, const Csc& a, int num_threads, CsrRepack* out);

// Whether every stored value of a CSC matrix is finite, and its indices all valid
// (the whole-matrix facts the glue caches per weight). Returns a status.
int csc_scan(const Csc& a, int64_t M, int64_t K, bool* all_finite);
// A BSR A [M, K] of nnzb blocks [bm, bk] checked as the kernels check it (offsets, then every
// block column: kBadOffsets / kBadIndex), for a product no kernel runs (an empty sum).
int bsr_structure(const int32_t* block_cols, const int32_t* block_rowptr, int64_t nnzb,
                  int64_t M, int64_t K, int64_t bm, int64_t bk);

// Whether a[0, n) and b[0, n) hold the same bytes, compared in parts on up to `threads`
// threads when n is large (the glue's byte-for-byte check of a cached repack's snapshot).
bool bytes_equal(const void* a, const void* b, size_t n, int threads);
// bytes_equal for `count` pairs at once: equal[t] for a[t], b[t], n[t], their bytes split into
// parts of at least 64 KB over all pairs together (one parallel pass per kMaxComparePairs).
constexpr int kMaxComparePairs = 4;
void bytes_equal_each(const void* const* a, const void* const* b, const size_t* n, int count,
                      int threads, bool* equal);

// Y = A @ B for a repacked A (N == 1: a row-wise gather, csr_gemv).
int csr_spmm(const CsrRepack& a, const Dense& d);
int csr_gemv(const CsrRepack& a, const Dense& d);

// csr_spmm with a cached repack whose validity check(ctx, threads) (the glue's comparison of
// the live tensors with the snapshot the repack was built from) runs with it: beside the
// product, on a second thread, when the product alone would use one thread and
// d.num_threads >= 2 (both read O(nnz) bytes; inside a model, where the weight comes from the
// LLC or memory, the pair then takes about the longer of the two instead of their sum), else
// first, on d.num_threads threads, the product running only when the check passes.
// *passed: the check's verdict; Y holds the product only when it passed (otherwise the
// caller rebuilds the repack and runs the product again).
using CheckFn = bool (*)(void* ctx, int threads);
int csr_spmm_checked(const CsrRepack& a, const Dense& d, CheckFn check, void* ctx, bool* passed);

// Fused attention (softmax(scale * Q K^T + mask) V) for each batch b and head h, accumulating
// in T. Element (b, h, s, d) of q is q[b * q_b + h * q_h + s * q_s + d * q_d] (any strides; the
// same for k, v, out); k and v have Hkv heads, H % Hkv == 0 (query head h reads key/value
// head h / (H / Hkv)). mask: additive, mask(b, h, i, j) = mask[b * m_b + h * m_h + i * m_i +
// j * m_j] (stride 0 where broadcast), or null. A row whose masked scores are all -inf gives
// 0, as scaled_dot_product_attention does (a NaN score gives NaN). Needs D >= 1, Sk >= 1. T is float (vector kernels) or double
// (portable loops).
template <typename T>
struct AttentionArgs {
  int64_t B = 0, H = 0, Hkv = 0, Sq = 0, Sk = 0, D = 0, Dv = 0;
  const T* q = nullptr;
  int64_t q_b = 0, q_h = 0, q_s = 0, q_d = 0;
  const T* k = nullptr;
  int64_t k_b = 0, k_h = 0, k_s = 0, k_d = 0;
  const T* v = nullptr;
  int64_t v_b = 0, v_h = 0, v_s = 0, v_d = 0;
  const T* mask = nullptr;
  int64_t m_b = 0, m_h = 0, m_i = 0, m_j = 0;
  T* out = nullptr;
  int64_t o_b = 0, o_h = 0, o_s = 0, o_d = 0;
  T scale = 1;
  int num_threads = 1;
};
int attention(const AttentionArgs<float>& a);
int attention(const AttentionArgs<double>& a);

// The kernels' threads: by default their own pool (parallel.cpp). set_item_runner installs
// another thread team instead (the glue offers torch's intra-op pool), or null for the
// pool. A runner must call fn(ctx, item) exactly once for every item in [0, items) on up to
// `threads` threads and return the first non-zero status; it is installed while no call runs.
// A runner may instead return kRunnerDeclined having called fn for no item: that call then
// runs on the pool.
using ItemFn = int (*)(void* ctx, int64_t item);
using ItemRunner = int (*)(int64_t items, int threads, ItemFn fn, void* ctx);
constexpr int kRunnerDeclined = -1;
void set_item_runner(ItemRunner runner);
// Tests only (SPARSEKERN_POOL_FUZZ=1, read with SPARSEKERN_CPU_POOL): the pool's threads
// sleep for a few random microseconds at the points where a call hands over to the next, so
// that a stress test reaches the interleavings a busy machine produces only now and then.
void set_pool_fuzz(bool on);
// One such point: a no-op unless set_pool_fuzz is on (also used inside the glue's locks).
void fuzz_point();

// The instruction set the kernels use for the next call: "avx512", "avx2" or "portable".
// SPARSEKERN_CPU_ISA=portable|avx2|avx512|auto (read at load and on isa_reload(), see isa.h)
// forces it; each needs the CPU.
const char* active_isa_name();

}  // namespace cpu
}  // namespace sparsekern
