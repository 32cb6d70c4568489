// Device helpers shared by the CUDA kernels: async copies, ldmatrix, conversions, launch checks.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels.h"

namespace sparsekern {
namespace cuda {

// Element type for a DType (compile time).
template <DType D> struct ElemOf;
template <> struct ElemOf<DType::kFloat32> { using type = float; };
template <> struct ElemOf<DType::kFloat16> { using type = __half; };
template <> struct ElemOf<DType::kBFloat16> { using type = __nv_bfloat16; };

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global->shared copy that bypasses L1; only the first src_bytes (0..16) are read,
// the rest of the 16 bytes are zero-filled (so tails and padding need no branches).
// src must be 16-byte aligned (any valid address when src_bytes == 0).
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem_dst)),
               "l"(src), "r"(src_bytes)
               : "memory");
}

// One 16-byte chunk of B into shared memory, of which only the first src_bytes (0..16, even)
// lie inside the tensor. A full chunk goes through cp.async; an empty or partial one is
// written with ordinary loads and stores, so no byte past the tensor's end is ever addressed
// (compute-sanitizer counts a partial cp.async as a 16-byte read, and the hardware may too).
// Callers order it with the stage's barrier, as they do the async copies.
__device__ __forceinline__ void copy_chunk_16(void* smem_dst, const void* src, int src_bytes) {
  if (src_bytes >= 16) {
    cp_async_16(smem_dst, src, 16);
    return;
  }
  uint32_t w[4] = {0u, 0u, 0u, 0u};
  const uint16_t* s = static_cast<const uint16_t*>(src);
#pragma unroll
  for (int i = 0; i < 8; ++i)
    if (2 * i < src_bytes) w[i / 2] |= static_cast<uint32_t>(s[i]) << (16 * (i % 2));
  *static_cast<uint4*>(smem_dst) = make_uint4(w[0], w[1], w[2], w[3]);
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Wait until at most `pending` committed groups are still in flight.
template <int pending> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory");
}

// Four 8x8 b16 matrices; lane l gives the row address of matrix l/8, row l%8.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem_row)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem_row)));
}

// ceil(a / b) for b > 0 without forming a + b - 1 (which overflows for a near INT64_MAX).
inline int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b > 0 ? 1 : 0); }

// Grid limits of every CUDA device since compute capability 3.0: gridDim.x <= 2^31 - 1,
// gridDim.y and gridDim.z <= 65535. Launchers whose grid can exceed them (sizes that come from
// M or N) launch it in parts, passing each part the block-index base it starts at.
constexpr int64_t kMaxGridX = 0x7fffffff;
constexpr int64_t kMaxGridYZ = 65535;

// Status of the launch just made on this thread.
inline int launch_status() {
  return cudaGetLastError() == cudaSuccess ? kOk : kLaunchFailed;
}

// Number of multiprocessors of the current device (0 when the query fails).
inline int current_sm_count() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) return 0;
  return sms;
}

}  // namespace cuda
}  // namespace sparsekern
