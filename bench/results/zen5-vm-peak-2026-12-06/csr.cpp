#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <vector>
#include <algorithm>
// CSR rows x panel P (K x LDP floats). vals f32, cols u16.
template <int NV, int SETS>
__attribute__((noinline)) void rows_v0(const float* vals, const uint16_t* cols, const int64_t* rp, int64_t M,
                                       const float* P, float* Y) {
  constexpr int64_t LDP = 16 * NV;
  for (int64_t m = 0; m < M; ++m) {
    __m512 acc[SETS][NV];
    for (int s = 0; s < SETS; ++s) for (int u = 0; u < NV; ++u) acc[s][u] = _mm512_setzero_ps();
    int64_t i = rp[m], e = rp[m + 1];
    for (; i + SETS <= e; i += SETS) {
#pragma GCC unroll 8
      for (int s = 0; s < SETS; ++s) {
        const __m512 w = _mm512_set1_ps(vals[i + s]);
        const float* p = P + int64_t(cols[i + s]) * LDP;
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u) acc[s][u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p + 16 * u), acc[s][u]);
      }
    }
    for (; i < e; ++i) {
      const __m512 w = _mm512_set1_ps(vals[i]);
      const float* p = P + int64_t(cols[i]) * LDP;
      for (int u = 0; u < NV; ++u) acc[0][u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p + 16 * u), acc[0][u]);
    }
    for (int u = 0; u < NV; ++u) {
      __m512 s = acc[0][u];
      for (int t = 1; t < SETS; ++t) s = _mm512_add_ps(s, acc[t][u]);
      _mm512_storeu_ps(Y + m * LDP + 16 * u, s);
    }
  }
}
// Two rows at once, their entries interleaved (each row SETS/2 acc sets).
template <int NV>
__attribute__((noinline)) void rows_r2(const float* vals, const uint16_t* cols, const int64_t* rp, int64_t M,
                                       const float* P, float* Y) {
  constexpr int64_t LDP = 16 * NV;
  int64_t m = 0;
  for (; m + 2 <= M; m += 2) {
    __m512 a0[2][NV], a1[2][NV];
    for (int s = 0; s < 2; ++s) for (int u = 0; u < NV; ++u) a0[s][u] = a1[s][u] = _mm512_setzero_ps();
    int64_t i = rp[m], e = rp[m + 1], j = rp[m + 1], f = rp[m + 2];
    for (; i + 2 <= e && j + 2 <= f; i += 2, j += 2) {
#pragma GCC unroll 2
      for (int s = 0; s < 2; ++s) {
        const __m512 w = _mm512_set1_ps(vals[i + s]), v = _mm512_set1_ps(vals[j + s]);
        const float* p = P + int64_t(cols[i + s]) * LDP;
        const float* q = P + int64_t(cols[j + s]) * LDP;
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u) {
          a0[s][u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p + 16 * u), a0[s][u]);
          a1[s][u] = _mm512_fmadd_ps(v, _mm512_loadu_ps(q + 16 * u), a1[s][u]);
        }
      }
    }
    for (; i < e; ++i) { const __m512 w = _mm512_set1_ps(vals[i]); const float* p = P + int64_t(cols[i]) * LDP;
      for (int u = 0; u < NV; ++u) a0[0][u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p + 16 * u), a0[0][u]); }
    for (; j < f; ++j) { const __m512 w = _mm512_set1_ps(vals[j]); const float* p = P + int64_t(cols[j]) * LDP;
      for (int u = 0; u < NV; ++u) a1[0][u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p + 16 * u), a1[0][u]); }
    for (int u = 0; u < NV; ++u) {
      _mm512_storeu_ps(Y + m * LDP + 16 * u, _mm512_add_ps(a0[0][u], a0[1][u]));
      _mm512_storeu_ps(Y + (m + 1) * LDP + 16 * u, _mm512_add_ps(a1[0][u], a1[1][u]));
    }
  }
}
// Values 16 at a time; each entry's weight broadcast from the register with vpermps.
template <int NV, int MODE>
__attribute__((noinline)) void rows_perm(const float* vals, const uint16_t* cols, const int64_t* rp, int64_t M,
                                         const float* P, float* Y) {
  constexpr int64_t LDP = 16 * NV;
  __m512i idx[16];
  for (int j = 0; j < 16; ++j) idx[j] = _mm512_set1_epi32(j);
  for (int64_t m = 0; m < M; ++m) {
    __m512 acc[4][NV];
    for (int s = 0; s < 4; ++s) for (int u = 0; u < NV; ++u) acc[s][u] = _mm512_setzero_ps();
    int64_t i = rp[m], e = rp[m + 1];
    for (; i + 16 <= e; i += 16) {
      const __m512 vv = _mm512_loadu_ps(vals + i);
      __m512i ix = _mm512_setzero_si512();
#pragma GCC unroll 16
      for (int s = 0; s < 16; ++s) {
        __m512 w;
        if (MODE == 0) w = _mm512_permutexvar_ps(idx[s], vv);
        else { w = _mm512_permutexvar_ps(ix, vv); ix = _mm512_add_epi32(ix, _mm512_set1_epi32(1)); }
        const float* p = P + int64_t(cols[i + s]) * LDP;
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u) acc[s & 3][u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p + 16 * u), acc[s & 3][u]);
      }
    }
    for (; i < e; ++i) {
      const __m512 w = _mm512_set1_ps(vals[i]);
      const float* p = P + int64_t(cols[i]) * LDP;
      for (int u = 0; u < NV; ++u) acc[0][u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p + 16 * u), acc[0][u]);
    }
    for (int u = 0; u < NV; ++u) {
      __m512 s = _mm512_add_ps(_mm512_add_ps(acc[0][u], acc[1][u]), _mm512_add_ps(acc[2][u], acc[3][u]));
      _mm512_storeu_ps(Y + m * LDP + 16 * u, s);
    }
  }
}
using Fn = void (*)(const float*, const uint16_t*, const int64_t*, int64_t, const float*, float*);
void bench(const char* name, Fn fn, int NV, int64_t M, int64_t K, double dens) {
  const int64_t LDP = 16 * NV;
  std::vector<int64_t> rp(M + 1, 0); std::vector<uint16_t> cols; std::vector<float> vals;
  srand(1);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t k = 0; k < K; ++k) if (rand() < dens * RAND_MAX) { cols.push_back(k); vals.push_back(1e-3f * (k % 7)); }
    rp[m + 1] = cols.size();
  }
  float* P = (float*)aligned_alloc(64, K * LDP * 4); for (int64_t i = 0; i < K * LDP; ++i) P[i] = 1e-3f * (i % 5);
  float* Y = (float*)aligned_alloc(64, M * LDP * 4);
  double best = 1e9;
  for (int r = 0; r < 15; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for (int rep = 0; rep < 8; ++rep) fn(vals.data(), cols.data(), rp.data(), M, P, Y);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 8;
    best = std::min(best, s);
  }
  printf("%-10s NV=%d M=%ld K=%ld rows~%.0f: %.1f us, %.2f G vFMA/s (%g)\n", name, NV, (long)M, (long)K, K * dens, best * 1e6,
         double(cols.size()) * NV / best / 1e9, Y[0]);
}
int main() {
  for (int rep = 0; rep < 2; ++rep)
  for (int64_t K : {64, 384, 1536})
    for (double rows : {38.0, 77.0, 154.0}) {
      if (rows / K > 0.6) continue;
      double d = rows / K;
      bench("v0 s4", rows_v0<2, 4>, 2, 1536, K, d);
      bench("perm tab", rows_perm<2, 0>, 2, 1536, K, d);
      bench("perm inc", rows_perm<2, 1>, 2, 1536, K, d);
    }
}
