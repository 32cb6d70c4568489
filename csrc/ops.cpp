// Registration glue for the CPU (tensors -> pointers, checks; no arithmetic here).
//
// * sparsekern::spmm, CPU key: the fast path. The public op is defined in Python
//   (sparsekern/ops.py), whose fake impl sits above this kernel. When the call is one the
//   compiled kernels serve and no backend override is active, it runs here with no Python
//   in between. Anything else (an override via use_backend / SPARSEKERN_BACKEND, a dtype or
//   layout without a CPU kernel, any argument that is not exactly as the op contract says)
//   goes to sparsekern::_spmm_dispatch, the Python path, which owns the error messages and
//   the reference fallback.
// * sparsekern::spmm, AutogradCPU key: the autograd formula of sparsekern/ops.py in C++
//   (the Python one stays registered for the other devices). With no input requiring grad
//   it only steps below autograd; otherwise it records a node whose backward calls the ops
//   sparsekern::spmm_sampled_dot and sparsekern::spmm_transposed, as the Python one does.
// * sparsekern::_spmm_cpu: the same kernels with a caller-given output, for the Python path.
//
// CSC weights get facts computed once per weight and cached here, keyed by the identity and
// version counter of their three tensors: a full index check, whether every value is finite
// (GEMV may then skip columns whose activation is 0) and a row-wise repack (cpu::CsrRepack,
// as large as the weight: used for N > 1 and for GEMV when few activations are zero). The C++ fast path only sees tensors, so the cache cannot live on
// the Python format object; it holds weak references, so an entry dies with its weight
// (freed at the next insertion or sweep) and is rebuilt when a tensor is modified in place.
#include <torch/extension.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "cpu/kernels.h"
#include "cpu/isa.h"

namespace {

namespace skc = sparsekern::cpu;

constexpr int64_t kAbiVersion = 3;  // must equal sparsekern/_extension.py ABI_VERSION

// > 0 while any thread has a backend override or output poisoning active.
std::atomic<int> g_python_path{0};

bool env_forces_python() {
  const char* v = std::getenv("SPARSEKERN_BACKEND");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "auto") != 0 &&
         std::strcmp(v, "cpu") != 0;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

enum class Layout { kSemi24, kBsr, kCsc, kUnknown };

Layout parse_layout(c10::string_view s) {
  if (s == "2:4") return Layout::kSemi24;
  if (s == "bsr") return Layout::kBsr;
  if (s == "csc") return Layout::kCsc;
  return Layout::kUnknown;
}

// Does a compiled CPU kernel exist for this case? (Kept in one place: Python asks it too.)
// Every layout: float32 B with float32, bfloat16 or float16 weights (float32 output).
bool kernel_exists(Layout layout, at::ScalarType values_t, at::ScalarType b_t) {
  if (layout == Layout::kUnknown || b_t != at::kFloat) return false;
  return values_t == at::kFloat || values_t == at::kBFloat16 || values_t == at::kHalf;
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
  if (g_python_path.load(std::memory_order_relaxed) > 0 || env_forces_python()) return false;
  if (M < 0 || K < 0) return false;
  for (const at::Tensor* t : {&values, &indices, &offsets, &B}) {
    if (!t->defined() || t->layout() != at::kStrided || !t->device().is_cpu()) return false;
  }
  if (!values.is_contiguous() || !indices.is_contiguous() || !offsets.is_contiguous())
    return false;
  if (!kernel_exists(layout, values.scalar_type(), B.scalar_type())) return false;
  if (B.dim() != 2 || B.size(0) != K) return false;
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

void check_isa_env() {
  const char* v = nullptr;
  TORCH_CHECK_VALUE(skc::isa_env_valid(&v), "SPARSEKERN_CPU_ISA='", v,
                    "' is not a CPU instruction set choice; expected one of 'portable', "
                    "'avx2', 'avx512', 'auto'");
  TORCH_CHECK_VALUE(v == nullptr || std::strcmp(v, "avx2") != 0 || skc::cpu_has_avx2(),
                    "SPARSEKERN_CPU_ISA='avx2' but this CPU lacks AVX2, FMA or F16C; use "
                    "'portable' or 'auto'");
  TORCH_CHECK_VALUE(v == nullptr || std::strcmp(v, "avx512") != 0 || skc::cpu_has_avx512(),
                    "SPARSEKERN_CPU_ISA='avx512' but this CPU (or OS) lacks AVX-512 F/BW/VL/DQ "
                    "or zmm state support; use 'avx2', 'portable' or 'auto'");
}

void check_status(int status, c10::string_view layout) {
  using namespace sparsekern::cpu;
  if (status == kOk) return;
  const std::string what = "sparsekern.spmm(layout='" + std::string(layout) + "'): ";
  if (layout == "csc") {
    TORCH_CHECK_VALUE(status != kBadIndex, what, "a row index in indices is out of range; "
                      "expected 0 <= index < M");
    TORCH_CHECK_VALUE(status != kBadOffsets, what, "offsets must start at 0, never decrease "
                      "and end at the number of stored values (values.shape[0])");
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
  TORCH_CHECK(status != kNoMemory, what, "out of memory for a scratch buffer");
  TORCH_CHECK(false, what, "kernel failed with status ", status);
}

// ----------------------------------------------------------------------------- CSC cache

using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;

// Version counter (inference tensors have none: they are identified by address alone).
int64_t version_of(const at::Tensor& t) { return t.is_inference() ? -1 : t._version(); }

struct TensorStamp {
  WeakImpl impl;
  const void* data;
  int64_t version;
  explicit TensorStamp(const at::Tensor& t)
      : impl(t.getIntrusivePtr()), data(t.data_ptr()), version(version_of(t)) {}
  bool matches(const at::Tensor& t) const {
    // A live weak reference keeps the TensorImpl's memory, so the address is unique.
    return !impl.expired() && impl._unsafe_get_target() == t.unsafeGetTensorImpl() &&
           data == t.data_ptr() && version == version_of(t);
  }
};

// Whole-weight facts of a CSC weight (see the file comment).
struct CscFacts {
  int scan_status = skc::kOk;
  bool all_finite = false;
  int csr_status = skc::kOk;
  std::unique_ptr<skc::CsrRepack> csr;  // built when a call with N > 1 first needs it
};

class CscCache {
 public:
  // The facts for this weight, with the repack built when `need_csr`.
  std::shared_ptr<const CscFacts> get(const skc::Csc& a, const at::Tensor& values,
                                      const at::Tensor& indices, const at::Tensor& offsets,
                                      int64_t M, int64_t K, bool need_csr) {
    std::lock_guard<std::mutex> lock(mu_);
    if (++lookups_ % 1024 == 0) sweep();
    auto it = map_.find(values.unsafeGetTensorImpl());
    if (it == map_.end() || !it->second.matches(values, indices, offsets, M, K)) {
      if (it != map_.end()) map_.erase(it);
      sweep();
      auto facts = std::make_shared<CscFacts>();
      facts->scan_status = skc::csc_scan(a, M, K, &facts->all_finite);
      it = map_.emplace(values.unsafeGetTensorImpl(),
                        Entry{TensorStamp(values), TensorStamp(indices), TensorStamp(offsets), M,
                              K, std::move(facts)})
               .first;
    }
    CscFacts& f = *it->second.facts;
    if (need_csr && f.scan_status == skc::kOk && !f.csr && f.csr_status == skc::kOk) {
      auto r = std::make_unique<skc::CsrRepack>();
      f.csr_status = skc::csc_to_csr(a, M, K, r.get());
      if (f.csr_status == skc::kOk) f.csr = std::move(r);
    }
    return it->second.facts;
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    map_.clear();
  }

  // (live entries, bytes held by repacks)
  std::pair<int64_t, int64_t> info() {
    std::lock_guard<std::mutex> lock(mu_);
    sweep();
    int64_t bytes = 0;
    for (const auto& kv : map_)
      if (kv.second.facts->csr) bytes += kv.second.facts->csr->nbytes();
    return {static_cast<int64_t>(map_.size()), bytes};
  }

 private:
  struct Entry {
    TensorStamp values, indices, offsets;
    int64_t M, K;
    std::shared_ptr<CscFacts> facts;
    bool matches(const at::Tensor& v, const at::Tensor& i, const at::Tensor& o, int64_t M_,
                 int64_t K_) const {
      return M == M_ && K == K_ && values.matches(v) && indices.matches(i) && offsets.matches(o);
    }
    bool expired() const {
      return values.impl.expired() || indices.impl.expired() || offsets.impl.expired();
    }
  };
  void sweep() {
    for (auto it = map_.begin(); it != map_.end();)
      it = it->second.expired() ? map_.erase(it) : std::next(it);
  }
  std::mutex mu_;
  std::unordered_map<const c10::TensorImpl*, Entry> map_;
  uint64_t lookups_ = 0;
};

CscCache& csc_cache() {
  static CscCache* cache = new CscCache();  // never destroyed: outlives every caller
  return *cache;
}

// ----------------------------------------------------------------------------- kernels

// Runs the CPU kernel for an already validated call, writing into `out` ([M, N], any strides).
void run_cpu_kernel(const at::Tensor& values, const at::Tensor& indices,
                    const at::Tensor& offsets, int64_t M, int64_t K, Layout layout,
                    c10::string_view layout_name, const at::Tensor& B,
                    const c10::optional<at::Tensor>& bias, at::Tensor& out) {
  check_isa_env();
  if (out.numel() == 0) return;
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
    case Layout::kBsr:
      status = skc::bsr_spmm(values.data_ptr(), wt, values.size(0), values.size(1),
                             values.size(2), indices.data_ptr<int32_t>(),
                             offsets.data_ptr<int32_t>(), d);
      break;
    case Layout::kCsc: {
      skc::Csc a;
      a.values = values.data_ptr();
      a.wt = wt;
      a.rows = indices.data_ptr();
      a.row_type = indices.scalar_type() == at::kShort ? skc::IndexType::kI16 : skc::IndexType::kI32;
      a.colptr = offsets.data_ptr();
      a.ptr_type = offsets.scalar_type() == at::kLong ? skc::IndexType::kI64 : skc::IndexType::kI32;
      a.nnz = values.numel();
      auto facts = csc_cache().get(a, values, indices, offsets, M, K, /*need_csr=*/true);
      check_status(facts->scan_status, layout_name);
      check_status(facts->csr_status, layout_name);
      // N > 1: the row-wise repack. N == 1: the kernel picks the EIE column walk (skipping
      // zero activations) or the repack's row gather, whichever reads fewer entries' worth.
      status = d.N > 1 ? skc::csr_spmm(*facts->csr, d)
                       : skc::csc_spmm(a, facts->all_finite, facts->csr.get(), d);
      break;
    }
    case Layout::kUnknown:
      TORCH_CHECK(false, "sparsekern: no CPU kernel for layout '", layout_name, "'");
  }
  check_status(status, layout_name);
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
  TORCH_CHECK(M >= 0 && K >= 0 && format_meta_ok(values, indices, offsets, M, K, layout),
              "sparsekern._spmm_cpu: format tensors do not match layout '", layout_sv,
              "' for M=", M, ", K=", K);
  run_cpu_kernel(values, indices, offsets, M, K, layout, layout_sv, B, bias, out);
}

// ----------------------------------------------------------------------------- autograd

using SpmmSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::SymInt,
                           c10::SymInt, c10::string_view, const at::Tensor&,
                           const c10::optional<at::Tensor>&);

const c10::TypedOperatorHandle<SpmmSig>& spmm_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sparsekern::spmm", "")
                       .typed<SpmmSig>();
  return op;
}

class SpmmFunction : public torch::autograd::Function<SpmmFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& values,
                            const at::Tensor& indices, const at::Tensor& offsets, c10::SymInt M,
                            c10::SymInt K, const std::string& layout, const at::Tensor& B,
                            const c10::optional<at::Tensor>& bias) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = spmm_op().call(values, indices, offsets, M, K, layout, B, bias);
    ctx->save_for_backward({values, indices, offsets, B});
    ctx->saved_data["M"] = M;
    ctx->saved_data["K"] = K;
    ctx->saved_data["layout"] = layout;
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
    const at::Tensor& grad = grads[0];
    // Variable inputs, in order: values 0, indices 1, offsets 2, B 3, bias 4.
    at::Tensor g_values, g_B, g_bias;
    if (ctx->needs_input_grad(0))
      g_values = sampled_dot.call(values, indices, offsets, M, K, layout, grad, B);
    if (ctx->needs_input_grad(3))
      g_B = transposed.call(values, indices, offsets, M, K, layout, grad);
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(4)) g_bias = grad.sum(1);
    return {g_values, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), g_B,
            g_bias};
  }
};

at::Tensor spmm_autograd_cpu(const at::Tensor& values, const at::Tensor& indices,
                             const at::Tensor& offsets, c10::SymInt M, c10::SymInt K,
                             c10::string_view layout, const at::Tensor& B,
                             const c10::optional<at::Tensor>& bias) {
  const bool records = at::GradMode::is_enabled() &&
                       (values.requires_grad() || B.requires_grad() ||
                        (bias.has_value() && bias->defined() && bias->requires_grad()));
  if (!records) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return spmm_op().call(values, indices, offsets, std::move(M), std::move(K), layout, B, bias);
  }
  return SpmmFunction::apply(values, indices, offsets, std::move(M), std::move(K),
                             std::string(layout), B, bias);
}

at::ScalarType parse_dtype(const std::string& s) {
  if (s == "float32") return at::kFloat;
  if (s == "bfloat16") return at::kBFloat16;
  if (s == "float16") return at::kHalf;
  if (s == "float64") return at::kDouble;
  return at::kByte;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparsekern, m) {
  m.def(
      "_spmm_cpu(Tensor values, Tensor indices, Tensor offsets, int M, int K, str layout, "
      "Tensor B, Tensor? bias, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(sparsekern, CPU, m) {
  m.impl("spmm", &spmm_cpu_entry);
  m.impl("_spmm_cpu", &spmm_cpu_into);
}

TORCH_LIBRARY_IMPL(sparsekern, AutogradCPU, m) { m.impl("spmm", &spmm_autograd_cpu); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("abi_version", []() { return kAbiVersion; }, "ABI version the extension was built with");
  m.def("python_path_acquire", []() { g_python_path.fetch_add(1); },
        "Route CPU calls of spmm through the Python path (while an override is active)");
  m.def("python_path_release", []() { g_python_path.fetch_sub(1); });
  m.def("kernel_exists",
        [](const std::string& layout, const std::string& values_dtype,
           const std::string& b_dtype) {
          return kernel_exists(parse_layout(layout), parse_dtype(values_dtype),
                               parse_dtype(b_dtype));
        },
        "Whether a compiled CPU kernel serves (layout, values dtype, B dtype)");
  m.def("cpu_isa", []() { return std::string(skc::active_isa_name()); },
        "Instruction set the CPU kernels use now: 'avx512', 'avx2' or 'portable' "
        "(SPARSEKERN_CPU_ISA)");
  m.def("cpu_has_avx2", []() { return skc::cpu_has_avx2(); },
        "Whether this CPU can run the AVX2+FMA kernels");
  m.def("cpu_has_avx512", []() { return skc::cpu_has_avx512(); },
        "Whether this CPU and OS can run the AVX-512 kernels");
  m.def("csc_cache_info", []() { return csc_cache().info(); },
        "(cached CSC weights, bytes held by their row-wise repacks)");
  m.def("csc_cache_clear", []() { csc_cache().clear(); },
        "Drop every cached CSC weight fact and repack");
}
