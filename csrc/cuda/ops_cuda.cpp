// Registration glue of the CUDA kernels: the private op sparsekern::_spmm_cuda.
//
// Tensors -> pointers, shape/dtype/device checks that print what they got, the current
// stream, launch status -> errors. The format tensors it takes are the backend's repacked
// copies (sparsekern/backends/cuda_repack.py), not the user's format tensors:
//   layout "2:4": values = a_frag [Mp/16, Kp/32, 32, 8] (float16/bfloat16),
//                 indices = meta [Mp/16, Kp/32, 16] int32, offsets = empty;
//   layout "csc": values [nnz] (float32/float16/bfloat16), indices [nnz] int16 (slab-local
//                 rows, read as uint16), offsets = ptr [ceil(M/kCscSlabRows), K + 1] int32.
// B [K, N] and out [M, N] keep the caller's strides; bias [M] has out's dtype.
// c10/cuda only (not ATen/cuda/CUDAContext.h, which also wants the cuBLAS/cuSPARSE headers
// that a minimal CUDA toolkit lacks).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/all.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>

#include "cuda/kernels.h"

namespace {

namespace skc = sparsekern::cuda;

skc::DType to_dtype(at::ScalarType t, const char* what) {
  switch (t) {
    case at::kFloat: return skc::DType::kFloat32;
    case at::kHalf: return skc::DType::kFloat16;
    case at::kBFloat16: return skc::DType::kBFloat16;
    default:
      TORCH_CHECK(false, "sparsekern._spmm_cuda: ", what, " has dtype ", t,
                  "; expected float32, float16 or bfloat16");
  }
  return skc::DType::kFloat32;  // not reached
}

void check_status(int status, const std::string& layout) {
  TORCH_CHECK(status != skc::kBadIndex, "sparsekern.spmm(layout='", layout,
              "'): an index in the format tensors is out of range (a row index >= M or a "
              "column pointer outside [0, nnz]); the entry was skipped");
  TORCH_CHECK(status != skc::kBadArgument, "sparsekern._spmm_cuda(layout='", layout,
              "'): the kernel launcher rejected the sizes, strides or alignment it was given");
  TORCH_CHECK(status != skc::kLaunchFailed, "sparsekern._spmm_cuda(layout='", layout,
              "'): kernel launch failed: ", cudaGetErrorString(cudaGetLastError()));
  TORCH_CHECK(status == skc::kOk, "sparsekern._spmm_cuda(layout='", layout,
              "'): kernel failed with status ", status);
}

// Reading the kernels' bad-index flag needs a device sync, so it is done only on request
// (tests set SPARSEKERN_CUDA_CHECK_STATUS=1). The repack validates every index once per
// weight; without the flag the kernels still skip any out-of-range entry.
bool want_status_check() {
  const char* v = std::getenv("SPARSEKERN_CUDA_CHECK_STATUS");
  return v != nullptr && v[0] != '\0' && v[0] != '0';
}

void check_dense_args(const at::Tensor& values, int64_t M, int64_t K, const at::Tensor& B,
                      const c10::optional<at::Tensor>& bias, const at::Tensor& out) {
  TORCH_CHECK(values.is_cuda(), "sparsekern._spmm_cuda: values must be a CUDA tensor, got ",
              values.device());
  TORCH_CHECK(B.device() == values.device() && out.device() == values.device(),
              "sparsekern._spmm_cuda: values on ", values.device(), ", B on ", B.device(),
              " and out on ", out.device(), "; expected one device");
  TORCH_CHECK(B.dim() == 2 && B.size(0) == K, "sparsekern._spmm_cuda: B has shape ", B.sizes(),
              ", expected [K, N] = [", K, ", N]");
  TORCH_CHECK(out.dim() == 2 && out.size(0) == M && out.size(1) == B.size(1),
              "sparsekern._spmm_cuda: out has shape ", out.sizes(), ", expected [", M, ", ",
              B.size(1), "]");
  TORCH_CHECK(out.scalar_type() == B.scalar_type(), "sparsekern._spmm_cuda: out has dtype ",
              out.scalar_type(), ", expected B's dtype ", B.scalar_type());
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == M, "sparsekern._spmm_cuda: bias has shape ",
                bias->sizes(), ", expected [", M, "]");
    TORCH_CHECK(bias->scalar_type() == out.scalar_type() && bias->device() == out.device(),
                "sparsekern._spmm_cuda: bias is ", bias->scalar_type(), " on ", bias->device(),
                ", expected ", out.scalar_type(), " on ", out.device());
  }
}

void run_semi24(const at::Tensor& a_frag, const at::Tensor& meta, int64_t M, int64_t K,
                const at::Tensor& B, const at::Tensor* bias, at::Tensor& out,
                cudaStream_t stream) {
  TORCH_CHECK(a_frag.dim() == 4 && a_frag.size(2) == 32 && a_frag.size(3) == 8 &&
                  a_frag.is_contiguous(),
              "sparsekern._spmm_cuda(2:4): values has shape ", a_frag.sizes(),
              ", expected the contiguous repacked [Mp/16, Kp/32, 32, 8]");
  const int64_t Mp = a_frag.size(0) * 16, Kp = a_frag.size(1) * 32;
  TORCH_CHECK(Mp >= M && Mp % skc::kSemi24RowPad == 0 && Kp >= K &&
                  Kp % skc::kSemi24ColPad == 0,
              "sparsekern._spmm_cuda(2:4): repacked values cover [", Mp, ", ", Kp,
              "], expected multiples of [", skc::kSemi24RowPad, ", ", skc::kSemi24ColPad,
              "] covering [M, K] = [", M, ", ", K, "]");
  TORCH_CHECK_VALUE(Kp <= skc::kSemi24MaxKp, "sparsekern._spmm_cuda(2:4): K=", K,
                    " (repacked to Kp=", Kp, ") exceeds the largest K the 2:4 kernel serves (",
                    skc::kSemi24MaxKp, " = 2^31 - 256, the reach of its int32 k-tile counter); "
                    "expected K <= ", skc::kSemi24MaxKp);
  TORCH_CHECK(meta.scalar_type() == at::kInt && meta.dim() == 3 &&
                  meta.size(0) == a_frag.size(0) && meta.size(1) == a_frag.size(1) &&
                  meta.size(2) == 16 && meta.is_contiguous(),
              "sparsekern._spmm_cuda(2:4): indices has shape ", meta.sizes(), " and dtype ",
              meta.scalar_type(), ", expected contiguous int32 [", a_frag.size(0), ", ",
              a_frag.size(1), ", 16]");
  TORCH_CHECK((a_frag.scalar_type() == at::kHalf || a_frag.scalar_type() == at::kBFloat16) &&
                  B.scalar_type() == a_frag.scalar_type(),
              "sparsekern._spmm_cuda(2:4): values ", a_frag.scalar_type(), " and B ",
              B.scalar_type(), "; expected both float16 or both bfloat16");
  const int status = skc::semi24_mma_spmm(
      a_frag.data_ptr(), reinterpret_cast<const uint32_t*>(meta.data_ptr<int32_t>()), M, K, Mp,
      Kp, B.size(1), B.data_ptr(), B.stride(0), B.stride(1), bias ? bias->data_ptr() : nullptr,
      out.data_ptr(), out.stride(0), out.stride(1), to_dtype(B.scalar_type(), "B"), stream);
  TORCH_CHECK(status != skc::kBadArgument,
              "sparsekern._spmm_cuda(2:4): B (shape ", B.sizes(), ", strides ", B.strides(),
              ") must be 16-byte aligned with one dimension contiguous and the other's stride a "
              "multiple of 8 elements; the backend copies B otherwise");
  check_status(status, "2:4");
}

void run_csc(const at::Tensor& values, const at::Tensor& rows, const at::Tensor& ptr, int64_t M,
             int64_t K, const at::Tensor& B, const at::Tensor* bias, at::Tensor& out,
             cudaStream_t stream) {
  const int64_t nnz = values.numel();
  // ceil(M / kCscSlabRows) without forming M + kCscSlabRows - 1 (M comes from out's shape).
  const int64_t n_slabs = M / skc::kCscSlabRows + (M % skc::kCscSlabRows != 0 ? 1 : 0);
  TORCH_CHECK(values.dim() == 1 && values.is_contiguous(), "sparsekern._spmm_cuda(csc): values "
              "has shape ", values.sizes(), ", expected contiguous [nnz]");
  TORCH_CHECK(rows.scalar_type() == at::kShort && rows.dim() == 1 && rows.numel() == nnz &&
                  rows.is_contiguous(),
              "sparsekern._spmm_cuda(csc): indices has shape ", rows.sizes(), " and dtype ",
              rows.scalar_type(), ", expected contiguous int16 (slab-local rows) [", nnz, "]");
  TORCH_CHECK(ptr.scalar_type() == at::kInt && ptr.dim() == 2 && ptr.size(0) == n_slabs &&
                  ptr.size(1) - 1 == K && ptr.is_contiguous(),  // not K + 1: K may be huge
              "sparsekern._spmm_cuda(csc): offsets has shape ", ptr.sizes(), " and dtype ",
              ptr.scalar_type(), ", expected contiguous int32 [ceil(M/", skc::kCscSlabRows,
              "), K + 1] with M=", M, ", K=", K);
  TORCH_CHECK_VALUE(nnz <= INT32_MAX, "sparsekern._spmm_cuda(csc): values has nnz=", nnz,
                    " stored entries; the CSC kernel serves at most ", INT32_MAX,
                    " (2^31 - 1, the reach of its int32 slab pointers)");
  const skc::DType vt = to_dtype(values.scalar_type(), "values");
  const skc::DType ot = to_dtype(B.scalar_type(), "B");
  TORCH_CHECK(vt == ot || ot == skc::DType::kFloat32, "sparsekern._spmm_cuda(csc): values ",
              values.scalar_type(), " with B ", B.scalar_type(),
              "; expected the same dtype or float32 B");
  const int64_t N = B.size(1);
  const int splits = skc::csc_column_splits(M, K, N);
  at::Tensor ws;
  if (splits > 1) ws = at::zeros({M, N}, B.options().dtype(at::kFloat));
  const bool check = want_status_check();
  at::Tensor status_t;
  if (check) status_t = at::zeros({1}, B.options().dtype(at::kInt));
  const int status = skc::csc_eie_spmm(
      values.data_ptr(), reinterpret_cast<const uint16_t*>(rows.data_ptr<int16_t>()),
      ptr.data_ptr<int32_t>(), nnz, M, K, N, vt, B.data_ptr(), B.stride(0), B.stride(1),
      bias ? bias->data_ptr() : nullptr, out.data_ptr(), out.stride(0), out.stride(1), ot,
      splits, splits > 1 ? ws.data_ptr<float>() : nullptr,
      check ? status_t.data_ptr<int>() : nullptr, stream);
  check_status(status, "csc");
  if (check) check_status(status_t.item<int>(), "csc");
}

void spmm_cuda(const at::Tensor& values, const at::Tensor& indices, const at::Tensor& offsets,
               int64_t M, int64_t K, c10::string_view layout_sv, const at::Tensor& B,
               const c10::optional<at::Tensor>& bias, at::Tensor& out) {
  const std::string layout(layout_sv);
  TORCH_CHECK(M >= 0 && K >= 0, "sparsekern._spmm_cuda: M and K must be >= 0, got M=", M,
              ", K=", K);
  check_dense_args(values, M, K, B, bias, out);
  TORCH_CHECK(indices.device() == values.device() && offsets.device() == values.device(),
              "sparsekern._spmm_cuda: indices on ", indices.device(), " and offsets on ",
              offsets.device(), "; expected ", values.device());
  if (M == 0 || B.size(1) == 0) return;
  const c10::cuda::CUDAGuard guard(values.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(values.device().index());
  at::Tensor bias_c;
  if (bias.has_value()) bias_c = bias->contiguous();
  const at::Tensor* bias_p = bias.has_value() ? &bias_c : nullptr;
  if (layout == "2:4") {
    run_semi24(values, indices, M, K, B, bias_p, out, stream);
  } else if (layout == "csc") {
    run_csc(values, indices, offsets, M, K, B, bias_p, out, stream);
  } else {
    TORCH_CHECK(false, "sparsekern._spmm_cuda: layout '", layout,
                "' has no CUDA kernel; expected '2:4' or 'csc'");
  }
}

}  // namespace

// The schema of _spmm_cuda is defined in sparsekern/ops.py, with every other one.
TORCH_LIBRARY_IMPL(sparsekern, CUDA, m) { m.impl("_spmm_cuda", &spmm_cuda); }
