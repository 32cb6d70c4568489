// Torch-free entry points of the CUDA kernels (pointers, sizes, strides, stream in; status out).
//
// Host code only: the glue (ops_cuda.cpp) includes this with the host compiler, the .cu files
// implement it. Every launcher returns a Status; kOk means the kernel was launched (its errors,
// like every CUDA error, surface asynchronously; the launchers check cudaGetLastError).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace sparsekern {
namespace cuda {

enum Status : int {
  kOk = 0,
  kBadIndex = 1,      // a kernel met an index outside the range it may use (see device_status)
  kBadArgument = 2,   // sizes/strides/alignment the launcher cannot serve (glue bug)
  kLaunchFailed = 3,  // cudaGetLastError() reported an error after the launch
  kNoDevice = 4,      // querying the current device failed
};

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// ---------------------------------------------------------------------------------------------
// 2:4 on sparse tensor cores (mma.sp m16n8k32, fp16/bf16 operands, fp32 accumulation).
//
// The weight comes repacked once (sparsekern/backends/cuda_repack.py, repack_semi24):
//   Mp = ceil(M / kSemi24RowPad) * kSemi24RowPad, Kp = ceil(K / kSemi24ColPad) * kSemi24ColPad
//   a_frag [Mp/16, Kp/32, 32 lanes, 8]  (dtype): for the 16-row tile mt and the 32-column step
//          ks, lane l = 4*g + t holds, in order, the kept values of A at compressed columns
//          {2t, 2t+1} of rows g, g+8 then compressed columns {2t+8, 2t+9} of rows g, g+8
//          (the four .b32 registers of the mma.sp A operand);
//   meta   [Mp/16, Kp/32, 16] uint32: word 2*g + h holds the 2-bit positions of the groups
//          4h..4h+3 of the step, row g in bits 0..15, row g+8 in bits 16..31 (the metadata
//          register of lane 4*g + h with sparsity selector 0).
//   Padding rows/columns hold zero values and the valid position pair (0, 1).
// B element (k, n) is at B[k * ldb_k + n * ldb_n]; the launcher needs one of the two to be 1
// (b_k_contiguous says which) and the other a multiple of 8 elements (or N == 1 / K == 1),
// with B 16-byte aligned. Out element (m, n) is at out[m * ldo_m + n * ldo_n] (any strides).
// bias: [M] in the output dtype, or null. dtype: kFloat16 or kBFloat16 (B, bias and out too).
constexpr int64_t kSemi24RowPad = 128;  // largest block tile along M
constexpr int64_t kSemi24ColPad = 256;  // largest block tile along K
// Largest Kp (so K) the kernel serves: its k-tile counter is an int (Kp / 64 tiles plus the
// pipeline's lookahead); every element offset is 64-bit. 2^31 - 256, a multiple of the pad.
// Unreachable in practice (a_frag alone would be >= 128 * Kp bytes = 256 GiB), but checked.
constexpr int64_t kSemi24MaxKp = INT32_MAX - kSemi24ColPad + 1;

int semi24_mma_spmm(const void* a_frag, const uint32_t* meta, int64_t M, int64_t K, int64_t Mp,
                    int64_t Kp, int64_t N, const void* B, int64_t ldb_k, int64_t ldb_n,
                    const void* bias, void* out, int64_t ldo_m, int64_t ldo_n, DType dtype,
                    cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// CSC, EIE-style, for batch 1 and small N: columns whose activations are all zero are skipped
// (their weights are never read); row indices are 16-bit, local to a slab of rows.
//
// The weight comes repacked once (cuda_repack.py, repack_csc_slabs): rows are cut into
// n_slabs = ceil(M / kCscSlabRows) slabs; within slab s the entries of column k are
//   values[ptr[s, k] .. ptr[s, k+1])  (dtype values_dtype) and
//   rows  [ptr[s, k] .. ptr[s, k+1])  uint16 row index local to the slab (row - s*kCscSlabRows)
// with ptr [n_slabs, K + 1] int32 (offsets into the concatenated arrays of length nnz).
// B element (k, n) is at B[k * ldb_k + n * ldb_n]; out (m, n) at out[m*ldo_m + n*ldo_n];
// bias [M] in the output dtype or null. B, bias and out share out_dtype.
// Supported (values_dtype, out_dtype): (f32, f32), (f16, f16), (bf16, bf16), (f16, f32),
// (bf16, f32).
// column_splits (from csc_column_splits) blocks share each slab's columns; when it is > 1 the
// caller passes a zero-filled float32 workspace [M, N] (row-major), otherwise it may be null. device_status, when not null, is a device
// int32 that the kernel ORs kBadIndex into when a ptr or row entry is out of range (the entry
// is then skipped: nothing is ever read or written out of bounds).
constexpr int64_t kCscSlabRows = 256;

int csc_column_splits(int64_t M, int64_t K, int64_t N);

int csc_eie_spmm(const void* values, const uint16_t* rows, const int32_t* ptr, int64_t nnz,
                 int64_t M, int64_t K, int64_t N, DType values_dtype, const void* B,
                 int64_t ldb_k, int64_t ldb_n, const void* bias, void* out, int64_t ldo_m,
                 int64_t ldo_n, DType out_dtype, int column_splits, float* workspace,
                 int* device_status, cudaStream_t stream);

}  // namespace cuda
}  // namespace sparsekern
