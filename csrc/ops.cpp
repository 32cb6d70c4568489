// Registration glue for the CPU (tensors -> pointers, checks; no arithmetic here).
//
// * sparsekern::spmm, CPU key: the fast path. The public op is defined in Python
//   (sparsekern/ops.py), whose autograd and fake impls sit above this kernel. When the call
//   is one the compiled kernels serve and no backend override is active, it runs here with
//   no Python in between. Anything else (an override via use_backend / SPARSEKERN_BACKEND,
//   a dtype or layout without a CPU kernel, any argument that is not exactly as the op
//   contract says) goes to sparsekern::_spmm_dispatch, the Python path, which owns the
//   error messages and the reference fallback.
// * sparsekern::_spmm_cpu: the same kernels with a caller-given output, for the Python path.
#include <torch/extension.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cpu/kernels.h"

namespace {

constexpr int64_t kAbiVersion = 2;  // must equal sparsekern/_extension.py ABI_VERSION

// > 0 while any thread has a backend override or output poisoning active.
std::atomic<int> g_python_path{0};

bool env_forces_python() {
  const char* v = std::getenv("SPARSEKERN_BACKEND");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "auto") != 0 &&
         std::strcmp(v, "cpu") != 0;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Does a compiled CPU kernel exist for this case? (Kept in one place: Python asks it too.)
bool kernel_exists(const std::string& layout, at::ScalarType values_t, at::ScalarType b_t) {
  if (b_t != at::kFloat) return false;
  if (layout == "csc") return values_t == at::kFloat;
  return false;
}

// True when every argument is exactly as the op contract requires, so the kernel can run
// without the Python checks. Index *values* are checked by the kernels themselves.
bool fast_path_ok(const at::Tensor& values, const at::Tensor& indices, const at::Tensor& offsets,
                  int64_t M, int64_t K, const std::string& layout, const at::Tensor& B,
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
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    if (b.layout() != at::kStrided || !b.device().is_cpu() || b.dim() != 1 || b.size(0) != M ||
        b.scalar_type() != B.scalar_type())
      return false;
  }
  if (layout == "csc") {
    const auto it = indices.scalar_type();
    const auto ot = offsets.scalar_type();
    return values.dim() == 1 && indices.dim() == 1 && indices.size(0) == values.size(0) &&
           (it == at::kInt || (it == at::kShort && M <= 32768)) &&
           (ot == at::kInt || ot == at::kLong) && offsets.dim() == 1 && offsets.size(0) == K + 1;
  }
  if (layout == "bsr") {
    if (values.dim() != 3 || values.size(1) < 1 || values.size(2) < 1) return false;
    return indices.scalar_type() == at::kInt && indices.dim() == 1 &&
           indices.size(0) == values.size(0) && offsets.scalar_type() == at::kInt &&
           offsets.dim() == 1 && offsets.size(0) == ceil_div(M, values.size(1)) + 1;
  }
  if (layout == "2:4") {
    const int64_t half = ceil_div(K, 4) * 2;
    return values.dim() == 2 && values.size(0) == M && values.size(1) == half &&
           indices.scalar_type() == at::kByte && indices.dim() == 2 && indices.size(0) == M &&
           indices.size(1) == ceil_div(ceil_div(K, 4), 2) && offsets.numel() == 0;
  }
  return false;
}

// The output rule of sparsekern/_output.py: column-major when B is column-major.
at::Tensor empty_output(int64_t M, const at::Tensor& B) {
  const int64_t N = B.size(1);
  if (N > 1 && B.size(0) > 1 && B.stride(0) == 1)
    return at::empty({N, M}, B.options()).t();
  return at::empty({M, N}, B.options());
}

void check_status(int status, const std::string& layout) {
  using namespace sparsekern::cpu;
  TORCH_CHECK_VALUE(status != kBadIndex, "sparsekern.spmm(layout='", layout,
                    "'): an index in the format tensors is out of range");
  TORCH_CHECK_VALUE(status != kBadOffsets, "sparsekern.spmm(layout='", layout,
                    "'): offsets must start at 0, never decrease and end at the number of "
                    "stored entries");
  TORCH_CHECK(status == kOk, "sparsekern.spmm(layout='", layout, "'): kernel failed with status ",
              status);
}

// Runs the CPU kernel for an already validated call, writing into `out`.
void run_cpu_kernel(const at::Tensor& values, const at::Tensor& indices,
                    const at::Tensor& offsets, int64_t M, int64_t K, const std::string& layout,
                    const at::Tensor& B, const c10::optional<at::Tensor>& bias, at::Tensor& out) {
  const int64_t N = B.size(1);
  if (out.numel() == 0) return;
  at::Tensor bias_c;
  const float* bias_ptr = nullptr;
  if (bias.has_value()) {
    bias_c = bias->contiguous();
    bias_ptr = bias_c.data_ptr<float>();
  }
  if (layout == "csc") {
    // Kernels read int64 column pointers; int32 offsets are widened once per call.
    const at::Tensor colptr = offsets.scalar_type() == at::kLong ? offsets : offsets.to(at::kLong);
    const int64_t* cp = colptr.data_ptr<int64_t>();
    TORCH_CHECK_VALUE(cp[K] <= values.numel() && cp[0] == 0,
                      "sparsekern.spmm(layout='csc'): offsets must start at 0 and end at the "
                      "number of stored entries ", values.numel(), ", got offsets[0]=", cp[0],
                      ", offsets[K]=", cp[K]);
    check_status(sparsekern::cpu::csc_spmm_f32(
                     values.data_ptr<float>(), indices.data_ptr(),
                     indices.scalar_type() == at::kShort, cp, M, K, N, B.data_ptr<float>(),
                     B.stride(0), B.stride(1), bias_ptr, out.data_ptr<float>(), out.stride(0),
                     out.stride(1)),
                 layout);
    return;
  }
  TORCH_CHECK(false, "sparsekern: no CPU kernel for layout '", layout, "'");
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
  const std::string layout(layout_sv);
  if (!fast_path_ok(values, indices, offsets, M, K, layout, B, bias))
    return call_python_path(values, indices, offsets, M_, K_, layout_sv, B, bias);
  at::Tensor out = empty_output(M, B);
  run_cpu_kernel(values, indices, offsets, M, K, layout, B, bias, out);
  return out;
}

// sparsekern::_spmm_cpu: the Python path has validated everything and allocated `out`.
void spmm_cpu_into(const at::Tensor& values, const at::Tensor& indices, const at::Tensor& offsets,
                   int64_t M, int64_t K, c10::string_view layout_sv, const at::Tensor& B,
                   const c10::optional<at::Tensor>& bias, at::Tensor& out) {
  const std::string layout(layout_sv);
  TORCH_CHECK(kernel_exists(layout, values.scalar_type(), B.scalar_type()),
              "sparsekern._spmm_cpu: no CPU kernel for layout '", layout, "' with values ",
              values.scalar_type(), " and B ", B.scalar_type());
  TORCH_CHECK(values.is_contiguous() && indices.is_contiguous() && offsets.is_contiguous(),
              "sparsekern._spmm_cpu: format tensors must be contiguous");
  TORCH_CHECK(B.dim() == 2 && B.size(0) == K, "sparsekern._spmm_cpu: B has shape ", B.sizes(),
              ", expected [", K, ", N]");
  TORCH_CHECK(out.dim() == 2 && out.size(0) == M && out.size(1) == B.size(1) &&
                  out.scalar_type() == B.scalar_type(),
              "sparsekern._spmm_cpu: out has shape ", out.sizes(), ", expected [", M, ", ",
              B.size(1), "]");
  run_cpu_kernel(values, indices, offsets, M, K, layout, B, bias, out);
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("abi_version", []() { return kAbiVersion; }, "ABI version the extension was built with");
  m.def("python_path_acquire", []() { g_python_path.fetch_add(1); },
        "Route CPU calls of spmm through the Python path (while an override is active)");
  m.def("python_path_release", []() { g_python_path.fetch_sub(1); });
  m.def("kernel_exists",
        [](const std::string& layout, const std::string& values_dtype,
           const std::string& b_dtype) {
          auto parse = [](const std::string& s) {
            if (s == "float32") return at::kFloat;
            if (s == "bfloat16") return at::kBFloat16;
            if (s == "float16") return at::kHalf;
            if (s == "float64") return at::kDouble;
            return at::kByte;
          };
          return kernel_exists(layout, parse(values_dtype), parse(b_dtype));
        },
        "Whether a compiled CPU kernel serves (layout, values dtype, B dtype)");
}
