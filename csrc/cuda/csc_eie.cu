// CSC sparse A [M, K] times dense B [K, N] for batch 1 and small N, EIE-style.
//
// The weight comes repacked once into row slabs of kCscSlabRows rows (see kernels.h), so a row
// index fits 16 bits and a slab's accumulators fit shared memory. A block owns one slab, one
// range of columns and one chunk of NC output columns; each warp keeps private accumulators for
// the whole slab (no atomics: within one column the rows are distinct, and __syncwarp orders
// consecutive columns). A warp loads the column pointers and activations of 32 columns at
// once, keeps only the columns whose activations are not all zero (ballot; their weights are
// never read), then walks those columns a few at a time with the first loads of each issued
// together. At the end the warps' accumulators are summed and written (bias fused); when the
// columns are split between blocks, partial sums go to a float32 workspace by atomicAdd and a
// second kernel adds the bias and writes the output.
#include <cstdint>

#include "common.cuh"
#include "kernels.h"

namespace sparsekern {
namespace cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kSlab = static_cast<int>(kCscSlabRows);

struct CscParams {
  const void* values;
  const uint16_t* rows;
  const int32_t* ptr;  // [n_slabs][K + 1]
  int64_t nnz, M, K, N;
  int64_t cols_per_block;
  const void* B;
  int64_t ldb_k, ldb_n;
  const void* bias;
  void* out;
  int64_t ldo_m, ldo_n;
  float* ws;  // [M, N] float32 when columns are split, else null
  int* status;
};

// Warps per block for NC output columns per pass: private accumulators take
// WARPS * kSlab * NC * 4 bytes of shared memory (at most 32 KB, no opt-in needed).
template <int NC> struct CscShape {
  static constexpr int WARPS = NC <= 2 ? 8 : (NC == 4 ? 4 : 2);
  // Columns whose first loads are issued together (fewer when each carries NC activations).
  static constexpr int IN_FLIGHT = NC <= 2 ? 4 : 2;
  static constexpr int THREADS = 32 * WARPS;
  static constexpr int SMEM_BYTES = WARPS * kSlab * NC * 4;
};

__device__ __forceinline__ void report_bad_index(int* status) {
  if (status) atomicOr(status, kBadIndex);
}

template <typename TV, typename TO, int NC>
__global__ void __launch_bounds__(CscShape<NC>::THREADS) csc_eie_kernel(const CscParams p) {
  constexpr int WARPS = CscShape<NC>::WARPS;
  constexpr int kColumnsInFlight = CscShape<NC>::IN_FLIGHT;
  extern __shared__ __align__(16) float acc_all[];  // [WARPS][kSlab * NC]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t slab = blockIdx.x;
  const int64_t row0 = slab * kSlab;
  const int slab_rows = static_cast<int>(p.M - row0 < kSlab ? p.M - row0 : kSlab);
  const int64_t n0 = static_cast<int64_t>(blockIdx.z) * NC;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.y) * p.cols_per_block;
  const int64_t k_end = k_begin + p.cols_per_block < p.K ? k_begin + p.cols_per_block : p.K;
  const int32_t* ptr = p.ptr + slab * (p.K + 1);
  const TV* values = static_cast<const TV*>(p.values);
  const TO* B = static_cast<const TO*>(p.B);

  for (int i = tid; i < WARPS * kSlab * NC; i += WARPS * 32) acc_all[i] = 0.f;
  __syncthreads();
  float* acc = acc_all + warp * kSlab * NC;

  for (int64_t kb = k_begin + warp * 32; kb < k_end; kb += WARPS * 32) {
    // Lane l looks at column kb + l: its entry range and its NC activations.
    const int64_t k = kb + lane;
    int lo = 0, hi = 0;
    float b[NC];
#pragma unroll
    for (int n = 0; n < NC; ++n) b[n] = 0.f;
    bool active = false;
    if (k < k_end) {
      lo = ptr[k];
      hi = ptr[k + 1];
#pragma unroll
      for (int n = 0; n < NC; ++n)
        if (n0 + n < p.N) b[n] = to_float(B[k * p.ldb_k + (n0 + n) * p.ldb_n]);
      if (lo < 0 || lo > hi || hi > p.nnz) {
        report_bad_index(p.status);
        lo = hi = 0;
      }
      bool nonzero = false;
#pragma unroll
      for (int n = 0; n < NC; ++n) nonzero |= !(b[n] == 0.f);  // NaN counts as nonzero
      active = nonzero && hi > lo;
    }
    unsigned mask = __ballot_sync(kFullMask, active);
    while (mask) {
      // Take up to kColumnsInFlight active columns (mask is the same in every lane).
      int clo[kColumnsInFlight], chi[kColumnsInFlight];
      float cb[kColumnsInFlight][NC];
#pragma unroll
      for (int u = 0; u < kColumnsInFlight; ++u) {
        const bool have = mask != 0;
        const int j = have ? __ffs(mask) - 1 : 0;
        mask &= mask - 1;
        clo[u] = __shfl_sync(kFullMask, lo, j);
        chi[u] = __shfl_sync(kFullMask, hi, j);
        if (!have) chi[u] = clo[u];
#pragma unroll
        for (int n = 0; n < NC; ++n) cb[u][n] = __shfl_sync(kFullMask, b[n], j);
      }
      // First entry of each column for this lane, loaded before any is used.
      int r_first[kColumnsInFlight];
      float v_first[kColumnsInFlight];
#pragma unroll
      for (int u = 0; u < kColumnsInFlight; ++u) {
        const int e = clo[u] + lane;
        r_first[u] = 0;
        v_first[u] = 0.f;
        if (e < chi[u]) {
          r_first[u] = p.rows[e];
          v_first[u] = to_float(values[e]);
        }
      }
#pragma unroll
      for (int u = 0; u < kColumnsInFlight; ++u) {
        int e = clo[u] + lane;
        if (e < chi[u]) {
          int r = r_first[u];
          float v = v_first[u];
          while (true) {
            if (r < slab_rows) {
#pragma unroll
              for (int n = 0; n < NC; ++n) acc[r * NC + n] += v * cb[u][n];
            } else {
              report_bad_index(p.status);
            }
            e += 32;
            if (e >= chi[u]) break;
            r = p.rows[e];
            v = to_float(values[e]);
          }
        }
        __syncwarp();  // the next column may add to rows this one just updated
      }
    }
  }
  __syncthreads();

  const TO* bias = static_cast<const TO*>(p.bias);
  TO* out = static_cast<TO*>(p.out);
  for (int i = tid; i < slab_rows * NC; i += WARPS * 32) {
    const int r = i / NC, n = i % NC;
    if (n0 + n >= p.N) continue;
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) sum += acc_all[w * kSlab * NC + i];
    const int64_t m = row0 + r;
    if (p.ws) {
      if (sum != 0.f) atomicAdd(p.ws + m * p.N + n0 + n, sum);  // NaN != 0: propagates
    } else {
      out[m * p.ldo_m + (n0 + n) * p.ldo_n] =
          from_float<TO>(sum + (bias ? to_float(bias[m]) : 0.f));
    }
  }
}

// out = workspace + bias, for column-split launches.
template <typename TO>
__global__ void csc_finalize_kernel(const float* ws, int64_t M, int64_t N, const TO* bias,
                                    TO* out, int64_t ldo_m, int64_t ldo_n) {
  const int64_t total = M * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = i / N, n = i % N;
    out[m * ldo_m + n * ldo_n] = from_float<TO>(ws[i] + (bias ? to_float(bias[m]) : 0.f));
  }
}

// Output columns handled per pass (template parameter of the kernel).
int nc_for(int64_t N) { return N <= 1 ? 1 : N <= 2 ? 2 : N <= 4 ? 4 : 8; }

template <typename TV, typename TO, int NC>
int launch_nc(CscParams p, int64_t n_slabs, int splits, cudaStream_t stream) {
  const int64_t chunks = ceil_div(p.N, NC);
  if (n_slabs > 0x7fffffff || splits > 65535 || chunks > 65535) return kBadArgument;
  csc_eie_kernel<TV, TO, NC>
      <<<dim3(static_cast<unsigned>(n_slabs), static_cast<unsigned>(splits),
              static_cast<unsigned>(chunks)),
         CscShape<NC>::THREADS, CscShape<NC>::SMEM_BYTES, stream>>>(p);
  int st = launch_status();
  if (st != kOk || p.ws == nullptr) return st;
  const int64_t total = p.M * p.N;
  const int64_t blocks = ceil_div(total, 256) < 4096 ? ceil_div(total, 256) : 4096;
  csc_finalize_kernel<TO><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      p.ws, p.M, p.N, static_cast<const TO*>(p.bias), static_cast<TO*>(p.out), p.ldo_m,
      p.ldo_n);
  return launch_status();
}

template <typename TV, typename TO>
int launch_types(const CscParams& p, int64_t n_slabs, int splits, cudaStream_t stream) {
  switch (nc_for(p.N)) {
    case 1: return launch_nc<TV, TO, 1>(p, n_slabs, splits, stream);
    case 2: return launch_nc<TV, TO, 2>(p, n_slabs, splits, stream);
    case 4: return launch_nc<TV, TO, 4>(p, n_slabs, splits, stream);
    default: return launch_nc<TV, TO, 8>(p, n_slabs, splits, stream);
  }
}

}  // namespace

int csc_column_splits(int64_t M, int64_t K, int64_t N) {
  if (M <= 0 || K <= 0 || N <= 0) return 1;
  int sms = current_sm_count();
  if (sms <= 0) sms = 108;
  const int64_t blocks = ceil_div(M, kCscSlabRows) * ceil_div(N, nc_for(N));
  const int64_t want = ceil_div(4 * static_cast<int64_t>(sms), blocks);  // ~4 blocks per SM
  const int64_t most = K / 128 > 1 ? K / 128 : 1;  // keep >= 128 columns per block
  int64_t s = want < most ? want : most;
  if (s > 65535) s = 65535;
  return static_cast<int>(s < 1 ? 1 : s);
}

int csc_eie_spmm(const void* values, const uint16_t* rows, const int32_t* ptr, int64_t nnz,
                 int64_t M, int64_t K, int64_t N, DType values_dtype, const void* B,
                 int64_t ldb_k, int64_t ldb_n, const void* bias, void* out, int64_t ldo_m,
                 int64_t ldo_n, DType out_dtype, int column_splits, float* workspace,
                 int* device_status, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return kOk;
  if (K < 0 || nnz < 0 || nnz > 0x7fffffff || column_splits < 1) return kBadArgument;
  if (column_splits > 1 && workspace == nullptr) return kBadArgument;
  CscParams p;
  p.values = values;
  p.rows = rows;
  p.ptr = ptr;
  p.nnz = nnz;
  p.M = M;
  p.K = K;
  p.N = N;
  p.cols_per_block = ceil_div(K, column_splits);
  p.B = B;
  p.ldb_k = ldb_k;
  p.ldb_n = ldb_n;
  p.bias = bias;
  p.out = out;
  p.ldo_m = ldo_m;
  p.ldo_n = ldo_n;
  p.ws = column_splits > 1 ? workspace : nullptr;
  p.status = device_status;
  const int64_t n_slabs = ceil_div(M, kCscSlabRows);
  using F32 = float;
  using F16 = __half;
  using BF16 = __nv_bfloat16;
  if (out_dtype == DType::kFloat32) {
    if (values_dtype == DType::kFloat32)
      return launch_types<F32, F32>(p, n_slabs, column_splits, stream);
    if (values_dtype == DType::kFloat16)
      return launch_types<F16, F32>(p, n_slabs, column_splits, stream);
    if (values_dtype == DType::kBFloat16)
      return launch_types<BF16, F32>(p, n_slabs, column_splits, stream);
  } else if (out_dtype == DType::kFloat16 && values_dtype == DType::kFloat16) {
    return launch_types<F16, F16>(p, n_slabs, column_splits, stream);
  } else if (out_dtype == DType::kBFloat16 && values_dtype == DType::kBFloat16) {
    return launch_types<BF16, BF16>(p, n_slabs, column_splits, stream);
  }
  return kBadArgument;
}

}  // namespace cuda
}  // namespace sparsekern
