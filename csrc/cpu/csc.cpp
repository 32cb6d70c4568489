// CSC spmm on the CPU: the portable reference kernel (the fast AVX2 paths replace it).
#include <algorithm>
#include <vector>

#include "kernels.h"

namespace sparsekern {
namespace cpu {

namespace {
template <typename RowT>
int csc_spmm_impl(const float* values, const RowT* rows, const int64_t* colptr, int64_t M,
                  int64_t K, int64_t N, const float* B, int64_t ldb_k, int64_t ldb_n,
                  const float* bias, float* Y, int64_t ldy_m, int64_t ldy_n) {
  // Offsets are checked before any write so a bad format never leaves a half-written Y.
  if (colptr[0] != 0) return kBadOffsets;
  for (int64_t k = 0; k < K; ++k)
    if (colptr[k + 1] < colptr[k]) return kBadOffsets;
  const int64_t nnz = colptr[K];
  for (int64_t i = 0; i < nnz; ++i)
    if (rows[i] < 0 || static_cast<int64_t>(rows[i]) >= M) return kBadIndex;

  std::vector<float> acc(static_cast<size_t>(M));
  for (int64_t n = 0; n < N; ++n) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t k = 0; k < K; ++k) {
      const float x = B[k * ldb_k + n * ldb_n];
      for (int64_t i = colptr[k]; i < colptr[k + 1]; ++i) acc[rows[i]] += values[i] * x;
    }
    for (int64_t m = 0; m < M; ++m) Y[m * ldy_m + n * ldy_n] = acc[m] + (bias ? bias[m] : 0.0f);
  }
  return kOk;
}
}  // namespace

int csc_spmm_f32(const float* values, const void* rows, bool rows16, const int64_t* colptr,
                 int64_t M, int64_t K, int64_t N, const float* B, int64_t ldb_k, int64_t ldb_n,
                 const float* bias, float* Y, int64_t ldy_m, int64_t ldy_n) {
  if (rows16)
    return csc_spmm_impl(values, static_cast<const int16_t*>(rows), colptr, M, K, N, B, ldb_k,
                         ldb_n, bias, Y, ldy_m, ldy_n);
  return csc_spmm_impl(values, static_cast<const int32_t*>(rows), colptr, M, K, N, B, ldb_k,
                       ldb_n, bias, Y, ldy_m, ldy_n);
}

}  // namespace cpu
}  // namespace sparsekern
