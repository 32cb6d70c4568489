// CSC sparse A [M, K] times dense B [K, N] for batch 1 and small N, EIE-style.
//
// The weight comes repacked once into row slabs of kCscSlabRows rows (see kernels.h), so a row
// index fits 16 bits and a slab's sums fit shared memory. A block owns one slab, one range of
// columns and one chunk of NC output columns. A warp takes 32 columns at a time: each lane
// loads one column's entry range and activations; columns whose activations are all zero get
// length 0 (their weights are never read). A warp prefix sum of the lengths turns the active
// columns' entries (contiguous in the slab) into one flat range that the lanes walk kUnroll
// entries apart, so each lane has kUnroll independent loads in flight: the problem is tiny
// (a few MB) and latency, not bandwidth, is what to hide. Each entry's column is found by a
// 5-step binary search over the lanes' prefix sums (shuffles); entries are added to the
// slab's shared accumulators with shared-memory atomics (entries of different columns may
// share a row). At the end the block writes its slab (bias fused); when the columns are split
// between blocks, partial sums go to a float32 workspace by atomicAdd and a second kernel adds
// the bias and writes the output.
#include <cstdint>

#include "common.cuh"
#include "kernels.h"

namespace sparsekern {
namespace cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kSlab = static_cast<int>(kCscSlabRows);
constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;

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
  // Block-index bases of this launch's part of the grid (launch_nc splits grids beyond the
  // gridDim limits: more than 65535 chunks of NC columns, i.e. N > 524,280).
  int64_t slab0, chunk0;
};

__device__ __forceinline__ void report_bad_index(int* status) {
  if (status) atomicOr(status, kBadIndex);
}

template <typename TV, typename TO, int NC>
__global__ void __launch_bounds__(kThreads) csc_eie_kernel(const CscParams p) {
  constexpr int kUnroll = NC >= 8 ? 4 : 8;  // entries in flight per lane
  __shared__ float acc[kSlab * NC];  // the slab's sums, row-major [row][n]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t slab = p.slab0 + blockIdx.x;
  const int64_t row0 = slab * kSlab;
  const int slab_rows = static_cast<int>(p.M - row0 < kSlab ? p.M - row0 : kSlab);
  const int64_t n0 = (p.chunk0 + blockIdx.z) * NC;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.y) * p.cols_per_block;
  const int64_t k_end = k_begin + p.cols_per_block < p.K ? k_begin + p.cols_per_block : p.K;
  const int32_t* ptr = p.ptr + slab * (p.K + 1);
  const TV* values = static_cast<const TV*>(p.values);
  const TO* B = static_cast<const TO*>(p.B);

  for (int i = tid; i < kSlab * NC; i += kThreads) acc[i] = 0.f;
  __syncthreads();

  for (int64_t kb = k_begin + warp * 32; kb < k_end; kb += kWarps * 32) {
    // Lane l looks at column kb + l: its entry range and its NC activations.
    const int64_t k = kb + lane;
    int lo = 0, len = 0;
    float b[NC];
#pragma unroll
    for (int n = 0; n < NC; ++n) b[n] = 0.f;
    if (k < k_end) {
      lo = ptr[k];
      const int hi = ptr[k + 1];
#pragma unroll
      for (int n = 0; n < NC; ++n)
        if (n0 + n < p.N) b[n] = to_float(B[k * p.ldb_k + (n0 + n) * p.ldb_n]);
      // A slab's column holds at most kSlab distinct rows.
      if (lo < 0 || lo > hi || hi > p.nnz || hi - lo > kSlab) {
        report_bad_index(p.status);
      } else {
        bool nonzero = false;
#pragma unroll
        for (int n = 0; n < NC; ++n) nonzero |= !(b[n] == 0.f);  // NaN counts as nonzero
        len = nonzero ? hi - lo : 0;
      }
    }
    // Inclusive prefix sum of the lengths over the lanes: entry t of the flat range belongs to
    // the first lane whose sum exceeds t.
    int incl = len;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int v = __shfl_up_sync(kFullMask, incl, d);
      if (lane >= d) incl += v;
    }
    const int excl = incl - len;
    const int total = __shfl_sync(kFullMask, incl, 31);
    for (int t0 = 0; t0 < total; t0 += 32 * kUnroll) {
      int r[kUnroll], col[kUnroll];
      float v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int t = t0 + u * 32 + lane;
        const int tt = t < total ? t : total - 1;  // every lane takes part in the shuffles
        int j = 0;
#pragma unroll
        for (int step = 0; step < 5; ++step) {
          const int s = 16 >> step;
          if (__shfl_sync(kFullMask, incl, j + s - 1) <= tt) j += s;
        }
        col[u] = j;
        const int e = __shfl_sync(kFullMask, lo, j) + (tt - __shfl_sync(kFullMask, excl, j));
        r[u] = -1;
        v[u] = 0.f;
        if (t < total) {
          r[u] = p.rows[e];
          v[u] = to_float(values[e]);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        float bj[NC];
#pragma unroll
        for (int n = 0; n < NC; ++n) bj[n] = __shfl_sync(kFullMask, b[n], col[u]);
        if (r[u] >= 0) {
          if (r[u] < slab_rows) {
#pragma unroll
            for (int n = 0; n < NC; ++n) atomicAdd(&acc[r[u] * NC + n], v[u] * bj[n]);
          } else {
            report_bad_index(p.status);
          }
        }
      }
    }
  }
  __syncthreads();

  const TO* bias = static_cast<const TO*>(p.bias);
  TO* out = static_cast<TO*>(p.out);
  for (int i = tid; i < slab_rows * NC; i += kThreads) {
    const int r = i / NC, n = i % NC;
    if (n0 + n >= p.N) continue;
    const float sum = acc[i];
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
  if (splits > kMaxGridYZ) return kBadArgument;  // csc_column_splits never returns more
  // One launch unless the grid exceeds gridDim.z <= 65535 column chunks (N > 65535 * NC =
  // 524,280) or gridDim.x <= 2^31 - 1 slabs; then parts, each told its base.
  for (int64_t cz = 0; cz < chunks; cz += kMaxGridYZ) {
    for (int64_t sx = 0; sx < n_slabs; sx += kMaxGridX) {
      p.slab0 = sx;
      p.chunk0 = cz;
      const int64_t gx = n_slabs - sx < kMaxGridX ? n_slabs - sx : kMaxGridX;
      const int64_t gz = chunks - cz < kMaxGridYZ ? chunks - cz : kMaxGridYZ;
      csc_eie_kernel<TV, TO, NC>
          <<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(splits),
                  static_cast<unsigned>(gz)),
             kThreads, 0, stream>>>(p);
      const int st = launch_status();
      if (st != kOk) return st;
    }
  }
  if (p.ws == nullptr) return kOk;
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
  // ~8 blocks per SM, but no more splits than groups of 32 columns per warp of a block.
  const int64_t want = ceil_div(8 * static_cast<int64_t>(sms), blocks);
  const int64_t most = ceil_div(K, kThreads);
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
  p.slab0 = 0;
  p.chunk0 = 0;
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
