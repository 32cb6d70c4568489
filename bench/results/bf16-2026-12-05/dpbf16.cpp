#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>
#include <cstdint>
#include <cstdlib>
#include <cmath>
#include <algorithm>
static int M = 1536, K = 384;
constexpr int N = 64;
static inline uint16_t f2bf(float f) { uint32_t u; memcpy(&u, &f, 4); return (u + 0x7fff + ((u >> 16) & 1)) >> 16; }
static inline float bf2f(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
// combo of a nibble (p0 | p1<<2, p0<p1) -> 0..5
static int combo_of[16];
static const int PAIRS[6][2] = {{0,1},{0,2},{0,3},{1,2},{1,3},{2,3}};
// fp32 panel NV=4, R rows
template <int R>
__attribute__((noinline)) void panel_f32(const float* vals, const uint8_t* meta, const float* P, float* Y) {
  const int half = K / 2, mcols = K / 8; constexpr int LDP = 64;
  for (int m = 0; m + R <= M; m += R) {
    __m512 acc[R][4];
    for (int r = 0; r < R; ++r) for (int u = 0; u < 4; ++u) acc[r][u] = _mm512_setzero_ps();
    for (int j = 0; j < K / 8; ++j) {
      const float* pj = P + 8 * j * LDP;
      for (int r = 0; r < R; ++r) {
        const unsigned b = meta[(m + r) * mcols + j];
        const float* p[4] = {pj + (b & 3) * LDP, pj + ((b >> 2) & 3) * LDP, pj + (4 + ((b >> 4) & 3)) * LDP, pj + (4 + (b >> 6)) * LDP};
        const float* w = vals + (m + r) * half + 4 * j;
        for (int i = 0; i < 4; ++i) { const __m512 wi = _mm512_set1_ps(w[i]);
          for (int u = 0; u < 4; ++u) acc[r][u] = _mm512_fmadd_ps(wi, _mm512_loadu_ps(p[i] + 16 * u), acc[r][u]); }
      }
    }
    for (int r = 0; r < R; ++r) for (int u = 0; u < 4; ++u) _mm512_storeu_ps(Y + (m + r) * N + 16 * u, acc[r][u]);
  }
}
// bf16 combo panel: CP[g][c][n] = pair(X[4g+p0][n], X[4g+p1][n]) as uint32 (low = p0 -> matches values[2g] low)
template <int R>
__attribute__((noinline, target("avx512f,avx512bw,avx512vl,avx512bf16"))) void panel_bf(const uint16_t* vals, const uint8_t* meta, const uint32_t* CP, float* Y) {
  const int half = K / 2, mcols = K / 8; constexpr int LDP = 64;
  for (int m = 0; m + R <= M; m += R) {
    __m512 acc[R][4];
    for (int r = 0; r < R; ++r) for (int u = 0; u < 4; ++u) acc[r][u] = _mm512_setzero_ps();
    for (int j = 0; j < K / 8; ++j) {
      const uint32_t* c0 = CP + (2 * j) * 6 * LDP;
      const uint32_t* c1 = c0 + 6 * LDP;
      for (int r = 0; r < R; ++r) {
        const unsigned b = meta[(m + r) * mcols + j];
        const uint32_t* q0 = c0 + combo_of[b & 15] * LDP;
        const uint32_t* q1 = c1 + combo_of[b >> 4] * LDP;
        uint32_t w01, w23; memcpy(&w01, vals + (m + r) * half + 4 * j, 4); memcpy(&w23, vals + (m + r) * half + 4 * j + 2, 4);
        const __m512bh wa = (__m512bh)_mm512_set1_epi32(w01), wb = (__m512bh)_mm512_set1_epi32(w23);
        for (int u = 0; u < 4; ++u) {
          acc[r][u] = _mm512_dpbf16_ps(acc[r][u], wa, (__m512bh)_mm512_loadu_si512(q0 + 16 * u));
          acc[r][u] = _mm512_dpbf16_ps(acc[r][u], wb, (__m512bh)_mm512_loadu_si512(q1 + 16 * u));
        }
      }
    }
    for (int r = 0; r < R; ++r) for (int u = 0; u < 4; ++u) _mm512_storeu_ps(Y + (m + r) * N + 16 * u, acc[r][u]);
  }
}
int main(int argc, char** argv) {
  if (argc > 1) M = atoi(argv[1]);
  if (argc > 2) K = atoi(argv[2]);
  for (int c = 0; c < 6; ++c) combo_of[PAIRS[c][0] | (PAIRS[c][1] << 2)] = c;
  const int half = K / 2, mcols = K / 8;
  std::vector<float> valsf(M * half), X(K * N), P(K * N), Y(M * N), Yref(M * N, 0.f);
  std::vector<uint16_t> valsb(M * half), Xb(K * N);
  std::vector<uint8_t> meta(M * mcols);
  std::vector<uint32_t> CP((K / 4) * 6 * N);
  for (auto& a : X) a = bf2f(f2bf(rand() / (float)RAND_MAX - 0.5f));
  for (int i = 0; i < K * N; ++i) Xb[i] = f2bf(X[i]);
  for (int m = 0; m < M; ++m) for (int g = 0; g < K / 4; ++g) {
    int p = rand() % 6; meta[m * mcols + g / 2] |= (PAIRS[p][0] | (PAIRS[p][1] << 2)) << (4 * (g & 1));
    for (int i = 0; i < 2; ++i) { float v = bf2f(f2bf(rand() / (float)RAND_MAX - 0.5f)); valsf[m * half + 2 * g + i] = v; valsb[m * half + 2 * g + i] = f2bf(v);
      for (int n = 0; n < N; ++n) Yref[m * N + n] += v * X[(4 * g + PAIRS[p][i]) * N + n]; }
  }
  for (int k = 0; k < K; ++k) for (int n = 0; n < N; ++n) P[k * N + n] = X[k * N + n];
  for (int g = 0; g < K / 4; ++g) for (int c = 0; c < 6; ++c) for (int n = 0; n < N; ++n)
    CP[(g * 6 + c) * N + n] = Xb[(4 * g + PAIRS[c][0]) * N + n] | ((uint32_t)Xb[(4 * g + PAIRS[c][1]) * N + n] << 16);
  auto timeit = [&](const char* nm, auto fn) {
    std::fill(Y.begin(), Y.end(), 0.f); fn();
    double e = 0; for (int i = 0; i < M * N; ++i) e = fmax(e, fabs(Y[i] - Yref[i])); 
    double best = 1e9;
    for (int rep = 0; rep < 9; ++rep) { int it = 50; auto t0 = std::chrono::steady_clock::now(); for (int i = 0; i < it; ++i) fn();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / it); }
    printf("%-12s %8.1f us  %.1f useful GMAC/s  maxerr %.2g\n", nm, best * 1e6, (double)M * half * N / best / 1e9, e);
  };
  timeit("f32 R2", [&] { panel_f32<2>(valsf.data(), meta.data(), P.data(), Y.data()); });
  timeit("f32 R4", [&] { panel_f32<4>(valsf.data(), meta.data(), P.data(), Y.data()); });
  timeit("bf16 R2", [&] { panel_bf<2>(valsb.data(), meta.data(), CP.data(), Y.data()); });
  timeit("bf16 R3", [&] { panel_bf<3>(valsb.data(), meta.data(), CP.data(), Y.data()); });
  timeit("bf16 R4", [&] { panel_bf<4>(valsb.data(), meta.data(), CP.data(), Y.data()); });
}
