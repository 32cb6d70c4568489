// Probe: the first part (tile, run) is ../semi24-panel-bound-2026-12-05/panel_tile_modes.cpp's
// panel tile, repeated so that both orientations are timed in one binary and one run.
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
// R rows x NV zmm over a K-chunk panel; meta byte per row per 8 columns.
template <int R, int NV, int MODE>
__attribute__((noinline)) void tile(const float* v, const uint8_t* mt, int64_t half, int64_t mcols,
          const float* P, int64_t j0, int64_t j1, float* t, const uint32_t (*lut)[4]) {
  constexpr int64_t LDP = 16 * NV;
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r) for (int u = 0; u < NV; ++u) acc[r][u] = _mm512_loadu_ps(t + (r * NV + u) * 16);
  for (int64_t j = j0; j < j1; ++j) {
    const float* pj = P + 8 * j * LDP;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const float* p[4];
      if (MODE == 0) {
        const unsigned b = mt[r * mcols + j];
        p[0] = pj + (b & 3) * LDP; p[1] = pj + ((b >> 2) & 3) * LDP;
        p[2] = pj + (4 + ((b >> 4) & 3)) * LDP; p[3] = pj + (4 + (b >> 6)) * LDP;
      } else if (MODE == 1) {
        p[0] = pj; p[1] = pj + LDP; p[2] = pj + 4 * LDP; p[3] = pj + 5 * LDP;
      } else if (MODE == 4) {
        p[0] = pj + ((r * 3) & 3) * LDP; p[1] = pj + ((r * 3 + 1) & 3) * LDP;
        p[2] = pj + (4 + ((r * 5) & 3)) * LDP; p[3] = pj + (4 + ((r * 5 + 2) & 3)) * LDP;
      } else if (MODE == 3) {
        constexpr int SH = NV == 1 ? 6 : NV == 2 ? 7 : 8;  // log2(LDP * 4 bytes)
        constexpr uint64_t MASK = (uint64_t{3} << SH) * 0x0001000100010001ull;
        const uint64_t f = _pdep_u64(mt[r * mcols + j], MASK);
        const char* pb = reinterpret_cast<const char*>(pj);
        p[0] = reinterpret_cast<const float*>(pb + (f & 0xffff));
        p[1] = reinterpret_cast<const float*>(pb + ((f >> 16) & 0xffff));
        p[2] = reinterpret_cast<const float*>(pb + 4 * LDP * 4 + ((f >> 32) & 0xffff));
        p[3] = reinterpret_cast<const float*>(pb + 4 * LDP * 4 + (f >> 48));
      } else {
        const uint32_t* o = lut[mt[r * mcols + j]];
        p[0] = pj + o[0]; p[1] = pj + o[1]; p[2] = pj + o[2]; p[3] = pj + o[3];
      }
      const float* w = v + r * half + 4 * j;
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const __m512 wi = _mm512_set1_ps(w[i]);
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u) acc[r][u] = _mm512_fmadd_ps(wi, _mm512_loadu_ps(p[i] + 16 * u), acc[r][u]);
      }
    }
  }
  for (int r = 0; r < R; ++r) for (int u = 0; u < NV; ++u) _mm512_storeu_ps(t + (r * NV + u) * 16, acc[r][u]);
}
template <int R, int NV, int MODE>
double run(int64_t M, int64_t K) {
  constexpr int64_t LDP = 16 * NV;
  const int64_t half = K / 2, mcols = K / 8, G = K / 4;
  float* v = (float*)aligned_alloc(64, M * half * 4);
  uint8_t* mt = (uint8_t*)aligned_alloc(64, M * mcols + 64);
  float* P = (float*)aligned_alloc(64, K * LDP * 4);
  float* T = (float*)aligned_alloc(64, 64 * 16 * 4 * 4);
  for (int64_t i = 0; i < M * half; ++i) v[i] = 1e-3f * (i % 7);
  for (int64_t i = 0; i < M * mcols; ++i) { int a = rand() % 6, b = rand() % 6; static const uint8_t pat[6] = {0x4, 0x8, 0xc, 0x9, 0xd, 0xe}; mt[i] = (pat[a] & 0xf) | ((pat[b] & 0xf) << 4); }
  for (int64_t i = 0; i < K * LDP; ++i) P[i] = 1e-3f * (i % 5);
  static uint32_t lut[256][4];
  for (int b = 0; b < 256; ++b) { lut[b][0] = (b & 3) * LDP; lut[b][1] = ((b >> 2) & 3) * LDP; lut[b][2] = (4 + ((b >> 4) & 3)) * LDP; lut[b][3] = (4 + (b >> 6)) * LDP; }
  memset(T, 0, 64 * 16 * 4 * 4);
  const int64_t gchunk = (8192 / 4 / LDP) & ~1;
  double best = 1e9;
  for (int rep = 0; rep < 7; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t mb = 0; mb + 4 * R <= M; mb += 4 * R)
      for (int64_t g0 = 0; g0 < G; g0 += gchunk)
        for (int64_t m = mb; m < mb + 4 * R; m += R)
          tile<R, NV, MODE>(v + m * half, mt + m * mcols, half, mcols, P, g0 / 2, (g0 + gchunk) / 2, T + (m - mb) * NV * 16, lut);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s < best) best = s;
  }
  double vfma = double(M / (4 * R) * 4 * R) * half * NV;
  printf("R=%d NV=%d mode=%d: %.3f ms, %.2f G vFMA/s (T0 %g)\n", R, NV, MODE, best * 1e3, vfma / best / 1e9, T[0]);
  return best;
}
// Lane-over-rows: 16 rows per zmm; per group of 4 k, 2 kept per row; idx byte = 4*(g%4)+sel.
// vals [rb][g][2][16] f32, idx [rb][g][2][16] u8; X is N x K (token-major), Y is N x M.
template <int NB>
__attribute__((noinline)) void lor_block(const float* v, const uint8_t* ix, const float* X, int64_t K,
                                         int64_t G0, int64_t G1, float* Y, int64_t M, int64_t m0) {
  __m512 acc[NB];
  for (int n = 0; n < NB; ++n) acc[n] = _mm512_loadu_ps(Y + n * M + m0);
  for (int64_t g = G0; g < G1; g += 4) {  // 16 k
    __m512 vv[8]; __m512i ii[8];
#pragma GCC unroll 8
    for (int s = 0; s < 8; ++s) {
      vv[s] = _mm512_loadu_ps(v + (g * 2 + s) * 16);
      ii[s] = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(ix + (g * 2 + s) * 16)));
    }
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n) {
      const __m512 xz = _mm512_loadu_ps(X + n * K + g * 4);
#pragma GCC unroll 8
      for (int s = 0; s < 8; ++s) acc[n] = _mm512_fmadd_ps(vv[s], _mm512_permutexvar_ps(ii[s], xz), acc[n]);
    }
  }
  for (int n = 0; n < NB; ++n) _mm512_storeu_ps(Y + n * M + m0, acc[n]);
}

template <int NB>
__attribute__((noinline)) void lil_block(const float* v, const uint8_t* ix, const float* X, int64_t K,
                                         int64_t G0, int64_t G1, float* Y, int64_t M, int64_t m0) {
  __m512 acc[NB];
  for (int n = 0; n < NB; ++n) acc[n] = _mm512_loadu_ps(Y + n * M + m0);
  for (int64_t g = G0; g < G1; g += 4) {
    __m512 vv[8]; __m512i ii[8];
#pragma GCC unroll 8
    for (int s = 0; s < 8; ++s) {
      vv[s] = _mm512_loadu_ps(v + (g * 2 + s) * 16);
      ii[s] = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(ix + (g * 2 + s) * 16)));
    }
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n) {
#pragma GCC unroll 4
      for (int gi = 0; gi < 4; ++gi) {
        const __m512 xg = _mm512_broadcast_f32x4(_mm_loadu_ps(X + n * K + (g + gi) * 4));
        acc[n] = _mm512_fmadd_ps(vv[2 * gi], _mm512_permutevar_ps(xg, ii[2 * gi]), acc[n]);
        acc[n] = _mm512_fmadd_ps(vv[2 * gi + 1], _mm512_permutevar_ps(xg, ii[2 * gi + 1]), acc[n]);
      }
    }
  }
  for (int n = 0; n < NB; ++n) _mm512_storeu_ps(Y + n * M + m0, acc[n]);
}
template <int NB, bool IL = false>
void run_lor(int64_t M, int64_t K, int64_t Kc) {
  const int64_t G = K / 4;
  float* v = (float*)aligned_alloc(64, M * K / 2 * 4);
  uint8_t* ix = (uint8_t*)aligned_alloc(64, M * K / 2);
  float* X = (float*)aligned_alloc(64, NB * K * 4);
  float* Y = (float*)aligned_alloc(64, NB * M * 4);
  for (int64_t i = 0; i < M * K / 2; ++i) { v[i] = 1e-3f * (i % 7); }
  for (int64_t rb = 0; rb < M / 16; ++rb) for (int64_t g = 0; g < G; ++g) for (int s = 0; s < 2; ++s) for (int l = 0; l < 16; ++l) {
    int a = rand() % 3; ix[((rb * G + g) * 2 + s) * 16 + l] = (IL ? 0 : 4 * (g % 4)) + (s == 0 ? a : a + 1 + rand() % (3 - a));
  }
  for (int64_t i = 0; i < NB * K; ++i) X[i] = 1e-3f * (i % 5);
  memset(Y, 0, NB * M * 4);
  double best = 1e9;
  for (int rep = 0; rep < 7; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t g0 = 0; g0 < G; g0 += Kc / 4)
      for (int64_t rb = 0; rb < M / 16; ++rb)
        (IL ? lil_block<NB> : lor_block<NB>)(v + rb * G * 32, ix + rb * G * 32, X, K, g0, g0 + Kc / 4 < G ? g0 + Kc / 4 : G, Y, M, rb * 16);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s < best) best = s;
  }
  double vfma = double(M / 16) * (K / 2) * NB;
  printf("%s NB=%d Kc=%ld: %.3f ms, %.2f G vFMA/s (Y0 %g)\n", IL ? "LIL" : "LOR", NB, (long)Kc, best * 1e3, vfma / best / 1e9, Y[0]);
}
int main(int argc, char** argv) {
  const int64_t K = 4096;
  for (int k = 0; k < 2; ++k) {
    run<12, 2, 0>(528, K); run<6, 4, 0>(528, K); run<12, 2, 0>(240, K); run<12, 1, 0>(240, K);
    run_lor<12>(528, K, 4096);
    run_lor<8, true>(528, K, 4096); run_lor<12, true>(528, K, 4096); run_lor<16, true>(528, K, 4096); run_lor<16, true>(240, K, 4096);run_lor<8, true>(240, K, 4096);
  }
}
