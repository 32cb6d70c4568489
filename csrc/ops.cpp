// Registration glue for the CPU (tensors -> pointers, checks; no arithmetic here). Every
// schema is defined in sparsekern/ops.py; this file registers kernels only.
//
// * sparsekern::spmm, CPU key: the fast path. When the call is one the compiled kernels
//   serve and no backend is forced (use_backend in this thread, SPARSEKERN_BACKEND), it runs
//   here with no Python in between (1:4: its forward only, see Layout::kNm14). Anything else (a forced backend or output poisoning, a
//   dtype or layout without a CPU kernel, any argument that is not exactly as the op
//   contract says) goes to sparsekern::_spmm_dispatch, the Python path, which owns the error
//   messages and the reference fallback.
// * sparsekern::spmm, Autograd key (every device): SpmmFunction, the autograd formula. With
//   no input requiring grad it only steps below autograd (inference records nothing).
// * sparsekern::_spmm_cpu: the same kernels with a caller-given output, for the Python path;
//   _spmm_transposed_cpu and _sampled_dot_cpu: the backward kernels.
// * helper ops (_abi_version, _cpu_isa, _kernel_exists, _csc_cache_info, ...): torch ops,
//   not pybind11, so _C is built against Python's stable ABI (py_limited_api, one abi3 file).
//
// CSC weights with N > 1 get a row-wise repack (cpu::CsrRepack) cached here per weight and
// checked byte for byte against the live tensors at every use (see CscFacts: the values
// can change in ways no version counter records); a small product runs beside the check, on
// the other thread, and is kept only when the check passes. When only the values changed (a
// training step), the new repack reuses the cached row pattern (cpu::csr_revalue). GEMV
// (N == 1) caches nothing.
//
// Sizes: M, K, N and BSR block sizes above cpu::kMaxDim (2^31 - 1) are rejected with an
// error naming the argument (int32 indices cannot address more, and every product of sizes
// the kernels form then fits int64); scratch buffers above cpu::kMaxScratchBytes fail with
// an error naming K and N. A B with zero strides (expand) is served as it is: the kernels
// read B(k, n) through its strides and never write it.
//
// Environment: SPARSEKERN_BACKEND, SPARSEKERN_CPU_ISA, _SCATTER, _BROADCAST, _PREFETCH (cpu/isa.h)
// and SPARSEKERN_CPU_POOL (the threads the kernels run on, see "threads" below) are read
// once at import and again
// on sparsekern.backends.reload_env() (the _reload_env op), never per call: a getenv per
// call costs time and races with os.environ writes from other threads.
// Python.h first (as Python requires); with Py_LIMITED_API (setup.py) only the stable ABI is
// used: this file needs it for PyInit__C alone, so `_C` is one abi3 file for every Python.
#include <Python.h>
#include <pthread.h>
#include <torch/all.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <tuple>
#include <unordered_map>

#include <vector>

#include "cpu/backward.h"
#include "cpu/common.h"
#include "cpu/isa.h"
#include "cpu/kernels.h"

// Must equal sparsekern/_extension.py ABI_VERSION.
#define SPARSEKERN_ABI_VERSION 8
#define SPARSEKERN_STR2(x) #x
#define SPARSEKERN_STR(x) SPARSEKERN_STR2(x)

// The ABI version as bytes in the library file: sparsekern/_extension.py reads it before
// loading the library, since loading registers the kernels, and a stale build's kernels
// must not be registered at all (one whose signature changed makes the schema definitions
// fail, so `import sparsekern` raised instead of falling back to the reference backend).
extern "C" __attribute__((used, visibility("default")))
const char sparsekern_abi_marker[] = "sparsekern-abi-version=" SPARSEKERN_STR(SPARSEKERN_ABI_VERSION) ";";

namespace {

namespace skc = sparsekern::cpu;

constexpr int64_t kAbiVersion = SPARSEKERN_ABI_VERSION;

// > 0 while this thread has a backend override (use_backend) or output poisoning active:
// its CPU calls then take the Python path, which honours them. Per thread, as use_backend is.
thread_local int t_python_path = 0;

// SPARSEKERN_BACKEND names a backend other than cpu (set by _reload_env, see the file comment).
std::atomic<bool> g_env_forces_python{false};

using skc::ceil_div;

// The sizes the CPU kernels serve (cpu::kMaxDim); O(1).
bool sizes_servable(const at::Tensor& values, int64_t M, int64_t K, int64_t N) {
  if (M < 0 || K < 0 || N < 0 || M > skc::kMaxDim || K > skc::kMaxDim || N > skc::kMaxDim)
    return false;
  for (int64_t i = 1; i < values.dim(); ++i)
    if (values.size(i) > skc::kMaxDim) return false;
  return true;
}

void check_sizes(c10::string_view what, const at::Tensor& values, int64_t M, int64_t K,
                 int64_t N) {
  const int64_t lim = skc::kMaxDim;
  TORCH_CHECK_VALUE(M <= lim && K <= lim, what, ": M=", M, ", K=", K, " exceed the largest "
                    "size the CPU kernels serve (", lim, " = 2^31 - 1, the reach of their int32 "
                    "indices); expected M, K <= ", lim);
  TORCH_CHECK_VALUE(N <= lim, what, ": B has N=", N, " columns; the CPU kernels serve at most ",
                    lim, " (2^31 - 1)");
  for (int64_t i = 1; i < values.dim(); ++i)
    TORCH_CHECK_VALUE(values.size(i) <= lim, what, ": values has shape ", values.sizes(),
                      "; block sizes above ", lim, " (2^31 - 1) are not served");
}

// kNm14 (1:4) and kSell have forward kernels only (csrc/cpu/nm14.cpp, sell.cpp), reached
// from the fast path (forward_only_ok); the Python path (forced backends, autograd) and the
// backward ops lower them to 2:4 and CSC. So kernel_exists, which the Python side and the
// backward ops ask, stays false for them.
enum class Layout { kSemi24, kBsr, kCsc, kNm14, kSell, kUnknown };

Layout parse_layout(c10::string_view s) {
  if (s == "2:4") return Layout::kSemi24;
  if (s == "bsr") return Layout::kBsr;
  if (s == "csc") return Layout::kCsc;
  if (s == "1:4") return Layout::kNm14;
  if (s == "sell") return Layout::kSell;
  return Layout::kUnknown;
}

// Half-precision activations: B (and G, bias, the output) bfloat16 or float16 with weights
// of the same dtype, a bfloat16 or float16 model. The kernels take float32 B only, so these
// calls run them on float32 copies of B (and bias, G; exact) into a float32 output rounded
// once to B's dtype: float32 accumulation, as the reference computes. (They ran on the
// reference backend before: a bfloat16 4096x4096 layer at N=1 took 15-145 ms against 1.8 ms
// for torch's bfloat16 dense layer.)
bool half_activations(at::ScalarType values_t, at::ScalarType b_t) {
  return (b_t == at::kBFloat16 || b_t == at::kHalf) && values_t == b_t;
}

// Does a compiled CPU kernel serve this case? (Kept in one place: Python asks it too.)
// Every layout: float32 B with float32, bfloat16 or float16 weights (float32 output), and
// half-precision activations with weights of their dtype (above).
bool kernel_exists(Layout layout, at::ScalarType values_t, at::ScalarType b_t) {
  if (half_activations(values_t, b_t)) b_t = at::kFloat;
  if (layout == Layout::kUnknown || layout == Layout::kNm14 || layout == Layout::kSell ||
      b_t != at::kFloat)
    return false;
  return values_t == at::kFloat || values_t == at::kBFloat16 || values_t == at::kHalf;
}

// t in `dtype` (t itself when it has it). An expanded operand (stride 0 in some dimension,
// x.expand) is converted at its stored size and expanded again: converting the view itself
// would materialize every repeat (N = 2^31 columns of one stored column: a 32 GB copy of 4
// bytes).
at::Tensor converted(const at::Tensor& t, at::ScalarType dtype) {
  if (t.scalar_type() == dtype) return t;
  at::Tensor base = t;
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.stride(d) == 0 && t.size(d) > 1) base = base.narrow(d, 0, 1);
  return base.to(dtype).expand(t.sizes());
}

// A float32 copy of a half-precision operand (kernel_exists); float32 tensors as they are.
at::Tensor as_float(const at::Tensor& t) { return converted(t, at::kFloat); }

// The forward-only kernels (1:4, sell): the dtypes of kernel_exists, B a matrix.
bool forward_only_ok(Layout layout, at::ScalarType values_t, const at::Tensor& B) {
  return (layout == Layout::kNm14 || layout == Layout::kSell) && B.dim() == 2 &&
         kernel_exists(Layout::kSemi24, values_t, B.scalar_type());
}

skc::WeightType weight_type(at::ScalarType t) {
  if (t == at::kBFloat16) return skc::WeightType::kBF16;
  if (t == at::kHalf) return skc::WeightType::kF16;
  return skc::WeightType::kF32;
}

// The layout-specific shapes and dtypes of the format tensors (O(1); the kernels check the
// index values they read).
bool format_meta_ok(const at::Tensor& values, const at::Tensor& indices,
                    const at::Tensor& offsets, int64_t M, int64_t K, Layout layout) {
  if (layout == Layout::kCsc) {
    const auto it = indices.scalar_type();
    const auto ot = offsets.scalar_type();
    return values.dim() == 1 && indices.dim() == 1 && indices.size(0) == values.size(0) &&
           (it == at::kInt || (it == at::kShort && M <= 32768)) &&
           (ot == at::kInt || ot == at::kLong) && offsets.dim() == 1 && offsets.size(0) == K + 1;
  }
  if (layout == Layout::kBsr) {
    if (values.dim() != 3 || values.size(1) < 1 || values.size(2) < 1) return false;
    return indices.scalar_type() == at::kInt && indices.dim() == 1 &&
           indices.size(0) == values.size(0) && offsets.scalar_type() == at::kInt &&
           offsets.dim() == 1 && offsets.size(0) == ceil_div(M, values.size(1)) + 1;
  }
  if (layout == Layout::kNm14) {
    const int64_t G = ceil_div(K, 4);
    return values.dim() == 2 && values.size(0) == M && values.size(1) == G &&
           indices.scalar_type() == at::kByte && indices.dim() == 2 && indices.size(0) == M &&
           indices.size(1) == ceil_div(G, 4) && offsets.numel() == 0;
  }
  if (layout == Layout::kSell) {
    const auto ot = offsets.scalar_type();
    return values.dim() == 1 && indices.scalar_type() == at::kByte && indices.dim() == 2 &&
           indices.size(1) == 16 && (ot == at::kInt || ot == at::kLong) &&
           offsets.dim() == 2 && offsets.size(1) == 2 &&
           offsets.size(0) == ceil_div(M, 16) * ceil_div(K, 64) + 1;
  }
  if (layout == Layout::kSemi24) {
    const int64_t half = ceil_div(K, 4) * 2;
    return values.dim() == 2 && values.size(0) == M && values.size(1) == half &&
           indices.scalar_type() == at::kByte && indices.dim() == 2 && indices.size(0) == M &&
           indices.size(1) == ceil_div(ceil_div(K, 4), 2) && offsets.numel() == 0;
  }
  return false;
}

// True when every argument is exactly as the op contract requires, so the kernel can run
// without the Python checks.
bool fast_path_ok(const at::Tensor& values, const at::Tensor& indices, const at::Tensor& offsets,
                  int64_t M, int64_t K, Layout layout, const at::Tensor& B,
                  const c10::optional<at::Tensor>& bias) {
  if (t_python_path > 0 || g_env_forces_python.load(std::memory_order_relaxed))
    return false;
  for (const at::Tensor* t : {&values, &indices, &offsets, &B}) {
    if (!t->defined() || t->layout() != at::kStrided || !t->device().is_cpu()) return false;
  }
  if (!values.is_contiguous() || !indices.is_contiguous() || !offsets.is_contiguous())
    return false;
  if (!kernel_exists(layout, values.scalar_type(), B.scalar_type()) &&
      !forward_only_ok(layout, values.scalar_type(), B))
    return false;
  if (B.dim() != 2 || B.size(0) != K) return false;
  // Sizes out of reach go to the Python path, which names a bad argument (or this file's
  // _spmm_cpu rejects the size with its own message).
  if (!sizes_servable(values, M, K, B.size(1))) return false;
  if (bias.has_value() && bias->defined()) {
    const at::Tensor& b = *bias;
    if (b.layout() != at::kStrided || !b.device().is_cpu() || b.dim() != 1 || b.size(0) != M ||
        b.scalar_type() != B.scalar_type())
      return false;
  }
  return format_meta_ok(values, indices, offsets, M, K, layout);
}

// The output rule of sparsekern/_output.py: column-major when B is column-major.
at::Tensor empty_output(int64_t M, const at::Tensor& B) {
  const int64_t N = B.size(1);
  if (N > 1 && B.size(0) > 1 && B.stride(0) == 1)
    return at::empty({N, M}, B.options()).t();
  return at::empty({M, N}, B.options());
}

// SPARSEKERN_CPU_ISA as last read (at load or reload_env()); an atomic load when it is fine.
void check_isa_env() {
  std::string v;
  const skc::IsaEnvStatus st = skc::isa_env_status(&v);
  if (st == skc::IsaEnvStatus::kOk) return;
  TORCH_CHECK_VALUE(st != skc::IsaEnvStatus::kUnknownScatter, "SPARSEKERN_CPU_SCATTER='", v,
                    "' is not a scatter choice; expected one of 'vector', 'scalar', 'auto'");
  TORCH_CHECK_VALUE(st != skc::IsaEnvStatus::kUnknownBroadcast, "SPARSEKERN_CPU_BROADCAST='", v,
                    "' is not a weight broadcast choice; expected one of 'register', 'load', "
                    "'auto'");
  TORCH_CHECK_VALUE(st != skc::IsaEnvStatus::kUnknownPrefetch, "SPARSEKERN_CPU_PREFETCH='", v,
                    "' is not a weight prefetch choice; expected one of 'always', 'never', "
                    "'auto'");
  TORCH_CHECK_VALUE(st != skc::IsaEnvStatus::kUnknown, "SPARSEKERN_CPU_ISA='", v,
                    "' is not a CPU instruction set choice; expected one of 'portable', "
                    "'avx2', 'avx512', 'auto'");
  TORCH_CHECK_VALUE(st != skc::IsaEnvStatus::kAvx2Missing,
                    "SPARSEKERN_CPU_ISA='avx2' but this CPU lacks AVX2, FMA or F16C; use "
                    "'portable' or 'auto'");
  TORCH_CHECK_VALUE(false, "SPARSEKERN_CPU_ISA='avx512' but this CPU (or OS) lacks AVX-512 "
                    "F/BW/VL/DQ or zmm state support; use 'avx2', 'portable' or 'auto'");
}

// `op`: the public op whose call failed (the backward products name their own).
void check_status(int status, c10::string_view layout, int64_t M, int64_t K, int64_t N,
                  const char* op = "sparsekern.spmm") {
  using namespace sparsekern::cpu;
  if (status == kOk) return;
  const std::string what = std::string(op) + "(layout='" + std::string(layout) + "'): ";
  if (layout == "csc") {
    TORCH_CHECK_VALUE(status != kBadIndex, what, "a row index in indices is out of range; "
                      "expected 0 <= index < M");
    TORCH_CHECK_VALUE(status != kBadOffsets, what, "offsets must start at 0, never decrease "
                      "and end at the number of stored values (values.shape[0])");
  }
  if (layout == "sell") {
    TORCH_CHECK_VALUE(status != kBadIndex, what, "an index in indices is neither 255 (no entry) "
                      "nor below its block's width (64; K - 64 * (ceil(K / 64) - 1) in the last "
                      "block), or a lane past row M - 1 holds an entry");
    TORCH_CHECK_VALUE(status != kBadOffsets, what, "offsets[:, 0] must start at 0, never "
                      "decrease and end at the number of steps (indices.shape[0]); offsets[:, 1] "
                      "the same up to the number of values, each group's values one per lane "
                      "below 255 of its steps");
  }
  if (layout == "bsr") {
    TORCH_CHECK_VALUE(status != kBadIndex, what, "a block-column index in indices is out of "
                      "range; expected 0 <= index < ceil(K / bk)");
    TORCH_CHECK_VALUE(status != kBadOffsets, what, "offsets must start at 0, never decrease "
                      "and end at the number of stored blocks (values.shape[0])");
  }
  TORCH_CHECK_VALUE(status != kBadMeta, what, "indices holds a group whose positions are not "
                    "strictly increasing (first position >= second)");
  TORCH_CHECK_VALUE(status != kBadIndex, what, "an index in the format tensors is out of range");
  TORCH_CHECK_VALUE(status != kBadOffsets, what, "offsets must start at 0, never decrease and "
                    "end at the number of stored entries");
  TORCH_CHECK(status != kNoMemory, what, "out of memory for a scratch buffer (M=", M, ", K=", K,
              ", N=", N, "; buffers above ", kMaxScratchBytes, " bytes are refused: the kernels' "
              "per-thread buffers grow with K (B packed in panels of K rows, the GEMV's list "
              "of columns) and with M and N (row sums, copies of B))");
  TORCH_CHECK(status != kInternal, what, "internal error: the CPU thread pool ran a work item "
              "twice (a sparsekern bug; please report it with SPARSEKERN_CPU_POOL and the "
              "thread count). SPARSEKERN_CPU_POOL=torch avoids sparsekern's own pool");
  TORCH_CHECK(false, what, "kernel failed with status ", status);
}

// check_status for a kernel that read the format tensors: a bad index, offset or 2:4 group
// is first handed to the Python validator (sparsekern::_locate_format_error), whose error
// names the first bad entry (the kernels only report that one exists); on the error path
// only.
void check_format_status(int status, const at::Tensor& values, const at::Tensor& indices,
                         const at::Tensor& offsets, int64_t M, int64_t K, c10::string_view layout,
                         int64_t N, const char* op = "sparsekern.spmm") {
  using namespace sparsekern::cpu;
  if (status == kBadIndex || status == kBadOffsets || status == kBadMeta) {
    static auto locate = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("sparsekern::_locate_format_error", "")
                             .typed<void(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         int64_t, int64_t, c10::string_view)>();
    locate.call(values, indices, offsets, M, K, layout);
  }
  check_status(status, layout, M, K, N, op);
}

// ----------------------------------------------------------------------------- CSC cache

using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;

// The bytes of the three format tensors of a CSC weight, as the kernel sees them now.
struct CscBytes {
  const void* ptr[3];
  size_t size[3];
  CscBytes(const at::Tensor& v, const at::Tensor& i, const at::Tensor& o) {
    const at::Tensor* ts[3] = {&v, &i, &o};
    for (int t = 0; t < 3; ++t) {
      size[t] = ts[t]->numel() * ts[t]->element_size();
      ptr[t] = size[t] > 0 ? ts[t]->data_ptr() : nullptr;
    }
  }
};

// A CSC weight's row-wise repack (cpu::CsrRepack), built from a snapshot of its tensors.
// Valid only while the live tensors still hold the snapshot's bytes: checked byte for byte
// (memcmp) at every use, because the values can change without any trace torch would see
// (writes through .data or a NumPy view, load_state_dict into inference tensors, which have
// no version counter). The check reads the weight twice, O(nnz), which is cheap against the
// O(nnz * N) product it serves (used for N > 1 only; GEMV runs on the live tensors).
struct CscFacts {
  int status = skc::kOk;  // of csc_to_csr: offsets and every row index checked
  std::unique_ptr<skc::CsrRepack> csr;
  // values, indices, offsets; the pattern's two are shared with the facts csr_revalue makes.
  std::shared_ptr<const std::vector<char>> snapshot[3];
  // 2: the live bytes are the snapshot's; 1: indices and offsets are, values differ; 0: not.
  // The three are compared in one pass split over `threads` threads (at 4096x4096 90%, N=8,
  // one thread's memcmp took 30% of the call, against 40% for the product).
  int compare(const CscBytes& live, int threads) const {
    const void* snap[3];
    size_t n[3];
    for (int t = 0; t < 3; ++t) {
      if (snapshot[t]->size() != live.size[t]) return 0;
      snap[t] = snapshot[t]->data();
      n[t] = live.size[t];
    }
    bool equal[3];
    skc::bytes_equal_each(snap, live.ptr, n, 3, threads, equal);
    if (!equal[1] || !equal[2]) return 0;
    return equal[0] ? 2 : 1;
  }
};

std::shared_ptr<const std::vector<char>> copy_bytes(const CscBytes& live, int t) {
  const char* p = static_cast<const char*>(live.ptr[t]);
  return std::make_shared<const std::vector<char>>(p, p + live.size[t]);
}

class CscCache {
 public:
  // The facts (repack) for the weight whose tensors hold `live` now, built when missing or
  // when the cached snapshot differs from the live bytes. When only the values differ (a
  // training step), the new repack shares the old one's pattern (csr_revalue: a gather
  // instead of the row sort, ~15x cheaper at 4096x4096 90%).
  std::shared_ptr<const CscFacts> get(const skc::Csc& a, const at::Tensor& values,
                                      const at::Tensor& indices, const at::Tensor& offsets,
                                      int64_t M, int64_t K) {
    const CscBytes live(values, indices, offsets);
    std::shared_ptr<const CscFacts> found;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (++lookups_ % 1024 == 0) sweep();
      auto it = map_.find(values.unsafeGetTensorImpl());
      if (it != map_.end() && it->second.same_weight(values, indices, offsets, M, K))
        found = it->second.facts;
    }
    // The comparison runs outside the lock (facts are immutable once built).
    const int same = found ? found->compare(live, at::get_num_threads()) : 0;
    if (same == 2) return found;
    auto facts = std::make_shared<CscFacts>();
    facts->snapshot[0] = copy_bytes(live, 0);
    const bool revalue = same == 1 && found->csr != nullptr;
    for (int t = 1; t < 3; ++t)
      facts->snapshot[t] = revalue ? found->snapshot[t] : copy_bytes(live, t);
    // Built from the snapshot, so the repack is exactly what the comparison vouches for.
    skc::Csc snap = a;
    snap.values = facts->snapshot[0]->data();
    snap.rows = facts->snapshot[1]->data();
    snap.colptr = facts->snapshot[2]->data();
    auto r = std::make_unique<skc::CsrRepack>();
    facts->status = revalue ? skc::csr_revalue(*found->csr, snap, at::get_num_threads(), r.get())
                            : skc::kBadArgument;
    if (facts->status != skc::kOk) {
      r = std::make_unique<skc::CsrRepack>();
      facts->status = skc::csc_to_csr(snap, M, K, r.get());
    }
    if (facts->status == skc::kOk) facts->csr = std::move(r);
    std::lock_guard<std::mutex> lock(mu_);
    skc::fuzz_point();  // tests: a fork while this lock is held (after_fork_child)
    sweep();
    map_.erase(values.unsafeGetTensorImpl());
    map_.emplace(values.unsafeGetTensorImpl(), Entry{WeakImpl(values.getIntrusivePtr()),
                                                     indices.unsafeGetTensorImpl(),
                                                     offsets.unsafeGetTensorImpl(),
                                                     WeakImpl(indices.getIntrusivePtr()),
                                                     WeakImpl(offsets.getIntrusivePtr()), M, K,
                                                     values.scalar_type(), indices.scalar_type(),
                                                     offsets.scalar_type(), facts});
    return facts;
  }

  // The cached facts of this weight, not yet compared with its live bytes (null when none).
  std::shared_ptr<const CscFacts> find(const at::Tensor& values, const at::Tensor& indices,
                                       const at::Tensor& offsets, int64_t M, int64_t K) {
    std::lock_guard<std::mutex> lock(mu_);
    if (++lookups_ % 1024 == 0) sweep();
    auto it = map_.find(values.unsafeGetTensorImpl());
    if (it == map_.end() || !it->second.same_weight(values, indices, offsets, M, K)) return nullptr;
    return it->second.facts;
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    map_.clear();
  }

  // (live entries, bytes held by repacks and snapshots)
  std::pair<int64_t, int64_t> info() {
    std::lock_guard<std::mutex> lock(mu_);
    sweep();
    int64_t bytes = 0;
    for (const auto& kv : map_) {
      const CscFacts& f = *kv.second.facts;
      if (f.csr) bytes += f.csr->nbytes();
      for (int t = 0; t < 3; ++t) bytes += static_cast<int64_t>(f.snapshot[t]->size());
    }
    return {static_cast<int64_t>(map_.size()), bytes};
  }

 private:
  // Identity of a weight (its three tensors, held weakly: an entry dies with its weight,
  // freed at the next insertion or sweep). Identity only picks the entry; the bytes decide,
  // read as the element types the repack was built for (`.data = values.view(torch.bfloat16)`
  // keeps the bytes and the TensorImpl but not their meaning).
  struct Entry {
    WeakImpl values;
    const c10::TensorImpl* indices_impl;
    const c10::TensorImpl* offsets_impl;
    WeakImpl indices, offsets;
    int64_t M, K;
    at::ScalarType values_t, indices_t, offsets_t;
    std::shared_ptr<const CscFacts> facts;
    bool same_weight(const at::Tensor& v, const at::Tensor& i, const at::Tensor& o, int64_t M_,
                     int64_t K_) const {
      // A live weak reference keeps the TensorImpl's memory, so the addresses are unique.
      return M == M_ && K == K_ && !expired() && values_t == v.scalar_type() &&
             indices_t == i.scalar_type() && offsets_t == o.scalar_type() &&
             values._unsafe_get_target() == v.unsafeGetTensorImpl() &&
             indices_impl == i.unsafeGetTensorImpl() && offsets_impl == o.unsafeGetTensorImpl();
    }
    bool expired() const { return values.expired() || indices.expired() || offsets.expired(); }
  };
  void sweep() {
    for (auto it = map_.begin(); it != map_.end();)
      it = it->second.expired() ? map_.erase(it) : std::next(it);
  }
  std::mutex mu_;
  std::unordered_map<const c10::TensorImpl*, Entry> map_;
  uint64_t lookups_ = 0;
};

// Never destroyed: outlives every caller. A forked child gets a fresh, empty cache (it is
// only a memo): fork() copies the mutex as it is, and a fork while another thread of the
// parent held it (a DataLoader forking its workers while a thread runs CSC inference) left
// the child's first CSC call waiting for ever on a lock no thread of the child would release.
std::atomic<CscCache*> g_csc_cache{new CscCache()};

CscCache& csc_cache() { return *g_csc_cache.load(std::memory_order_acquire); }

// ----------------------------------------------------------------------------- threads
//
// SPARSEKERN_CPU_POOL picks the threads the kernels run on (read at load and on
// reload_env(), never per call):
// * auto (default): torch's intra-op pool, with a stall guard. A model mixes torch ops and
//   sparsekern layers, and torch's OpenMP threads spin for a while after every torch op: a
//   second team (the kernels' own pool) then competes with them for the cores (measured on
//   pruned all-MiniLM-L6-v2, 2 threads: 1.1-1.4x slower end to end at 32x64). But an
//   OpenMP region ends in a barrier that waits for every team thread, and on a busy machine
//   a descheduled one holds the call for whole scheduler slices (0.2 ms calls took 4-12 ms).
//   So when a call shows a team thread that was not running (the caller waited for the
//   team well beyond an item's time, or did most items itself, or a thread's own CPU clock
//   ran slower than the wall clock over its items), the kernels' own pool
//   (which never waits for a thread that is not running) serves every call for a back-off
//   period, after which torch's pool is tried again. The period starts short and doubles
//   while every retry of torch's pool stalls again (next_backoff): one late wake-up (the
//   team's first call, a page fault) on a quiet machine must not leave the calls on the
//   own pool for long, where torch's threads, spinning after each torch op, slow its helper
//   (measured: 2:4 4096² GEMV 0.70 ms on torch's pool, 0.96-1.36 ms on the own pool when
//   interleaved with nn.Linear calls).
// * torch: torch's pool always (no guard); own: the kernels' own pool always.
constexpr int64_t kStallNanos = 250000;           // a wait this long (beyond items): a stall
constexpr int64_t kMinBackoffNanos = 50000000;    // the first back-off: 50 ms
constexpr int64_t kMaxBackoffNanos = 2000000000;  // doubling up to 2 s under sustained load

enum class PoolChoice : int { kAuto = 0, kTorch = 1, kOwn = 2, kUnknown = 3 };
std::atomic<int> g_pool_choice{static_cast<int>(PoolChoice::kAuto)};
std::atomic<int64_t> g_torch_pool_off_until{0};  // steady-clock ns; auto: own pool until then
std::atomic<int64_t> g_backoff{0};  // the last back-off's length (ns); 0 after a clean call
std::mutex g_pool_env_mu;
std::string g_pool_env_text;  // SPARSEKERN_CPU_POOL as last read (for the error message)

// In a forked child: the locks of this file start unlocked and the CSC cache empty, whatever
// another thread of the parent held at the fork (the old cache is leaked: its map may be
// half-written). The pool (parallel.cpp) and the ISA state (isa.cpp) do the same for theirs.
void after_fork_child() {
  g_csc_cache.store(new CscCache(), std::memory_order_release);
  new (&g_pool_env_mu) std::mutex();
}
const bool g_fork_handler = (pthread_atfork(nullptr, nullptr, &after_fork_child), true);

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Whether a call on torch's pool shows a teammate that was late or slow (times in ns on one
// clock, from `start`, before the region; the caller, team thread 0, entered the region at
// `entered`, ran caller_items of the items and finished its last at caller_done): it entered
// more than kStallNanos late, or waited for the team more than kStallNanos + 1.5 of its mean
// item times, or ran more than its share plus half of another's (75% of the items with 2
// threads) over more than kStallNanos. The late entry: libgomp starts a region only once
// every team thread has docked after the last one, so a thread descheduled there holds the
// caller before its first item (measured: a nice-19 busy process on one of 2 cores, 2:4
// 512x512 GEMV, every call a flat 8 ms, none of it after the caller's items; the own pool:
// 0.03 ms).
bool team_stalled(int64_t start, int64_t entered, int64_t caller_done, int64_t end,
                  int64_t caller_items, int64_t items, int64_t threads) {
  const bool late_start = entered - start > kStallNanos;
  const int64_t mean_item = (caller_done - entered) / (caller_items > 0 ? caller_items : 1);
  const bool late = end - caller_done > kStallNanos + 3 * mean_item / 2;
  // "alone" is judged only once the caller has run its items longer than kStallNanos. On a
  // VM a teammate woken from sleep can join tens of us late, so in a short call the caller
  // runs most items on a quiet machine; that costs at most the call's own length, while the
  // back-off it started put every later call on the own pool, whose helper then competes
  // with torch's spinning threads (pruned MiniLM at 1x16 tokens, compiled, 2 threads: 1.3-1.4x
  // slower; bench/results/pool-alone-2026-12-05).
  const bool alone = threads >= 2 && items >= 2 * threads &&
                     caller_done - entered > kStallNanos &&
                     2 * caller_items * threads > items * (threads + 1);
  return late_start || late || alone;
}

// Whether a team thread that spent `wall` ns on its items ran on a CPU for less than 3/4 of
// that (`cpu` ns of its own CPU time): it shared its CPU with another runnable thread, a busy
// process or its own teammate. team_stalled cannot see that case: with both team threads
// time-sliced on one CPU every item ran at half speed, split evenly, with no late thread
// (measured: BSR 90% 4096² N=64 2.0-2.6x its quiet time on torch's pool, 1.0-1.1x on the own
// pool, whose helper leaves the caller's CPU). Stretches shorter than kStallNanos are not
// judged (a thread's clock has scheduler-tick noise there; a whole lost slice is longer).
bool thread_descheduled(int64_t wall, int64_t cpu) {
  return cpu >= 0 && wall > kStallNanos && 4 * cpu < 3 * wall;
}

// The calling thread's own CPU time (ns), -1 where the clock is missing.
int64_t thread_cpu_ns() {
#if defined(CLOCK_THREAD_CPUTIME_ID)
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
    return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
#endif
  return -1;
}

// The back-off after a call on torch's pool, given the previous one (ns; 0: the last call
// was clean): 0 for a clean call, else twice the previous, within [kMinBackoffNanos,
// kMaxBackoffNanos].
int64_t next_backoff(int64_t previous, bool stalled) {
  if (!stalled) return 0;
  if (previous < kMinBackoffNanos / 2) return kMinBackoffNanos;
  return previous >= kMaxBackoffNanos / 2 ? kMaxBackoffNanos : 2 * previous;
}

// cpu::ItemRunner on torch's intra-op pool: `threads` tasks, each claiming the next item until
// none is left (a dynamic split, as in the own pool). Under auto it declines while backing
// off, and starts a back-off when team_stalled or thread_descheduled (any team thread) says so.
int run_items_on_torch_pool(int64_t items, int threads, skc::ItemFn fn, void* ctx) {
  const bool guard = g_pool_choice.load(std::memory_order_relaxed) ==
                     static_cast<int>(PoolChoice::kAuto);
  const int64_t start = steady_ns();
  if (guard && start < g_torch_pool_off_until.load(std::memory_order_relaxed))
    return skc::kRunnerDeclined;
  std::atomic<int64_t> next{0};
  std::atomic<int> status{skc::kOk};
  int64_t entered = 0, caller_done = 0, caller_items = 0;
  std::atomic<bool> descheduled{false};
  at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
    const int64_t wall0 = guard ? steady_ns() : 0;
    const int64_t cpu0 = guard ? thread_cpu_ns() : -1;
    if (at::get_thread_num() == 0) entered = wall0 != 0 ? wall0 : steady_ns();
    int64_t mine = 0;
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t i = next.fetch_add(1); i < items; i = next.fetch_add(1)) {
        const int s = fn(ctx, i);
        ++mine;
        if (s != skc::kOk) {
          int expected = skc::kOk;
          status.compare_exchange_strong(expected, s);
        }
      }
    }
    const int64_t wall1 = steady_ns();
    if (guard && cpu0 >= 0) {
      const int64_t cpu1 = thread_cpu_ns();
      if (thread_descheduled(wall1 - wall0, cpu1 >= 0 ? cpu1 - cpu0 : -1))
        descheduled.store(true, std::memory_order_relaxed);
    }
    if (at::get_thread_num() == 0) {
      caller_done = wall1;
      caller_items = mine;
    }
  });
  if (guard && caller_done > 0) {
    const int64_t end = steady_ns();
    const bool stalled =
        team_stalled(start, entered, caller_done, end, caller_items, items, threads) ||
        descheduled.load(std::memory_order_relaxed);
    const int64_t backoff = next_backoff(g_backoff.load(std::memory_order_relaxed), stalled);
    g_backoff.store(backoff, std::memory_order_relaxed);
    if (stalled) g_torch_pool_off_until.store(end + backoff, std::memory_order_relaxed);
  }
  return status.load();
}

void pool_reload() {
  const char* v = std::getenv("SPARSEKERN_CPU_POOL");
  const std::string text = v != nullptr ? v : "";
  PoolChoice c = PoolChoice::kUnknown;
  if (text.empty() || text == "auto") c = PoolChoice::kAuto;
  if (text == "torch") c = PoolChoice::kTorch;
  if (text == "own") c = PoolChoice::kOwn;
  {
    std::lock_guard<std::mutex> lock(g_pool_env_mu);
    g_pool_env_text = text;
  }
  const char* fuzz = std::getenv("SPARSEKERN_POOL_FUZZ");  // tests only (kernels.h)
  skc::set_pool_fuzz(fuzz != nullptr && std::string(fuzz) == "1");
  g_pool_choice.store(static_cast<int>(c));
  g_torch_pool_off_until.store(0);
  g_backoff.store(0);
  skc::set_item_runner(c == PoolChoice::kAuto || c == PoolChoice::kTorch
                           ? &run_items_on_torch_pool : nullptr);
}

// Installs the runner SPARSEKERN_CPU_POOL asks for when the library loads.
const bool g_pool_loaded = (pool_reload(), true);

// SPARSEKERN_CPU_POOL as last read: an error naming the choices when it is not one.
void check_pool_env() {
  if (g_pool_choice.load(std::memory_order_relaxed) != static_cast<int>(PoolChoice::kUnknown))
    return;
  std::string v;
  {
    std::lock_guard<std::mutex> lock(g_pool_env_mu);
    v = g_pool_env_text;
  }
  TORCH_CHECK_VALUE(false, "SPARSEKERN_CPU_POOL='", v, "' is not a thread pool choice; expected "
                    "one of 'auto' (the default: torch's intra-op threads, sparsekern's own "
                    "pool while the machine is too busy for them), 'torch', 'own'");
}

// The pool choice in force: "auto", "torch" or "own" (SPARSEKERN_CPU_POOL, as last read).
std::string cpu_pool() {
  check_pool_env();
  switch (static_cast<PoolChoice>(g_pool_choice.load())) {
    case PoolChoice::kTorch: return "torch";
    case PoolChoice::kOwn: return "own";
    default: return "auto";
  }
}

// ----------------------------------------------------------------------------- kernels

// The kernels' views of a CSC / SELL weight's format tensors (validated by the caller).
skc::Csc csc_of(const at::Tensor& values, const at::Tensor& indices, const at::Tensor& offsets) {
  skc::Csc a;
  a.values = values.data_ptr();
  a.wt = weight_type(values.scalar_type());
  a.rows = indices.data_ptr();
  a.row_type = indices.scalar_type() == at::kShort ? skc::IndexType::kI16 : skc::IndexType::kI32;
  a.colptr = offsets.data_ptr();
  a.ptr_type = offsets.scalar_type() == at::kLong ? skc::IndexType::kI64 : skc::IndexType::kI32;
  a.nnz = values.numel();
  return a;
}
skc::Sell sell_of(const at::Tensor& values, const at::Tensor& indices, const at::Tensor& offsets) {
  skc::Sell a;
  a.values = values.data_ptr();
  a.wt = weight_type(values.scalar_type());
  a.indices = indices.data_ptr<uint8_t>();
  a.offsets = offsets.data_ptr();
  a.ptr_type = offsets.scalar_type() == at::kLong ? skc::IndexType::kI64 : skc::IndexType::kI32;
  a.steps = indices.size(0);
  a.nnz = values.size(0);
  return a;
}

// A format's offsets and indices checked where a non-empty output is an empty sum (K == 0;
// M == 0 for the transposed product), so no kernel reads them: the reference backend rejects
// a malformed format there, and so does this path. (2:4 and 1:4 have no offsets, and their
// metadata holds no group then.)
void check_unrun_format(const at::Tensor& values, const at::Tensor& indices,
                        const at::Tensor& offsets, int64_t M, int64_t K, Layout layout,
                        c10::string_view layout_name, int64_t N, const char* op) {
  int status = skc::kOk;
  switch (layout) {
    case Layout::kCsc: {
      const skc::Csc a = csc_of(values, indices, offsets);
      bool finite = true;
      status = skc::csc_scan(a, M, K, &finite);
      break;
    }
    case Layout::kBsr:
      status = skc::bsr_structure(indices.data_ptr<int32_t>(), offsets.data_ptr<int32_t>(),
                                  values.size(0), M, K, values.size(1), values.size(2));
      break;
    case Layout::kSell: {
      status = skc::sell_offsets_status(sell_of(values, indices, offsets), M, K);
      break;
    }
    default:
      break;
  }
  check_format_status(status, values, indices, offsets, M, K, layout_name, N, op);
}

// Runs the CPU kernel for an already validated call, writing into `out` ([M, N], any strides).
void run_cpu_kernel(const at::Tensor& values, const at::Tensor& indices,
                    const at::Tensor& offsets, int64_t M, int64_t K, Layout layout,
                    c10::string_view layout_name, const at::Tensor& B,
                    const c10::optional<at::Tensor>& bias, at::Tensor& out) {
  check_isa_env();
  check_pool_env();
  if (out.numel() == 0) return;  // (an empty output is never checked, on every path)
  if (K == 0)  // an empty sum: no kernel reads the format, so check it here
    check_unrun_format(values, indices, offsets, M, K, layout, layout_name, B.size(1),
                       "sparsekern.spmm");
  if (B.scalar_type() != at::kFloat) {  // half activations (see half_activations)
    at::Tensor out32 = at::empty_like(out, out.options().dtype(at::kFloat));
    c10::optional<at::Tensor> bias32;
    if (bias.has_value() && bias->defined()) bias32 = as_float(*bias);
    run_cpu_kernel(values, indices, offsets, M, K, layout, layout_name, as_float(B), bias32,
                   out32);
    out.copy_(out32);
    return;
  }
  if (K == 0) {  // an empty sum: the output is the bias (B may have no storage at all)
    if (bias.has_value() && bias->defined())
      out.copy_(bias->unsqueeze(1).expand_as(out));
    else
      out.zero_();
    return;
  }
  skc::Dense d;
  d.M = M;
  d.K = K;
  d.N = B.size(1);
  d.B = B.data_ptr<float>();
  d.ldb_k = B.stride(0);
  d.ldb_n = B.stride(1);
  if (bias.has_value() && bias->defined()) {
    d.bias = bias->data_ptr<float>();
    d.bias_stride = bias->stride(0);
  }
  d.Y = out.data_ptr<float>();
  d.ldy_m = out.stride(0);
  d.ldy_n = out.stride(1);
  d.num_threads = at::get_num_threads();
  const skc::WeightType wt = weight_type(values.scalar_type());
  int status = skc::kBadArgument;
  switch (layout) {
    case Layout::kSemi24:
      status = skc::semi24_spmm(values.data_ptr(), wt, indices.data_ptr<uint8_t>(), d);
      break;
    case Layout::kSell: {  // only from the fast path (forward_only_ok)
      status = skc::sell_spmm(sell_of(values, indices, offsets), d);
      break;
    }
    case Layout::kNm14:  // only from the fast path (forward_only_ok)
      status = skc::nm14_spmm(values.data_ptr(), wt, indices.data_ptr<uint8_t>(), d);
      break;
    case Layout::kBsr:
      status = skc::bsr_spmm(values.data_ptr(), wt, values.size(0), values.size(1),
                             values.size(2), indices.data_ptr<int32_t>(),
                             offsets.data_ptr<int32_t>(), d);
      break;
    case Layout::kCsc: {
      const skc::Csc a = csc_of(values, indices, offsets);
      if (d.N == 1) {  // the EIE column walk on the live tensors (nothing cached)
        status = skc::csc_spmm(a, /*skip_zero_columns=*/true, nullptr, d);
        break;
      }
      // The cached repack, compared with the live bytes beside the product (csr_spmm_checked);
      // when they differ the product is discarded and made again from a fresh repack.
      const auto found = csc_cache().find(values, indices, offsets, M, K);
      if (found && found->csr) {
        struct Check {
          const CscFacts* facts;
          CscBytes live;
        } check{found.get(), CscBytes(values, indices, offsets)};
        bool passed = false;
        status = skc::csr_spmm_checked(
            *found->csr, d,
            [](void* ctx, int threads) {
              const auto* c = static_cast<const Check*>(ctx);
              return c->facts->compare(c->live, threads) == 2;
            },
            &check, &passed);
        if (passed) break;
      }
      auto facts = csc_cache().get(a, values, indices, offsets, M, K);
      check_format_status(facts->status, values, indices, offsets, M, K, layout_name, d.N);
      status = skc::csr_spmm(*facts->csr, d);
      break;
    }
    case Layout::kUnknown:
      TORCH_CHECK(false, "sparsekern: no CPU kernel for layout '", layout_name, "'");
  }
  check_format_status(status, values, indices, offsets, M, K, layout_name, d.N);
}

at::Tensor call_python_path(const at::Tensor& values, const at::Tensor& indices,
                            const at::Tensor& offsets, c10::SymInt M, c10::SymInt K,
                            c10::string_view layout, const at::Tensor& B,
                            const c10::optional<at::Tensor>& bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sparsekern::_spmm_dispatch", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         c10::SymInt, c10::SymInt, c10::string_view,
                                         const at::Tensor&, const c10::optional<at::Tensor>&)>();
  return op.call(values, indices, offsets, std::move(M), std::move(K), layout, B, bias);
}

// CPU kernel of the public op sparsekern::spmm.
at::Tensor spmm_cpu_entry(const at::Tensor& values, const at::Tensor& indices,
                          const at::Tensor& offsets, c10::SymInt M_, c10::SymInt K_,
                          c10::string_view layout_sv, const at::Tensor& B,
                          const c10::optional<at::Tensor>& bias) {
  const int64_t M = M_.expect_int(), K = K_.expect_int();
  const Layout layout = parse_layout(layout_sv);
  if (!fast_path_ok(values, indices, offsets, M, K, layout, B, bias))
    return call_python_path(values, indices, offsets, M_, K_, layout_sv, B, bias);
  at::Tensor out = empty_output(M, B);
  run_cpu_kernel(values, indices, offsets, M, K, layout, layout_sv, B, bias, out);
  return out;
}

// sparsekern::_spmm_cpu: the Python path has validated the shapes and allocated `out`.
void spmm_cpu_into(const at::Tensor& values, const at::Tensor& indices, const at::Tensor& offsets,
                   int64_t M, int64_t K, c10::string_view layout_sv, const at::Tensor& B,
                   const c10::optional<at::Tensor>& bias, at::Tensor& out) {
  const Layout layout = parse_layout(layout_sv);
  TORCH_CHECK(kernel_exists(layout, values.scalar_type(), B.scalar_type()),
              "sparsekern._spmm_cpu: no CPU kernel for layout '", layout_sv, "' with values ",
              values.scalar_type(), " and B ", B.scalar_type());
  TORCH_CHECK(values.is_contiguous() && indices.is_contiguous() && offsets.is_contiguous(),
              "sparsekern._spmm_cpu: format tensors must be contiguous");
  TORCH_CHECK(values.device().is_cpu() && indices.device().is_cpu() && offsets.device().is_cpu() &&
                  B.device().is_cpu() && out.device().is_cpu(),
              "sparsekern._spmm_cpu: every tensor must be on the CPU");
  TORCH_CHECK(B.dim() == 2 && B.size(0) == K, "sparsekern._spmm_cpu: B has shape ", B.sizes(),
              ", expected [", K, ", N]");
  TORCH_CHECK(out.dim() == 2 && out.size(0) == M && out.size(1) == B.size(1) &&
                  out.scalar_type() == B.scalar_type(),
              "sparsekern._spmm_cpu: out has shape ", out.sizes(), " and dtype ",
              out.scalar_type(), ", expected [", M, ", ", B.size(1), "] of ", B.scalar_type());
  if (bias.has_value() && bias->defined())
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == M && bias->scalar_type() == B.scalar_type(),
                "sparsekern._spmm_cpu: bias has shape ", bias->sizes(), ", expected [", M, "]");
  TORCH_CHECK_VALUE(M >= 0 && K >= 0, "sparsekern._spmm_cpu: M=", M, ", K=", K,
                    "; expected sizes >= 0");
  check_sizes("sparsekern.spmm", values, M, K, B.size(1));
  TORCH_CHECK(format_meta_ok(values, indices, offsets, M, K, layout),
              "sparsekern._spmm_cpu: format tensors do not match layout '", layout_sv,
              "' for M=", M, ", K=", K);
  run_cpu_kernel(values, indices, offsets, M, K, layout, layout_sv, B, bias, out);
}

// ----------------------------------------------------------------------------- backward

// A dense float32 operand of the backward kernels as data pointer and strides (the kernels
// read it through them: no row-major copy here; see cpu/backward.h).
skc::Strided dense_view(const at::Tensor& t) {
  skc::Strided d;
  d.data = t.data_ptr<float>();
  d.rs = t.stride(0);
  d.cs = t.stride(1);
  return d;
}

skc::Format backward_format(const at::Tensor& values, const at::Tensor& indices,
                            const at::Tensor& offsets, int64_t M, int64_t K, Layout layout) {
  skc::Format a;
  a.layout = layout == Layout::kSemi24 ? skc::SparseLayout::kSemi24
             : layout == Layout::kBsr  ? skc::SparseLayout::kBsr
                                       : skc::SparseLayout::kCsc;
  a.M = M;
  a.K = K;
  a.values = values.data_ptr();
  a.wt = weight_type(values.scalar_type());
  a.numel = values.numel();
  a.indices = indices.data_ptr();
  a.idx_type = indices.scalar_type() == at::kShort ? skc::IndexType::kI16 : skc::IndexType::kI32;
  a.offsets = offsets.data_ptr();
  a.off_type = offsets.scalar_type() == at::kLong ? skc::IndexType::kI64 : skc::IndexType::kI32;
  if (layout == Layout::kBsr) {
    a.nnzb = values.size(0);
    a.bm = values.size(1);
    a.bk = values.size(2);
  }
  return a;
}

// The checks of _spmm_cpu for the backward ops (the Python ops have checked the arguments;
// these guard the pointers handed to the kernels).
Layout check_backward_args(c10::string_view what, const at::Tensor& values,
                           const at::Tensor& indices, const at::Tensor& offsets, int64_t M,
                           int64_t K, c10::string_view layout_sv, const at::Tensor& G) {
  const Layout layout = parse_layout(layout_sv);
  TORCH_CHECK(kernel_exists(layout, values.scalar_type(), G.scalar_type()), what,
              ": no CPU kernel for layout '", layout_sv, "' with values ", values.scalar_type(),
              " and G ", G.scalar_type());
  TORCH_CHECK(values.is_contiguous() && indices.is_contiguous() && offsets.is_contiguous(), what,
              ": format tensors must be contiguous");
  TORCH_CHECK(values.device().is_cpu() && indices.device().is_cpu() && offsets.device().is_cpu() &&
                  G.device().is_cpu(), what, ": every tensor must be on the CPU");
  TORCH_CHECK(G.dim() == 2 && G.size(0) == M, what, ": G has shape ", G.sizes(), ", expected [",
              M, ", N]");
  TORCH_CHECK_VALUE(M >= 0 && K >= 0, what, ": M=", M, ", K=", K, "; expected sizes >= 0");
  check_sizes("sparsekern.spmm", values, M, K, G.size(1));
  TORCH_CHECK(format_meta_ok(values, indices, offsets, M, K, layout), what,
              ": format tensors do not match layout '", layout_sv, "' for M=", M, ", K=", K);
  return layout;
}

// The 2:4 backward products run as dense BLAS GEMMs of the decompressed weight (and the sampled
// dot as one GEMM read at the stored entries), at every N, except A.T @ G where
// cpu::semi24_transposed_native (AVX-512, from 256 columns: half the GEMM's multiply-adds) takes
// it, A.T @ G of a non-finite G (below), and the sampled dot where
// cpu::semi24_sampled_dot_native (AVX-512, 512 to 8192 columns, half the multiply-adds) does. At
// 50% density a GEMM beats the entry-wise kernels at every N measured: at 4096x4096, N = 512:
// A.T @ G 186 against 602 ms, the sampled dot 241 against 713 ms; at 1536x384, N = 2048: 23
// against 32 ms and 28 against 45 ms; and below 32 columns, where the entry-wise kernels served
// until 2026-12-07, 3-25x (4096x4096, N = 1: 10 against 255 ms and 23 against 322; 768x768, N =
// 16: 0.49 against 2.9 ms and 0.33 against 2.4;
// bench/results/semi24-transposed-2026-12-07/small_n.txt). The decompression and the gather are
// kernels (one pass, threaded).
constexpr int64_t kSemi24SmallN = 32;

// True when every element of the float32 matrix G is finite: one threaded pass, no
// temporaries (at::isfinite(G).all() made four passes and three [M, N] tensors: 5.7 ms of a
// 25 ms 2:4 training step at 1536x384, N = 2048).
bool all_finite(const at::Tensor& G) {
  if (G.scalar_type() != at::kFloat || G.dim() != 2 || (G.stride(1) != 1 && G.stride(0) != 1))
    return at::isfinite(G).all().item<bool>();
  const bool by_row = G.stride(1) == 1;
  const int64_t outer = by_row ? G.size(0) : G.size(1), inner = by_row ? G.size(1) : G.size(0);
  const int64_t ld = by_row ? G.stride(0) : G.stride(1);
  const uint32_t* p = reinterpret_cast<const uint32_t*>(G.data_ptr<float>());
  std::atomic<bool> finite{true};
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(inner, 1));
  at::parallel_for(0, outer, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1 && finite.load(std::memory_order_relaxed); ++r) {
      const uint32_t* row = p + r * ld;
      uint32_t top = 0;  // the largest |x| bit pattern: Inf and NaN are >= 0x7f800000
      for (int64_t j = 0; j < inner; ++j) top = std::max(top, row[j] & 0x7fffffffu);
      if (top >= 0x7f800000u) finite.store(false, std::memory_order_relaxed);
    }
  });
  return finite.load();
}

// A float32 [M, K] scratch matrix of this thread, kept between calls (one per `slot`): a
// fresh 4096x4096 tensor costs ~12 ms of page faults, a quarter of the GEMM it feeds, and the
// 2:4 backward needs two per step. Only for temporaries that never leave the call.
enum WorkspaceSlot { kDenseWeight = 0, kSampledProduct = 1 };
at::Tensor workspace(WorkspaceSlot slot, int64_t M, int64_t K) {
  thread_local at::Tensor buffers[2];
  at::Tensor& b = buffers[slot];
  if (!b.defined() || b.numel() < M * K) {
    b = at::Tensor();  // free the old one first
    b = at::empty({M * K}, at::TensorOptions().dtype(at::kFloat));
  }
  return b.narrow(0, 0, M * K).view({M, K});
}

// A 2:4 weight as a dense float32 [M, K] (every nibble checked), in this thread's workspace:
// valid until the next call on this thread.
at::Tensor semi24_dense(const at::Tensor& values, const at::Tensor& indices,
                        const at::Tensor& offsets, int64_t M, int64_t K,
                        c10::string_view layout_sv) {
  at::Tensor W = workspace(kDenseWeight, M, K);
  const int status = skc::semi24_to_dense(values.data_ptr(), weight_type(values.scalar_type()),
                                          indices.data_ptr<uint8_t>(), M, K,
                                          W.data_ptr<float>(), at::get_num_threads());
  check_format_status(status, values, indices, offsets, M, K, layout_sv, 0);
  return W;
}

// sparsekern::_spmm_transposed_cpu: A.T @ G, [K, N] float32 row-major.
at::Tensor spmm_transposed_cpu(const at::Tensor& values, const at::Tensor& indices,
                               const at::Tensor& offsets, int64_t M, int64_t K,
                               c10::string_view layout_sv, const at::Tensor& G) {
  const Layout layout = check_backward_args("sparsekern._spmm_transposed_cpu", values, indices,
                                            offsets, M, K, layout_sv, G);
  if (G.scalar_type() != at::kFloat)  // half activations: in G's dtype, as the reference
    return spmm_transposed_cpu(values, indices, offsets, M, K, layout_sv, as_float(G))
        .to(G.scalar_type());
  const int64_t N = G.size(1);
  // (Only for a finite G: in the dense GEMM the unstored zeros would meet an Inf of G and
  // give 0 * Inf = NaN where the kernels of skc::spmm_transposed, like the reference, add
  // nothing.)
  if (layout == Layout::kSemi24 && M > 0 && K > 0 &&
      !skc::semi24_transposed_native(N) && all_finite(G)) {
    const at::Tensor W = semi24_dense(values, indices, offsets, M, K, layout_sv);
    // Row-major [K, N], as every path of the op returns (its fake kernel says so, and
    // torch.compile checks the strides: mm(G.t(), W).t(), x's layout, failed there). Below
    // kSemi24SmallN columns BLAS's W.t() @ G ran 2-17x slower than (G.t() @ W), transposed
    // back here (4096x4096, N = 2: 122 against 6.4 ms; N = 8: 70 against 7.3; 1536x384, N = 8:
    // 0.94 against 0.11 ms); from 64 columns on it is the faster one.
    if (N < kSemi24SmallN) return at::mm(G.t(), W).t().contiguous();
    return at::mm(W.t(), G);
  }
  at::Tensor out = at::empty({K, N}, G.options());
  if (out.numel() == 0) return out;
  if (M == 0) {  // an empty sum: no kernel reads the format, so check it here
    check_unrun_format(values, indices, offsets, M, K, layout, layout_sv, N,
                       "sparsekern.spmm_transposed");
    return out.zero_();
  }
  const int status = skc::spmm_transposed(backward_format(values, indices, offsets, M, K, layout),
                                          dense_view(G), N, out.data_ptr<float>(),
                                          at::get_num_threads());
  check_format_status(status, values, indices, offsets, M, K, layout_sv, N,
                      "sparsekern.spmm_transposed");
  return out;
}

// sparsekern::_sampled_dot_cpu: (G @ B.T) at the stored entries, in values' shape and dtype.
at::Tensor sampled_dot_cpu(const at::Tensor& values, const at::Tensor& indices,
                           const at::Tensor& offsets, int64_t M, int64_t K,
                           c10::string_view layout_sv, const at::Tensor& G, const at::Tensor& B) {
  const Layout layout = check_backward_args("sparsekern._sampled_dot_cpu", values, indices,
                                            offsets, M, K, layout_sv, G);
  TORCH_CHECK(B.dim() == 2 && B.size(0) == K && B.size(1) == G.size(1) &&
                  B.scalar_type() == G.scalar_type() && B.device().is_cpu(),
              "sparsekern._sampled_dot_cpu: B has shape ", B.sizes(), ", expected [", K, ", ",
              G.size(1), "] of ", G.scalar_type());
  if (G.scalar_type() != at::kFloat)  // half activations (in values' dtype, below)
    return sampled_dot_cpu(values, indices, offsets, M, K, layout_sv, as_float(G), as_float(B));
  const int64_t N = G.size(1);
  at::Tensor out = at::empty({values.numel()}, G.options());
  if (layout == Layout::kSemi24 && out.numel() > 0 && K > 0 && skc::semi24_sampled_dot_native(N)) {
    const int status = skc::semi24_sampled_dot(backward_format(values, indices, offsets, M, K,
                                                               layout),
                                               dense_view(G), dense_view(B), N,
                                               out.data_ptr<float>(), at::get_num_threads());
    check_format_status(status, values, indices, offsets, M, K, layout_sv, N,
                        "sparsekern.spmm_sampled_dot");
  } else if (layout == Layout::kSemi24 && out.numel() > 0 && K > 0) {
    at::Tensor S = workspace(kSampledProduct, M, K);  // [M, K] row-major
    at::mm_out(S, G, B.t());
    const int status = skc::semi24_gather(S.data_ptr<float>(), indices.data_ptr<uint8_t>(), M, K,
                                          out.data_ptr<float>(), at::get_num_threads());
    check_format_status(status, values, indices, offsets, M, K, layout_sv, N,
                        "sparsekern.spmm_sampled_dot");
  } else if (out.numel() > 0) {
    const int status = skc::sampled_dot(backward_format(values, indices, offsets, M, K, layout),
                                        dense_view(G), dense_view(B), N,
                                        out.data_ptr<float>(), at::get_num_threads());
    check_format_status(status, values, indices, offsets, M, K, layout_sv, N,
                        "sparsekern.spmm_sampled_dot");
  }
  return out.to(values.scalar_type()).view(values.sizes());
}

// ----------------------------------------------------------------------------- autograd

// Fake and functional tensors (torch.compile tracing, export) have no data to copy, and their
// sizes and strides may be symbolic: reading one as an int (size(), stride(), is_contiguous())
// adds a guard on it. AOT autograd traces the backward with symbolic batch sizes, so each
// such read specialized the batch size and a compiled training step recompiled for every new
// one. Checked before any size or stride is read.
bool traced(const at::Tensor& t) {
  const c10::DispatchKeySet keys({c10::DispatchKey::Python, c10::DispatchKey::Functionalize});
  return t.key_set().has_any(keys) || !t.has_storage();
}

// dY for both CPU backward kernels: itself unless they would each copy it row-major (see
// cpu::reads_strided), then one row-major copy (16 x 16 register transposes on AVX-512).
at::Tensor shared_row_major(const at::Tensor& grad, const std::string& layout) {
  if (!grad.device().is_cpu() || grad.scalar_type() != at::kFloat || grad.dim() != 2 ||
      traced(grad) || grad.is_contiguous())
    return grad;
  const Layout lay = parse_layout(layout);
  if (lay != Layout::kBsr && lay != Layout::kCsc && lay != Layout::kSemi24) return grad;
  const skc::SparseLayout sl = lay == Layout::kBsr   ? skc::SparseLayout::kBsr
                               : lay == Layout::kCsc ? skc::SparseLayout::kCsc
                                                     : skc::SparseLayout::kSemi24;
  if (skc::reads_strided(sl) || grad.numel() > skc::kMaxScratchBytes / 4) return grad;
  at::Tensor out = at::empty(grad.sizes(), grad.options());
  const int status = skc::copy_row_major(dense_view(grad), grad.size(0), grad.size(1),
                                         out.data_ptr<float>(), at::get_num_threads());
  return status == skc::kOk ? out : grad.contiguous();
}

// dB [K, N] (row-major, from spmm_transposed) laid out like a column-major B (x.T of a
// Linear, x contiguous): [N, K] row-major, returned as its transposed view, so x's gradient
// arrives contiguous and autograd (AccumulateGrad, the layer before) copies nothing. One
// threaded pass of 16 x 16 register transposes here costs about a third of torch's strided
// copy (3 MB: ~0.4 against ~1.4 ms). Left as it is under create_graph (the copy would cut
// the graph), for fake tensors and for anything but a CPU float32 matrix.
at::Tensor laid_out_like(const at::Tensor& dB, const at::Tensor& B) {
  if (at::GradMode::is_enabled() || !dB.device().is_cpu() || dB.scalar_type() != at::kFloat ||
      dB.dim() != 2 || B.dim() != 2 || traced(dB) || traced(B) || !dB.is_contiguous())
    return dB;
  const int64_t K = dB.size(0), N = dB.size(1);
  if (K < 16 || N < 16 || B.stride(0) != 1 || B.stride(1) != K) return dB;
  at::Tensor out = at::empty({N, K}, dB.options());
  const int status = skc::copy_row_major(dense_view(dB.t()), N, K, out.data_ptr<float>(),
                                         at::get_num_threads());
  return status == skc::kOk ? out.t() : dB;
}

using SpmmSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::SymInt,
                           c10::SymInt, c10::string_view, const at::Tensor&,
                           const c10::optional<at::Tensor>&);

const c10::TypedOperatorHandle<SpmmSig>& spmm_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sparsekern::spmm", "")
                       .typed<SpmmSig>();
  return op;
}

// The autograd formula of sparsekern::spmm, the only one that runs wherever _C is built:
// registered for the Autograd key, so CPU and CUDA tensors alike record this node.
//   Y = A @ B + bias:  dB = A.T @ dY (spmm_transposed),  dA = (dY @ B.T) at the stored
//   entries (spmm_sampled_dot),  dbias = dY.sum(1).
// The backward calls go through the dispatcher to the ops of sparsekern/ops.py, whose own
// autograd formulas make double backward work. A pure-Python install (no compiler, _C not
// built) registers the same formula in Python (ops.py, _python_backward).
// Per-call cost (64x64 CSC weight, x [8, 64], SparseLinear forward recording grad, median of
// 9 alternating runs on a loaded 2-core machine, load average 3.8-7.9): 27 us with this node,
// 86 us with the Python formula it replaced, 27 us before that formula (table in
// sparsekern/ops.py). Recording it adds ~2 us to a no_grad call.
class SpmmFunction : public torch::autograd::Function<SpmmFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& values,
                            const at::Tensor& indices, const at::Tensor& offsets, c10::SymInt M,
                            c10::SymInt K, c10::string_view layout, const at::Tensor& B,
                            const c10::optional<at::Tensor>& bias) {
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      out = spmm_op().call(values, indices, offsets, M, K, layout, B, bias);
    }
    ctx->save_for_backward({values, indices, offsets, B});
    ctx->saved_data["M"] = std::move(M);
    ctx->saved_data["K"] = std::move(K);
    ctx->saved_data["layout"] = std::string(layout);
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static auto sampled_dot =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("sparsekern::spmm_sampled_dot", "")
            .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::SymInt,
                              c10::SymInt, c10::string_view, const at::Tensor&, const at::Tensor&)>();
    static auto transposed =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("sparsekern::spmm_transposed", "")
            .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::SymInt,
                              c10::SymInt, c10::string_view, const at::Tensor&)>();
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &values = saved[0], &indices = saved[1], &offsets = saved[2], &B = saved[3];
    const c10::SymInt M = ctx->saved_data["M"].toSymInt(), K = ctx->saved_data["K"].toSymInt();
    const std::string layout = ctx->saved_data["layout"].toStringRef();
    // Tensor inputs (the edges needs_input_grad counts): values 0, indices 1, offsets 2, B 3,
    // bias 4 (an edge only when bias is given).
    const bool need_values = ctx->needs_input_grad(0), need_B = ctx->needs_input_grad(3);
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    // grad keeps its strides (often column-major: Y of x @ W.T is a transposed view): the
    // CPU backward kernels read it through them (cpu/backward.h), except where they would
    // copy it row-major each (cpu::reads_strided): then one copy here serves both.
    at::Tensor grad = grads[0];
    if (need_values && need_B) grad = shared_row_major(grad, layout);
    at::Tensor g_values, g_B, g_bias;
    if (need_values) g_values = sampled_dot.call(values, indices, offsets, M, K, layout, grad, B);
    if (need_B) g_B = laid_out_like(transposed.call(values, indices, offsets, M, K, layout, grad), B);
    if (has_bias && ctx->needs_input_grad(4)) g_bias = grad.sum(1);
    return {g_values, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), g_B,
            g_bias};
  }
};

// Autograd kernel of sparsekern::spmm (every device). With no input requiring grad it only
// steps below autograd (inference records nothing).
// Whether t carries a forward-mode tangent (torch.autograd.forward_ad, torch.func.jvp).
bool has_tangent(const at::Tensor& t) { return t.defined() && t._fw_grad(/*level=*/0).defined(); }

at::Tensor spmm_autograd(const at::Tensor& values, const at::Tensor& indices,
                         const at::Tensor& offsets, c10::SymInt M, c10::SymInt K,
                         c10::string_view layout, const at::Tensor& B,
                         const c10::optional<at::Tensor>& bias) {
  // The C++ formula is reverse mode only: a tangent would be dropped (a zero JVP, a wrong
  // answer). sparsekern.spmm / linear / SparseLinear have the forward-mode formula.
  TORCH_CHECK(!has_tangent(values) && !has_tangent(B) &&
                  !(bias.has_value() && has_tangent(*bias)),
              "torch.ops.sparsekern.spmm has no forward-mode AD formula (got an input with a "
              "forward-mode tangent: torch.func.jvp, jacfwd or forward_ad.make_dual); call "
              "sparsekern.spmm(A, B) or sparsekern.linear, which have one, instead of the raw op");
  const bool records = at::GradMode::is_enabled() &&
                       (values.requires_grad() || B.requires_grad() ||
                        (bias.has_value() && bias->defined() && bias->requires_grad()));
  if (!records) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return spmm_op().call(values, indices, offsets, std::move(M), std::move(K), layout, B, bias);
  }
  return SpmmFunction::apply(values, indices, offsets, std::move(M), std::move(K), layout, B,
                             bias);
}

// ----------------------------------------------------------------------------- helpers
// Plain torch ops (schemas in sparsekern/ops.py), not pybind11 functions, so that _C uses
// only Python's stable ABI. sparsekern._extension wraps them under their old names.

int64_t abi_version() { return kAbiVersion; }

bool kernel_exists_op(c10::string_view layout, at::ScalarType values_t, at::ScalarType b_t) {
  return kernel_exists(parse_layout(layout), values_t, b_t);
}

// A bad SPARSEKERN_CPU_ISA (or _SCATTER, _BROADCAST) gets the error every kernel call gets,
// not the ISA the kernels would fall back to: the answer must agree with what runs.
std::string cpu_isa() {
  check_isa_env();
  return skc::active_isa_name();
}
bool cpu_has_avx2() { return skc::cpu_has_avx2(); }
bool cpu_has_avx512() { return skc::cpu_has_avx512(); }

std::tuple<int64_t, int64_t> csc_cache_info() {
  const auto info = csc_cache().info();
  return {info.first, info.second};
}

void csc_cache_clear() { csc_cache().clear(); }

// Enter (+1) or leave (-1) the Python path for this thread's CPU calls; returns the depth.
int64_t python_path(int64_t delta) {
  t_python_path += static_cast<int>(delta);
  return t_python_path;
}

// Re-read the environment switches (sparsekern.backends.reload_env(); also done at import):
// SPARSEKERN_CPU_ISA here, SPARSEKERN_BACKEND by Python, which passes whether it forces a
// backend other than cpu.
void reload_env(bool backend_forces_python) {
  g_env_forces_python.store(backend_forces_python);
  skc::isa_reload();
  pool_reload();
}

// ---- sparsekern::attention (CPU): the fused kernel of csrc/cpu/attention.cpp ----

void check_attention_tensor(const at::Tensor& t, const char* name, const at::Tensor& query) {
  constexpr const char* what = "sparsekern.attention: ";
  TORCH_CHECK_VALUE(t.layout() == at::kStrided && !t.is_nested(), what, name,
                    " must be a strided (dense) tensor; got layout ", t.layout());
  TORCH_CHECK_VALUE(t.dim() == 4, what, name, " must be 4-D [batch, heads, sequence, head_dim]; "
                    "got shape ", t.sizes());
  TORCH_CHECK_VALUE(t.device().is_cpu(), what, name, " must be on the CPU for this kernel; got ",
                    t.device());
  TORCH_CHECK_VALUE(t.scalar_type() == query.scalar_type(), what, name, " must have query's "
                    "dtype ", query.scalar_type(), "; got ", t.scalar_type());
}

// attn_mask as an additive mask of `dtype` viewed as [B, H, Sq, Sk] (stride 0 where it
// broadcasts); bool: True takes part (0), False does not (-inf), as in
// scaled_dot_product_attention.
at::Tensor attention_mask(const at::Tensor& mask, at::IntArrayRef shape, at::ScalarType dtype) {
  constexpr const char* what = "sparsekern.attention: ";
  TORCH_CHECK_VALUE(mask.layout() == at::kStrided && !mask.is_nested() && mask.device().is_cpu(),
                    what, "attn_mask must be a strided CPU tensor; got layout ", mask.layout(),
                    " on ", mask.device());
  TORCH_CHECK_VALUE(mask.scalar_type() == at::kBool || at::isFloatingType(mask.scalar_type()),
                    what, "attn_mask must be bool or floating point; got ", mask.scalar_type());
  bool fits = mask.dim() <= 4;
  for (int64_t d = 1; fits && d <= mask.dim(); ++d) {
    const int64_t m = mask.size(-d), t = shape[4 - d];
    fits = m == t || m == 1;
  }
  TORCH_CHECK_VALUE(fits, what, "attn_mask of shape ", mask.sizes(), " does not broadcast to "
                    "[batch, heads, query length, key length] = ", shape);
  at::Tensor m = mask;
  if (m.scalar_type() == at::kBool)
    m = at::zeros(m.sizes(), m.options().dtype(dtype))
            .masked_fill_(m.logical_not(), -std::numeric_limits<double>::infinity());
  return converted(m, dtype).expand(shape);
}

template <typename T>
void attention_strides(const at::Tensor& t, const T* data, const T*& p, int64_t& b, int64_t& h,
                       int64_t& s, int64_t& d) {
  p = data;
  b = t.stride(0);
  h = t.stride(1);
  s = t.stride(2);
  d = t.stride(3);
}

template <typename T>
void run_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const c10::optional<at::Tensor>& mask, double scale, const at::Tensor& out) {
  skc::AttentionArgs<T> a;
  a.B = q.size(0);
  a.H = q.size(1);
  a.Hkv = k.size(1);
  a.Sq = q.size(2);
  a.Sk = k.size(2);
  a.D = q.size(3);
  a.Dv = v.size(3);
  attention_strides<T>(q, q.data_ptr<T>(), a.q, a.q_b, a.q_h, a.q_s, a.q_d);
  attention_strides<T>(k, k.data_ptr<T>(), a.k, a.k_b, a.k_h, a.k_s, a.k_d);
  attention_strides<T>(v, v.data_ptr<T>(), a.v, a.v_b, a.v_h, a.v_s, a.v_d);
  if (mask.has_value())
    attention_strides<T>(*mask, mask->data_ptr<T>(), a.mask, a.m_b, a.m_h, a.m_i, a.m_j);
  a.out = out.data_ptr<T>();
  a.o_b = out.stride(0);
  a.o_h = out.stride(1);
  a.o_s = out.stride(2);
  a.o_d = out.stride(3);
  a.scale = static_cast<T>(scale);
  a.num_threads = at::get_num_threads();
  const int status = skc::attention(a);
  TORCH_CHECK(status != skc::kNoMemory, "sparsekern.attention: out of memory for a scratch "
              "buffer (key length ", a.Sk, ", head dims ", a.D, " / ", a.Dv, ")");
  TORCH_CHECK(status == skc::kOk, "sparsekern.attention: kernel failed with status ", status,
              " (a sparsekern bug; please report it with the shapes)");
}

// sparsekern::attention on the CPU: softmax(scale * Q K^T + attn_mask) V. query [B, H, Sq, D],
// key [B, Hkv, Sk, D], value [B, Hkv, Sk, Dv] (H % Hkv == 0), any strides; returns [B, H, Sq,
// Dv] in query's dtype, stored as [B, Sq, H, Dv] (its transpose(1, 2) is contiguous).
at::Tensor attention_cpu(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                         const c10::optional<at::Tensor>& attn_mask, c10::optional<double> scale) {
  constexpr const char* what = "sparsekern.attention: ";
  check_isa_env();
  check_attention_tensor(query, "query", query);
  check_attention_tensor(key, "key", query);
  check_attention_tensor(value, "value", query);
  const at::ScalarType dt = query.scalar_type();
  TORCH_CHECK_VALUE(dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16 ||
                    dt == at::kHalf, what, "query must be float32, float64, bfloat16 or "
                    "float16; got ", dt);
  const int64_t B = query.size(0), H = query.size(1), Sq = query.size(2), D = query.size(3);
  const int64_t Hkv = key.size(1), Sk = key.size(2), Dv = value.size(3);
  TORCH_CHECK_VALUE(key.size(0) == B && value.size(0) == B, what, "key and value must have "
                    "query's batch size ", B, "; got key ", key.sizes(), ", value ", value.sizes());
  TORCH_CHECK_VALUE(value.size(1) == Hkv && value.size(2) == Sk, what, "value must have key's "
                    "heads and length [", Hkv, ", ", Sk, "]; got value ", value.sizes());
  TORCH_CHECK_VALUE(Hkv >= 1 && H % Hkv == 0, what, "query's heads (", H, ") must be a "
                    "multiple of key's heads (", Hkv, ")");
  TORCH_CHECK_VALUE(key.size(3) == D, what, "key's head dim must be query's (", D, "); got key ",
                    key.sizes());
  TORCH_CHECK_VALUE(D >= 1, what, "query's head dim (query.size(-1)) must be at least 1; got 0");
  const double s = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(D));
  TORCH_CHECK_VALUE(std::isfinite(s), what, "scale must be finite; got ", s);
  const std::array<int64_t, 4> shape{B, H, Sq, Sk};
  // compute in float32 (half dtypes are converted) or float64
  const at::ScalarType ct = dt == at::kDouble ? at::kDouble : at::kFloat;
  c10::optional<at::Tensor> mask;
  if (attn_mask.has_value()) mask = attention_mask(*attn_mask, shape, ct);
  at::Tensor out = at::empty({B, Sq, H, Dv}, query.options().dtype(ct)).transpose(1, 2);
  if (out.numel() == 0) return out.to(dt);
  if (Sk == 0) return out.zero_().to(dt);  // a sum over no keys
  const at::Tensor q = converted(query, ct), k = converted(key, ct), v = converted(value, ct);
  if (ct == at::kDouble) run_attention<double>(q, k, v, mask, s, out);
  else run_attention<float>(q, k, v, mask, s, out);
  return dt == ct ? out : out.to(dt);
}

}  // namespace

// Every schema of the sparsekern namespace is defined in sparsekern/ops.py; this file only
// registers kernels.
TORCH_LIBRARY_IMPL(sparsekern, CPU, m) {
  m.impl("spmm", &spmm_cpu_entry);
  m.impl("_spmm_cpu", &spmm_cpu_into);
  m.impl("_spmm_transposed_cpu", &spmm_transposed_cpu);
  m.impl("_sampled_dot_cpu", &sampled_dot_cpu);
  m.impl("attention", &attention_cpu);
}

TORCH_LIBRARY_IMPL(sparsekern, Autograd, m) { m.impl("spmm", &spmm_autograd); }

// Ops without tensor arguments dispatch to their CompositeExplicitAutograd kernel.
TORCH_LIBRARY_IMPL(sparsekern, CompositeExplicitAutograd, m) {
  m.impl("_abi_version", &abi_version);
  m.impl("_kernel_exists", &kernel_exists_op);
  m.impl("_cpu_isa", &cpu_isa);
  m.impl("_cpu_pool", &cpu_pool);
  m.impl("_pool_team_stalled", &team_stalled);  // for tests (fake clocks)
  m.impl("_pool_next_backoff", &next_backoff);   // for tests
  m.impl("_pool_thread_descheduled", &thread_descheduled);  // for tests (fake clocks)
  m.impl("_cache_probe_verdict", &skc::probe_says_cached);  // for tests (fake clocks)
  m.impl("_cpu_has_avx2", &cpu_has_avx2);
  m.impl("_cpu_has_avx512", &cpu_has_avx512);
  m.impl("_csc_cache_info", &csc_cache_info);
  m.impl("_csc_cache_clear", &csc_cache_clear);
  m.impl("_python_path", &python_path);
  m.impl("_reload_env", &reload_env);
}

// `import sparsekern._C` loads this library (running the registrations above); the module
// itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
