// 2:4 sparse A [M, K] times dense B [K, N] on sparse tensor cores (mma.sp m16n8k32).
//
// A comes repacked once per weight into the order of the mma.sp operands (see kernels.h), so
// a k-step of a 16-row tile is one 512-byte block of values (16 bytes per lane) and one 64-byte
// block of metadata. Per block tile: a STAGES-deep cp.async pipeline (16-byte copies; B's
// partial tail chunks by plain loads, zeros beyond) brings A, its metadata and a B tile into
// shared memory; warps read B with
// ldmatrix (transposed when B is row-major) and issue mma.sp with fp32 accumulators; warps that
// split K (small-N configurations) are summed through shared memory; the epilogue adds the bias
// and writes 16-byte vectors along whichever output dimension is contiguous.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common.cuh"
#include "kernels.h"

// mma.sp::ordered_metadata (PTX 8.5, CUDA 12.5) is the form the PTX ISA recommends: plain
// mma.sp "may have substantially reduced performance on some targets". Our metadata is always
// ordered (first position < second), which is what ::ordered_metadata requires.
#if defined(__CUDACC_VER_MAJOR__) && \
    (__CUDACC_VER_MAJOR__ > 12 || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ >= 5))
#define SPARSEKERN_MMA_SP "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32"
#else
#define SPARSEKERN_MMA_SP "mma.sp.sync.aligned.m16n8k32.row.col.f32"
#endif

namespace sparsekern {
namespace cuda {
namespace {

// One m16n8k32 sparse MMA: c += A(16x32, 2:4) * B(32x8); sparsity selector 0 (lanes with
// threadID_in_group 0 and 1 supply the metadata).
template <typename T> struct MmaSp;
template <> struct MmaSp<__half> {
  static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[4], uint32_t e) {
    asm volatile(SPARSEKERN_MMA_SP ".f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]),
                   "r"(b[3]), "r"(e));
  }
};
template <> struct MmaSp<__nv_bfloat16> {
  static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[4], uint32_t e) {
    asm volatile(SPARSEKERN_MMA_SP ".bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]),
                   "r"(b[3]), "r"(e));
  }
};

__device__ __forceinline__ uint32_t bits16(__half x) { return __half_as_ushort(x); }
__device__ __forceinline__ uint32_t bits16(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }

// Block tile shape. WM x WN mma tiles (16 x 8 each) per warp; warps arranged
// WARPS_M x WARPS_N x WARPS_K (WARPS_K > 1 splits each stage's k-steps between warps).
template <int WM_, int WN_, int WARPS_M_, int WARPS_N_, int WARPS_K_, int KSTEPS_, int STAGES_,
          int MIN_BLOCKS_>
struct TileConfig {
  static constexpr int WM = WM_, WN = WN_, WARPS_M = WARPS_M_, WARPS_N = WARPS_N_;
  static constexpr int WARPS_K = WARPS_K_, KSTEPS = KSTEPS_, STAGES = STAGES_;
  static constexpr int MIN_BLOCKS = MIN_BLOCKS_;
  static constexpr int BM = 16 * WM * WARPS_M;
  static constexpr int BN = 8 * WN * WARPS_N;
  static constexpr int BK = 32 * KSTEPS;
  static constexpr int THREADS = 32 * WARPS_M * WARPS_N * WARPS_K;
  static constexpr int MT = BM / 16;                       // 16-row tiles per block
  static constexpr int A_BYTES = MT * KSTEPS * 512;        // packed values of one stage
  static constexpr int E_BYTES = MT * KSTEPS * 64;         // metadata of one stage
  static constexpr int B_BYTES = BK * BN * 2;              // B tile of one stage (16-bit)
  static constexpr int STAGE_BYTES = A_BYTES + E_BYTES + B_BYTES;
  static constexpr int PIPE_BYTES = STAGES * STAGE_BYTES;
  // fp32 staging of the finished tile, one copy per K-splitting warp group, in the order the
  // output is written: [BM][C_LD] (n contiguous) for row-major and scalar outputs, [BN][R_LD]
  // (m contiguous) for column-major ones (every sk.linear call: out = y.T), so that the
  // epilogue reads each thread's 8 consecutive outputs as two float4 from one row.
  // C_LD = BN + 8: the float2 accumulator stores (rows g, cols 2t) hit 32 distinct banks.
  // R_LD = BM + 4: the scalar transposed stores (row 2t*R_LD + g) hit 32 distinct banks.
  static constexpr int C_LD = BN + 8;
  static constexpr int R_LD = BM + 4;
  static constexpr int C_ROW_BYTES = WARPS_K * BM * C_LD * 4;
  static constexpr int C_COL_BYTES = WARPS_K * BN * R_LD * 4;
  static constexpr int C_BYTES = C_ROW_BYTES > C_COL_BYTES ? C_ROW_BYTES : C_COL_BYTES;
  static constexpr int SMEM_BYTES = PIPE_BYTES > C_BYTES ? PIPE_BYTES : C_BYTES;
  static_assert(KSTEPS % WARPS_K == 0, "warps splitting K must divide the stage's k-steps");
  static_assert(kSemi24ColPad % BK == 0, "K padding must be a whole number of stages");
  static_assert(kSemi24RowPad % BM == 0, "M padding must be a whole number of block rows");
  static_assert(BK / 8 >= 8, "the B swizzle along K needs at least 8 chunks per row");
  static_assert(BM % 32 == 0 && BN % 8 == 0,
                "conflict-free staging (R_LD % 32 == 4) and 8-element output vectors");
};

// Decode (N <= 8 / N <= 16): 32 rows per block so even M = 4096 gives 128 blocks; four warps
// split each 256-deep stage of K and are summed at the end.
using SmallN8 = TileConfig<1, 1, 2, 1, 4, 8, 4, 2>;
using SmallN16 = TileConfig<1, 2, 2, 1, 4, 8, 4, 2>;
// Mid N (17..256): the weight is still read from DRAM about once (the N blocks of one row
// block share it through L2) and the product is bandwidth bound up to N ~ 200 on an H100, so
// what matters is enough blocks to keep every SM streaming. 128 x 128 tiles give
// ceil(N/128) * M/128 blocks (32 for M = 4096, N <= 128: a quarter of 132 SMs); these give
// 4x / 16x as many.
//   MidN64: 64 x 64 tile, 2 x 2 warps of 32 x 32 (mma 2 x 4), 2 warps splitting K (BK = 128).
//   MidN32: 32 x 32 tile, 2 warps of 16 x 32 (mma 1 x 4), 4 warps splitting K (BK = 256).
using MidN64 = TileConfig<2, 4, 2, 2, 2, 4, 4, 1>;
using MidN32 = TileConfig<1, 4, 2, 1, 4, 8, 3, 2>;
// Prefill / training shapes: 128 x 128 block tile, 64 x 32 per warp, 4 stages of K = 64.
using LargeN = TileConfig<4, 4, 2, 4, 1, 2, 4, 1>;

// Swizzled 16-byte chunk index inside a shared-memory row of CPR chunks, so that the 8 rows an
// ldmatrix reads (same logical chunk, 8 consecutive rows) land in 8 distinct bank groups.
template <int CPR> __device__ __forceinline__ int swizzle(int chunk, int row) {
  if constexpr (CPR >= 8) {
    return chunk ^ (row & 7);
  } else if constexpr (CPR == 4) {
    return chunk ^ ((row >> 1) & 3);
  } else if constexpr (CPR == 2) {
    return chunk ^ ((row >> 2) & 1);
  } else {
    return chunk;
  }
}

enum OutMode : int { kOutScalar = 0, kOutRowVec = 1, kOutColVec = 2 };

enum TileChoice : int { kTileAuto = 0, kTileSmall = 1, kTileMid32 = 2, kTileMid64 = 3, kTileLarge = 4 };

// SPARSEKERN_SEMI24_TILE, read at every launch (a getenv, ~0.1 us against a launch's ~3 us)
// so one process can probe every configuration; each is correct for any N.
int semi24_forced_tile() {
  const char* v = std::getenv("SPARSEKERN_SEMI24_TILE");
  if (v == nullptr) return kTileAuto;
  const std::string s(v);
  if (s == "small") return kTileSmall;
  if (s == "mid32") return kTileMid32;
  if (s == "mid64") return kTileMid64;
  if (s == "large") return kTileLarge;
  return kTileAuto;
}

struct Semi24Params {
  const uint4* a_frag;   // [Mp/16][Kt][32] 16-byte lane blocks
  const uint32_t* meta;  // [Mp/16][Kt][16]
  int64_t M, N, K;
  int64_t Kt;            // Kp / 32
  const void* B;
  int64_t ldb;           // stride of the non-contiguous dimension of B
  const void* bias;
  void* out;
  int64_t ldo_m, ldo_n;
  int out_mode;
  // Block-index bases of this launch's part of the grid (launch splits grids beyond the
  // gridDim limits: more than 65535 row blocks, i.e. M > 2,097,024 with the 32-row tiles).
  int64_t bx0, by0;
};

template <typename T, class C, bool B_KCONTIG>
__global__ void __launch_bounds__(C::THREADS, C::MIN_BLOCKS)
    semi24_mma_kernel(const Semi24Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int warp_m = warp % C::WARPS_M;
  const int warp_n = (warp / C::WARPS_M) % C::WARPS_N;
  const int warp_k = warp / (C::WARPS_M * C::WARPS_N);
  const int64_t n0 = (p.bx0 + blockIdx.x) * C::BN;
  const int64_t mt0 = (p.by0 + blockIdx.y) * C::MT;
  // int: Kp <= kSemi24MaxKp (checked by the launcher and the glue), so k_tiles + STAGES fits.
  const int k_tiles = static_cast<int>(p.Kt / C::KSTEPS);
  const T* B = static_cast<const T*>(p.B);

  // Issue the copies of k-tile kt into pipeline stage s (every thread commits a group).
  auto load_stage = [&](int kt, int s) {
    unsigned char* sa = smem + s * C::STAGE_BYTES;
    unsigned char* se = sa + C::A_BYTES;
    unsigned char* sb = se + C::E_BYTES;
    const int64_t ks0 = static_cast<int64_t>(kt) * C::KSTEPS;
    // A: per 16-row tile, KSTEPS * 512 contiguous bytes.
    constexpr int A_CHUNKS = C::A_BYTES / 16;
#pragma unroll
    for (int c = tid; c < A_CHUNKS; c += C::THREADS) {
      const int mt = c / (C::KSTEPS * 32), w = c % (C::KSTEPS * 32);
      cp_async_16(sa + c * 16, p.a_frag + ((mt0 + mt) * p.Kt + ks0) * 32 + w, 16);
    }
    constexpr int E_CHUNKS = C::E_BYTES / 16;
#pragma unroll
    for (int c = tid; c < E_CHUNKS; c += C::THREADS) {
      const int mt = c / (C::KSTEPS * 4), w = c % (C::KSTEPS * 4);
      cp_async_16(se + c * 16, p.meta + ((mt0 + mt) * p.Kt + ks0) * 16 + w * 4, 16);
    }
    const int64_t k0 = static_cast<int64_t>(kt) * C::BK;
    if constexpr (B_KCONTIG) {
      // Shared tile [BN][BK] (k contiguous): B^T rows, straight from x of x @ W^T.
      constexpr int CPR = C::BK / 8;
#pragma unroll
      for (int c = tid; c < C::BN * CPR; c += C::THREADS) {
        const int r = c / CPR, kc = c % CPR;
        const int64_t n = n0 + r, k = k0 + kc * 8;
        int bytes = 0;
        const T* src = B;
        if (n < p.N && k < p.K) {
          bytes = static_cast<int>((p.K - k < 8 ? p.K - k : 8) * 2);
          src = B + n * p.ldb + k;
        }
        copy_chunk_16(sb + (r * C::BK + swizzle<CPR>(kc, r) * 8) * 2, src, bytes);
      }
    } else {
      // Shared tile [BK][BN] (n contiguous): row-major B.
      constexpr int CPR = C::BN / 8;
#pragma unroll
      for (int c = tid; c < C::BK * CPR; c += C::THREADS) {
        const int r = c / CPR, nc = c % CPR;
        const int64_t k = k0 + r, n = n0 + nc * 8;
        int bytes = 0;
        const T* src = B;
        if (k < p.K && n < p.N) {
          bytes = static_cast<int>((p.N - n < 8 ? p.N - n : 8) * 2);
          src = B + k * p.ldb + n;
        }
        copy_chunk_16(sb + (r * C::BN + swizzle<CPR>(nc, r) * 8) * 2, src, bytes);
      }
    }
  };

  float acc[C::WM][C::WN][4];
#pragma unroll
  for (int i = 0; i < C::WM; ++i)
#pragma unroll
    for (int j = 0; j < C::WN; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.f;

  // Prologue: fill STAGES-1 stages.
#pragma unroll
  for (int s = 0; s < C::STAGES - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();
  }

  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<C::STAGES - 2>();
    __syncthreads();  // stage kt landed for everyone; stage kt-1 is no longer being read
    {
      const int pf = kt + C::STAGES - 1;
      if (pf < k_tiles) load_stage(pf, pf % C::STAGES);
      cp_async_commit();
    }
    const unsigned char* sa = smem + (kt % C::STAGES) * C::STAGE_BYTES;
    const uint32_t* se = reinterpret_cast<const uint32_t*>(sa + C::A_BYTES);
    const unsigned char* sb = sa + C::A_BYTES + C::E_BYTES;
#pragma unroll
    for (int kk = 0; kk < C::KSTEPS / C::WARPS_K; ++kk) {
      const int ks = warp_k + kk * C::WARPS_K;
      uint32_t a[C::WM][4];
      uint32_t e[C::WM];
#pragma unroll
      for (int i = 0; i < C::WM; ++i) {
        const int blk = (warp_m * C::WM + i) * C::KSTEPS + ks;
        const uint4 v = *reinterpret_cast<const uint4*>(sa + (blk * 32 + lane) * 16);
        a[i][0] = v.x;
        a[i][1] = v.y;
        a[i][2] = v.z;
        a[i][3] = v.w;
        e[i] = se[blk * 16 + (lane >> 2) * 2 + (lane & 1)];
      }
      uint32_t b[C::WN][4];
#pragma unroll
      for (int j = 0; j < C::WN; ++j) {
        const int nl0 = (warp_n * C::WN + j) * 8;
        if constexpr (B_KCONTIG) {
          // Matrix q = lane/8 covers k = 8q..8q+7 of this step, rows n = nl0..nl0+7.
          const int r = nl0 + (lane & 7);
          const int kc = ks * 4 + (lane >> 3);
          ldmatrix_x4(b[j], sb + (r * C::BK + swizzle<C::BK / 8>(kc, r) * 8) * 2);
        } else {
          // Rows k = 32*ks + lane; transposed so lane gets (k = 2t, 2t+1; n = g) pairs.
          const int r = ks * 32 + lane;
          ldmatrix_x4_trans(b[j], sb + (r * C::BN + swizzle<C::BN / 8>(nl0 / 8, r) * 8) * 2);
        }
      }
#pragma unroll
      for (int i = 0; i < C::WM; ++i)
#pragma unroll
        for (int j = 0; j < C::WN; ++j) MmaSp<T>::run(acc[i][j], a[i], b[j], e[i]);
    }
  }

  // Epilogue: accumulators -> fp32 staging tile (one per K-splitting warp group) -> out.
  cp_async_wait<0>();
  __syncthreads();
  float* cs = reinterpret_cast<float*>(smem);
  const bool col_major = p.out_mode == kOutColVec;
  {
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int i = 0; i < C::WM; ++i)
#pragma unroll
      for (int j = 0; j < C::WN; ++j) {
        const int row = (warp_m * C::WM + i) * 16 + g;
        const int col = (warp_n * C::WN + j) * 8 + 2 * t;
        if (col_major) {
          // [BN][R_LD]: lane (g, t) stores word (2t) * R_LD + g (+ constants); R_LD % 32 == 4
          // (BM is a multiple of 32), so the banks 8t + g of the 32 lanes are all distinct.
          float* dst = cs + (warp_k * C::BN + col) * C::R_LD + row;
          dst[0] = acc[i][j][0];
          dst[C::R_LD] = acc[i][j][1];
          dst[8] = acc[i][j][2];
          dst[C::R_LD + 8] = acc[i][j][3];
        } else {
          float* dst = cs + (warp_k * C::BM + row) * C::C_LD + col;
          *reinterpret_cast<float2*>(dst) = make_float2(acc[i][j][0], acc[i][j][1]);
          *reinterpret_cast<float2*>(dst + 8 * C::C_LD) = make_float2(acc[i][j][2], acc[i][j][3]);
        }
      }
  }
  __syncthreads();

  const T* bias = static_cast<const T*>(p.bias);
  T* out = static_cast<T*>(p.out);
  const int64_t m0 = mt0 * 16;
  // Sum over the K-splitting warp groups of 8 consecutive staged floats (16-byte aligned:
  // C_LD, R_LD and the offsets are multiples of 4 floats). Lanes of a warp read rows 8 floats
  // apart as float4: a 2-way bank conflict at worst (was 16-way with scalar reads down a
  // column of the [BM][C_LD] tile for column-major outputs).
  auto sum8 = [&](const float* base, int stride, float (&v)[8]) {
#pragma unroll
    for (int q = 0; q < 8; ++q) v[q] = 0.f;
#pragma unroll
    for (int w = 0; w < C::WARPS_K; ++w) {
      const float4 lo = *reinterpret_cast<const float4*>(base + w * stride);
      const float4 hi = *reinterpret_cast<const float4*>(base + w * stride + 4);
      v[0] += lo.x; v[1] += lo.y; v[2] += lo.z; v[3] += lo.w;
      v[4] += hi.x; v[5] += hi.y; v[6] += hi.z; v[7] += hi.w;
    }
  };
  auto tile_sum = [&](int r, int c) {
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < C::WARPS_K; ++w) s += cs[(w * C::BM + r) * C::C_LD + c];
    return s;
  };
  if (p.out_mode == kOutRowVec) {
    // 8 consecutive n of one row per thread.
    constexpr int VPR = C::BN / 8;
    for (int v = tid; v < C::BM * VPR; v += C::THREADS) {
      const int r = v / VPR, c = (v % VPR) * 8;
      const int64_t m = m0 + r, n = n0 + c;
      if (m >= p.M || n >= p.N) continue;
      const float bv = bias ? to_float(bias[m]) : 0.f;
      T* dst = out + m * p.ldo_m + n;
      float x[8];
      sum8(cs + r * C::C_LD + c, C::BM * C::C_LD, x);
      if (n + 8 <= p.N) {
        uint32_t w[4];
#pragma unroll
        for (int q = 0; q < 4; ++q)
          w[q] = bits16(from_float<T>(x[2 * q] + bv)) |
                 (bits16(from_float<T>(x[2 * q + 1] + bv)) << 16);
        *reinterpret_cast<uint4*>(dst) = make_uint4(w[0], w[1], w[2], w[3]);
      } else {
        // Constant indices only (a run-time index would put x[] in local memory).
        const int64_t rem = p.N - n;
#pragma unroll
        for (int q = 0; q < 8; ++q)
          if (q < rem) dst[q] = from_float<T>(x[q] + bv);
      }
    }
  } else if (col_major) {
    // 8 consecutive m of one column per thread, read from the transposed staging tile.
    constexpr int VPC = C::BM / 8;
    for (int v = tid; v < C::BN * VPC; v += C::THREADS) {
      const int c = v / VPC, r = (v % VPC) * 8;
      const int64_t n = n0 + c, m = m0 + r;
      if (n >= p.N || m >= p.M) continue;
      T* dst = out + n * p.ldo_n + m;
      float x[8];
      sum8(cs + c * C::R_LD + r, C::BN * C::R_LD, x);
      if (m + 8 <= p.M) {
        uint32_t w[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const float b0 = bias ? to_float(bias[m + 2 * q]) : 0.f;
          const float b1 = bias ? to_float(bias[m + 2 * q + 1]) : 0.f;
          w[q] = bits16(from_float<T>(x[2 * q] + b0)) |
                 (bits16(from_float<T>(x[2 * q + 1] + b1)) << 16);
        }
        *reinterpret_cast<uint4*>(dst) = make_uint4(w[0], w[1], w[2], w[3]);
      } else {
        const int64_t rem = p.M - m;
#pragma unroll
        for (int q = 0; q < 8; ++q)
          if (q < rem) dst[q] = from_float<T>(x[q] + (bias ? to_float(bias[m + q]) : 0.f));
      }
    }
  } else {
    for (int v = tid; v < C::BM * C::BN; v += C::THREADS) {
      const int r = v / C::BN, c = v % C::BN;
      const int64_t m = m0 + r, n = n0 + c;
      if (m >= p.M || n >= p.N) continue;
      out[m * p.ldo_m + n * p.ldo_n] =
          from_float<T>(tile_sum(r, c) + (bias ? to_float(bias[m]) : 0.f));
    }
  }
#else
  // Built only for sm_80 and newer (setup.py, .ci/nvcc_check.sh); never reached elsewhere.
  __trap();
#endif
}

template <typename T, class C, bool B_KCONTIG>
int launch(const Semi24Params& p, int64_t Mp, cudaStream_t stream) {
  const int64_t grid_n = ceil_div(p.N, C::BN);
  const int64_t grid_m = Mp / C::BM;
  auto kernel = semi24_mma_kernel<T, C, B_KCONTIG>;
  if (C::SMEM_BYTES > 48 * 1024 &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           C::SMEM_BYTES) != cudaSuccess)
    return kLaunchFailed;
  // One launch unless the grid exceeds gridDim.y <= 65535 row blocks (M > 2,097,024 with the
  // 32-row tiles, > 8,388,480 with 128) or gridDim.x <= 2^31 - 1 column blocks; then parts,
  // row blocks outermost (the column blocks of a row block share its weight through L2).
  for (int64_t by = 0; by < grid_m; by += kMaxGridYZ) {
    for (int64_t bx = 0; bx < grid_n; bx += kMaxGridX) {
      Semi24Params q = p;
      q.bx0 = bx;
      q.by0 = by;
      const int64_t gx = grid_n - bx < kMaxGridX ? grid_n - bx : kMaxGridX;
      const int64_t gy = grid_m - by < kMaxGridYZ ? grid_m - by : kMaxGridYZ;
      kernel<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), C::THREADS,
               C::SMEM_BYTES, stream>>>(q);
      const int st = launch_status();
      if (st != kOk) return st;
    }
  }
  return kOk;
}

template <typename T, class C>
int launch_b_layout(const Semi24Params& p, int64_t Mp, bool b_k_contiguous, cudaStream_t s) {
  return b_k_contiguous ? launch<T, C, true>(p, Mp, s) : launch<T, C, false>(p, Mp, s);
}

// Blocks a configuration launches for this call.
template <class C> int64_t blocks_of(const Semi24Params& p, int64_t Mp) {
  return ceil_div(p.N, C::BN) * (Mp / C::BM);
}

// Tile configuration for N: decode tiles for N <= 16; above, the largest tile that still
// launches at least one block per SM (128 x 128, then 64 x 64), else 32 x 32.
// SPARSEKERN_SEMI24_TILE=small|mid32|mid64|large forces one (tests, timing experiments).
template <typename T>
int launch_for_n(const Semi24Params& p, int64_t Mp, bool b_k_contiguous, cudaStream_t s) {
  const int forced = semi24_forced_tile();
  if (forced == kTileSmall || (forced == kTileAuto && p.N <= 16)) {
    if (p.N <= 8) return launch_b_layout<T, SmallN8>(p, Mp, b_k_contiguous, s);
    return launch_b_layout<T, SmallN16>(p, Mp, b_k_contiguous, s);
  }
  if (forced == kTileMid32) return launch_b_layout<T, MidN32>(p, Mp, b_k_contiguous, s);
  if (forced == kTileMid64) return launch_b_layout<T, MidN64>(p, Mp, b_k_contiguous, s);
  if (forced == kTileLarge) return launch_b_layout<T, LargeN>(p, Mp, b_k_contiguous, s);
  int sms = current_sm_count();
  if (sms <= 0) sms = 132;
  if (blocks_of<LargeN>(p, Mp) >= sms) return launch_b_layout<T, LargeN>(p, Mp, b_k_contiguous, s);
  if (blocks_of<MidN64>(p, Mp) >= sms) return launch_b_layout<T, MidN64>(p, Mp, b_k_contiguous, s);
  return launch_b_layout<T, MidN32>(p, Mp, b_k_contiguous, s);
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; }

}  // namespace

int semi24_mma_spmm(const void* a_frag, const uint32_t* meta, int64_t M, int64_t K, int64_t Mp,
                    int64_t Kp, int64_t N, const void* B, int64_t ldb_k, int64_t ldb_n,
                    const void* bias, void* out, int64_t ldo_m, int64_t ldo_n, DType dtype,
                    cudaStream_t stream) {
  if (M <= 0 || N <= 0) return kOk;  // nothing to write
  if (K < 0 || Mp < M || Mp % kSemi24RowPad != 0 || Kp < K || Kp % kSemi24ColPad != 0 ||
      Kp > kSemi24MaxKp)
    return kBadArgument;
  if (dtype != DType::kFloat16 && dtype != DType::kBFloat16) return kBadArgument;
  if ((Kp > 0 && (!aligned16(a_frag) || !aligned16(meta))) || !aligned16(B)) return kBadArgument;
  // B: one dimension contiguous, the other's stride a multiple of 8 elements (16 bytes).
  bool b_k_contiguous;
  int64_t ldb;
  if (ldb_k == 1 && (N == 1 || ldb_n % 8 == 0)) {
    b_k_contiguous = true;
    ldb = N == 1 ? 0 : ldb_n;
  } else if (ldb_n == 1 && (K <= 1 || ldb_k % 8 == 0)) {
    b_k_contiguous = false;
    ldb = K <= 1 ? 0 : ldb_k;
  } else {
    return kBadArgument;
  }
  Semi24Params p;
  p.a_frag = static_cast<const uint4*>(a_frag);
  p.meta = meta;
  p.M = M;
  p.N = N;
  p.K = K;
  p.Kt = Kp / 32;
  p.B = B;
  p.ldb = ldb;
  p.bias = bias;
  p.out = out;
  p.ldo_m = ldo_m;
  p.ldo_n = ldo_n;
  p.out_mode = kOutScalar;
  p.bx0 = 0;
  p.by0 = 0;
  if (aligned16(out)) {
    if (ldo_m == 1 && (N == 1 || ldo_n % 8 == 0))
      p.out_mode = kOutColVec;
    else if (ldo_n == 1 && (M == 1 || ldo_m % 8 == 0))
      p.out_mode = kOutRowVec;
  }
  if (dtype == DType::kFloat16) return launch_for_n<__half>(p, Mp, b_k_contiguous, stream);
  return launch_for_n<__nv_bfloat16>(p, Mp, b_k_contiguous, stream);
}

}  // namespace cuda
}  // namespace sparsekern
