// Registration glue: the private op sparsekern::_spmm_cpu (tensors -> pointers, checks).
// The public op sparsekern::spmm is defined in Python (sparsekern/ops.py), which validates
// shapes and dtypes and then calls this for CPU tensors.
#include <torch/extension.h>

#include "cpu/kernels.h"

namespace {

constexpr int64_t kAbiVersion = 1;  // must equal sparsekern/_extension.py ABI_VERSION

void check_status(int status, const std::string& layout) {
  TORCH_CHECK(status != sparsekern::cpu::kBadIndex, "sparsekern.spmm(", layout,
              "): an index in the format tensors is out of range");
  TORCH_CHECK(status != sparsekern::cpu::kBadOffsets, "sparsekern.spmm(", layout,
              "): offsets must start at 0, never decrease and end at the number of entries");
  TORCH_CHECK(status == sparsekern::cpu::kOk, "sparsekern.spmm(", layout,
              "): kernel failed with status ", status);
}

void spmm_cpu(const at::Tensor& values, const at::Tensor& indices, const at::Tensor& offsets,
              int64_t M, int64_t K, c10::string_view layout_sv, const at::Tensor& B,
              const c10::optional<at::Tensor>& bias, at::Tensor& out) {
  const std::string layout(layout_sv);
  TORCH_CHECK(values.is_contiguous() && indices.is_contiguous() && offsets.is_contiguous(),
              "sparsekern._spmm_cpu: format tensors must be contiguous");
  TORCH_CHECK(B.dim() == 2 && B.size(0) == K, "sparsekern._spmm_cpu: B has shape ", B.sizes(),
              ", expected [", K, ", N]");
  TORCH_CHECK(out.dim() == 2 && out.size(0) == M && out.size(1) == B.size(1),
              "sparsekern._spmm_cpu: out has shape ", out.sizes(), ", expected [", M, ", ",
              B.size(1), "]");
  const int64_t N = B.size(1);
  const float* bias_ptr = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == M && bias->scalar_type() == at::kFloat,
                "sparsekern._spmm_cpu: bias has shape ", bias->sizes(), ", expected [", M, "]");
    bias_ptr = bias->contiguous().data_ptr<float>();
  }
  if (layout == "csc") {
    TORCH_CHECK(values.scalar_type() == at::kFloat && B.scalar_type() == at::kFloat,
                "sparsekern._spmm_cpu(csc): float32 only, got values ", values.scalar_type(),
                " and B ", B.scalar_type());
    TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) == K + 1,
                "sparsekern._spmm_cpu(csc): offsets has shape ", offsets.sizes(),
                ", expected [", K + 1, "]");
    TORCH_CHECK(indices.numel() == values.numel(),
                "sparsekern._spmm_cpu(csc): indices has ", indices.numel(), " entries, values ",
                values.numel());
    const at::Tensor colptr = offsets.to(at::kLong);
    TORCH_CHECK(colptr[K].item<int64_t>() <= values.numel(),
                "sparsekern._spmm_cpu(csc): offsets[K] exceeds the number of values");
    const bool rows16 = indices.scalar_type() == at::kShort;
    TORCH_CHECK(rows16 || indices.scalar_type() == at::kInt,
                "sparsekern._spmm_cpu(csc): indices must be int16 or int32");
    check_status(sparsekern::cpu::csc_spmm_f32(
                     values.data_ptr<float>(), indices.data_ptr(), rows16,
                     colptr.data_ptr<int64_t>(), M, K, N, B.data_ptr<float>(), B.stride(0),
                     B.stride(1), bias_ptr, out.data_ptr<float>(), out.stride(0), out.stride(1)),
                 layout);
    return;
  }
  TORCH_CHECK(false, "sparsekern._spmm_cpu: layout '", layout, "' has no CPU kernel yet");
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparsekern, m) {
  m.def(
      "_spmm_cpu(Tensor values, Tensor indices, Tensor offsets, int M, int K, str layout, "
      "Tensor B, Tensor? bias, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(sparsekern, CPU, m) { m.impl("_spmm_cpu", &spmm_cpu); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("abi_version", []() { return kAbiVersion; }, "ABI version the extension was built with");
}
