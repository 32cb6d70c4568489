// Torch-free backward kernels of spmm for the three layouts (see backward.cpp).
//
//   spmm_transposed: out [K, N] = A^T @ G          (the gradient of spmm for B)
//   sampled_dot:     out [e]    = sum_n G(row_e, n) * B(col_e, n) for every stored entry e
//                                 of A, 0 for entries in a format's padding (the gradient of
//                                 spmm for the values)
// G [M, N], B [K, N] and out [K, N] are float32 and row-major (the glue makes them so); out
// of sampled_dot is float32 in the order of the format's values. Every index is checked
// before it is used (same statuses as the forward kernels).
#pragma once
#include <cstdint>

#include "kernels.h"

namespace sparsekern {
namespace cpu {

enum class SparseLayout : int { kSemi24 = 0, kBsr = 1, kCsc = 2 };

// A sparse A [M, K] as its three format tensors (see sparsekern/formats/*.py).
struct Format {
  SparseLayout layout = SparseLayout::kCsc;
  int64_t M = 0, K = 0;
  const void* values = nullptr;  // csc [nnz], bsr [nnzb, bm, bk], 2:4 [M, ceil(K/4)*2]
  WeightType wt = WeightType::kF32;
  int64_t numel = 0;             // elements of values
  const void* indices = nullptr; // csc rows (int16/int32), bsr block cols (int32), 2:4 meta (uint8)
  IndexType idx_type = IndexType::kI32;
  const void* offsets = nullptr; // csc colptr (int32/int64), bsr block rowptr (int32), 2:4 none
  IndexType off_type = IndexType::kI32;
  int64_t bm = 1, bk = 1;        // BSR block shape
  int64_t nnzb = 0;              // BSR stored blocks
};

int spmm_transposed(const Format& a, const float* G, int64_t N, float* out, int num_threads);
int sampled_dot(const Format& a, const float* G, const float* B, int64_t N, float* out,
                int num_threads);

}  // namespace cpu
}  // namespace sparsekern
