// Prototype: 2:4 spmm vectorized over M (rows in lanes), activations permuted in registers.
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <random>
#include <algorithm>
#include "kernels.h"
using namespace sparsekern::cpu;
#define T512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")))
constexpr int RB = 32, KC = 1024;
struct alignas(64) Pack { float v0[KC][RB]; float v1[KC][RB]; int32_t idx[KC][RB]; };

void repack(const float* vals, const uint8_t* meta, int64_t half, int64_t mcols, int rows,
            int64_t g0, int ng, Pack& p) {
  for (int r = 0; r < RB; ++r) {
    if (r >= rows) { for (int g = 0; g < ng; ++g) { p.v0[g][r] = 0; p.v1[g][r] = 0; p.idx[g][r] = 0; } continue; }
    const float* v = vals + r * half + 2 * g0;
    const uint8_t* mt = meta + r * mcols;
    for (int g = 0; g < ng; ++g) {
      const int64_t gg = g0 + g;
      p.v0[g][r] = v[2 * g]; p.v1[g][r] = v[2 * g + 1];
      p.idx[g][r] = (mt[gg >> 1] >> ((gg & 1) * 4)) & 15;
    }
  }
}

template <int NB>
T512 void tile(const Pack& p, int ng, const float* X, int64_t ldx, float* Y, int64_t ldy, bool first) {
  __m512 a[NB], b[NB];
  for (int n = 0; n < NB; ++n) {
    a[n] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(Y + n * ldy);
    b[n] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(Y + n * ldy + 16);
  }
  for (int g = 0; g < ng; ++g) {
    const __m512 v0a = _mm512_load_ps(p.v0[g]), v0b = _mm512_load_ps(p.v0[g] + 16);
    const __m512 v1a = _mm512_load_ps(p.v1[g]), v1b = _mm512_load_ps(p.v1[g] + 16);
    const __m512i ia = _mm512_load_si512(p.idx[g]), ib = _mm512_load_si512(p.idx[g] + 16);
    const __m512i ja = _mm512_srli_epi32(ia, 2), jb = _mm512_srli_epi32(ib, 2);
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n) {
      const __m512 x = _mm512_broadcast_f32x4(_mm_loadu_ps(X + n * ldx + 4 * g));
      a[n] = _mm512_fmadd_ps(v0a, _mm512_permutevar_ps(x, ia), a[n]);
      b[n] = _mm512_fmadd_ps(v0b, _mm512_permutevar_ps(x, ib), b[n]);
      a[n] = _mm512_fmadd_ps(v1a, _mm512_permutevar_ps(x, ja), a[n]);
      b[n] = _mm512_fmadd_ps(v1b, _mm512_permutevar_ps(x, jb), b[n]);
    }
  }
  for (int n = 0; n < NB; ++n) { _mm512_storeu_ps(Y + n * ldy, a[n]); _mm512_storeu_ps(Y + n * ldy + 16, b[n]); }
}

// Y [N, M] (ldy = M), X [N, K] (ldx = K); M % 32 == 0, K % 256 == 0, N % NB == 0 for the prototype.
template <int NB>
void mv_spmm(const float* vals, const uint8_t* meta, int64_t M, int64_t K, int64_t N, const float* X, float* Y) {
  const int64_t half = K / 2, mcols = (K / 4 + 1) / 2, G = K / 4;
  static Pack p;
  for (int64_t g0 = 0; g0 < G; g0 += KC) {
    const int ng = (int)std::min<int64_t>(KC, G - g0);
    for (int64_t m = 0; m < M; m += RB) {
      repack(vals + m * half, meta + m * mcols, half, mcols, RB, g0, ng, p);
      for (int64_t n = 0; n < N; n += NB)
        tile<NB>(p, ng, X + n * K + 4 * g0, K, Y + n * M + m, M, g0 == 0);
    }
  }
}

int main(int argc, char** argv) {
  int64_t M = atol(argv[1]), K = atol(argv[2]), N = atol(argv[3]); int reps = atoi(argv[4]);
  int64_t half = K / 2, mcols = (K / 4 + 1) / 2;
  std::vector<float> vals(M * half), B(K * N), Y(M * N), Y2(M * N);
  std::vector<uint8_t> meta(M * mcols);
  std::mt19937 rng(1); std::uniform_real_distribution<float> u(-1, 1);
  for (auto& v : vals) v = u(rng);
  for (auto& v : B) v = u(rng);
  const int pairs[6][2] = {{0,1},{0,2},{0,3},{1,2},{1,3},{2,3}};
  for (int64_t m = 0; m < M; ++m) for (int64_t g = 0; g < K / 4; ++g) {
    int p = rng() % 6; meta[m * mcols + g / 2] |= (pairs[p][0] | (pairs[p][1] << 2)) << ((g & 1) * 4);
  }
  Dense d; d.M = M; d.K = K; d.N = N; d.B = B.data(); d.ldb_k = 1; d.ldb_n = K;
  d.Y = Y.data(); d.ldy_m = 1; d.ldy_n = M; d.num_threads = 1;
  semi24_spmm(vals.data(), WeightType::kF32, meta.data(), d);
  mv_spmm<8>(vals.data(), meta.data(), M, K, N, B.data(), Y2.data());
  double maxerr = 0; for (int64_t i = 0; i < M * N; ++i) maxerr = std::max(maxerr, (double)std::abs(Y[i] - Y2[i]));
  std::vector<double> t1, t2, t3;
  for (int r = 0; r < reps; ++r) {
    auto a = std::chrono::steady_clock::now();
    semi24_spmm(vals.data(), WeightType::kF32, meta.data(), d);
    auto b = std::chrono::steady_clock::now();
    mv_spmm<8>(vals.data(), meta.data(), M, K, N, B.data(), Y2.data());
    auto c = std::chrono::steady_clock::now();
    mv_spmm<4>(vals.data(), meta.data(), M, K, N, B.data(), Y2.data());
    auto e = std::chrono::steady_clock::now();
    t1.push_back(std::chrono::duration<double>(b - a).count()); t2.push_back(std::chrono::duration<double>(c - b).count());
    t3.push_back(std::chrono::duration<double>(e - c).count());
  }
  std::sort(t1.begin(), t1.end()); std::sort(t2.begin(), t2.end()); std::sort(t3.begin(), t3.end());
  double f = (double)M * K * N / 1e9;
  printf("M=%ld K=%ld N=%ld maxerr %.1e  old %.2f ms (%.0f GF/s)  mv8 %.2f ms (%.0f GF/s)  mv4 %.2f ms (%.0f)\n", M, K, N, maxerr,
         t1[reps/2]*1e3, f/t1[reps/2], t2[reps/2]*1e3, f/t2[reps/2], t3[reps/2]*1e3, f/t3[reps/2]);
}
