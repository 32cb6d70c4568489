// Torch-free CPU kernel entry points of sparsekern (pointers, sizes, strides in; status out).
#pragma once
#include <cstdint>

namespace sparsekern {
namespace cpu {

// Status a kernel returns; the glue turns a non-zero status into an error naming it.
enum Status : int {
  kOk = 0,
  kBadIndex = 1,    // an index read from the format is out of range
  kBadOffsets = 2,  // offsets decrease, or do not start at 0 / end at the entry count
};

// Y[M, N] = A @ B (+ bias) for A in CSC form (float32).
//   values [nnz], rows [nnz] (int16 or int32, see rows16), colptr [K+1] (int64 here: the
//   glue widens int32 offsets once), B element (k, n) at B[k*ldb_k + n*ldb_n],
//   Y element (m, n) at Y[m*ldy_m + n*ldy_n], bias [M] or null.
int csc_spmm_f32(const float* values, const void* rows, bool rows16, const int64_t* colptr,
                 int64_t M, int64_t K, int64_t N, const float* B, int64_t ldb_k, int64_t ldb_n,
                 const float* bias, float* Y, int64_t ldy_m, int64_t ldy_n);

}  // namespace cpu
}  // namespace sparsekern
