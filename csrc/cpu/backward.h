// Torch-free backward kernels of spmm for the three layouts (see backward.cpp).
//
//   spmm_transposed: out [K, N] = A^T @ G          (the gradient of spmm for B)
//   sampled_dot:     out [e]    = sum_n G(row_e, n) * B(col_e, n) for every stored entry e
//                                 of A, 0 for entries in a format's padding (the gradient of
//                                 spmm for the values)
// G [M, N] and B [K, N] are float32 with any strides (Strided: element (r, n) at
// data[r * rs + n * cs], strides >= 0, zero included); out [K, N] is float32 row-major and
// out of sampled_dot float32 in the order of the format's values. The kernels read G and B
// through their strides while packing them (the AVX-512 CSC / 2:4 paths) or copy them
// row-major into a scratch buffer first (the others; kNoMemory above kMaxScratchBytes). Every index is checked
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

// A strided float32 matrix: element (r, n) at data[r * rs + n * cs] (int64 products).
struct Strided {
  const float* data = nullptr;
  int64_t rs = 0, cs = 1;
};

// out [rows, N] row-major = X (16 x 16 register transposes for a column-major X on AVX-512).
int copy_row_major(Strided X, int64_t rows, int64_t N, float* out, int num_threads);
// Whether both kernels read G through its strides for this layout on the active ISA (false:
// they copy it row-major first, so a caller running both should copy it once itself).
bool reads_strided(SparseLayout layout);

int spmm_transposed(const Format& a, Strided G, int64_t N, float* out, int num_threads);
// Whether spmm_transposed runs a 2:4 A with N columns of G as its own kernel, half the dense
// product's multiply-adds (semi24_t.cpp: AVX-512, from 256 columns); else ops.cpp's GEMM.
bool semi24_transposed_native(int64_t N);
// Whether that kernel runs here at all (AVX-512), and the kernel, at any N (kBadArgument
// where semi24_transposed_available() is false). Only stored entries meet G: exact for a G
// holding an Inf or NaN too.
bool semi24_transposed_available();
int semi24_transposed(const Format& a, Strided G, int64_t N, float* out, int num_threads);
int sampled_dot(const Format& a, Strided G, Strided B, int64_t N, float* out, int num_threads);
// Whether sampled_dot's 2:4 product with N columns runs as its own kernel, half the dense
// product's multiply-adds (semi24_t.cpp: AVX-512, 512 <= N <= 8192); else ops.cpp's GEMM read
// at the stored entries. The kernel, at any N up to 8192 (kBadArgument where
// semi24_transposed_available() is false): sums over N in its own order (not the GEMM's), so
// results differ from the GEMM path in the last bits.
bool semi24_sampled_dot_native(int64_t N);
int semi24_sampled_dot(const Format& a, Strided G, Strided B, int64_t N, float* out,
                       int num_threads);

}  // namespace cpu
}  // namespace sparsekern
