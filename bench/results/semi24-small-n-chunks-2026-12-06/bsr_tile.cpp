// Standalone: BSR 32x32 panel tile (rows R x NV zmm), one block row, P (K x 16NV) in L1 chunks.
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cstring>
#include <cmath>
#define INL __attribute__((always_inline)) inline
constexpr int BM = 32, BK = 32;
template <int R, int NV>
__attribute__((noinline)) void tile(const float* w0, const int* cols, int nb, const float* P, float* T, bool first) {
  constexpr int LDP = 16 * NV;
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r) for (int u = 0; u < NV; ++u) acc[r][u] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(T + r * LDP + 16 * u);
  for (int b = 0; b < nb; ++b) {
    const float* w = w0 + (size_t)b * BM * BK;
    const float* p = P + (size_t)cols[b] * BK * LDP;
    for (int kk = 0; kk < BK; ++kk, p += LDP) {
      __m512 bv[NV];
      for (int u = 0; u < NV; ++u) bv[u] = _mm512_loadu_ps(p + 16 * u);
      for (int r = 0; r < R; ++r) {
        const __m512 wv = _mm512_set1_ps(w[r * BK + kk]);
        for (int u = 0; u < NV; ++u) acc[r][u] = _mm512_fmadd_ps(wv, bv[u], acc[r][u]);
      }
    }
  }
  for (int r = 0; r < R; ++r) for (int u = 0; u < NV; ++u) _mm512_storeu_ps(T + r * LDP + 16 * u, acc[r][u]);
}
// whole block row: tiles of R rows (last tile smaller), chunks of CH blocks
template <int R, int NV>
void block_row(const float* W, const int* cols, int nblk, const float* P, float* T, int CH) {
  for (int c0 = 0; c0 < nblk; c0 += CH) {
    int nb = std::min(CH, nblk - c0);
    int r0 = 0;
    for (; r0 + R <= BM; r0 += R) tile<R, NV>(W + (size_t)c0 * BM * BK + r0 * BK, cols + c0, nb, P, T + r0 * 16 * NV, c0 == 0);
    int rem = BM - r0;
    // remainder rows with R=rem via small templates
    if (rem == 8) tile<8, NV>(W + (size_t)c0 * BM * BK + r0 * BK, cols + c0, nb, P, T + r0 * 16 * NV, c0 == 0);
    else if (rem == 4) tile<4, NV>(W + (size_t)c0 * BM * BK + r0 * BK, cols + c0, nb, P, T + r0 * 16 * NV, c0 == 0);
    else if (rem == 10) tile<10, NV>(W + (size_t)c0 * BM * BK + r0 * BK, cols + c0, nb, P, T + r0 * 16 * NV, c0 == 0);
    else if (rem == 2) tile<2, NV>(W + (size_t)c0 * BM * BK + r0 * BK, cols + c0, nb, P, T + r0 * 16 * NV, c0 == 0);
    else if (rem == 11) tile<11, NV>(W + (size_t)c0 * BM * BK + r0 * BK, cols + c0, nb, P, T + r0 * 16 * NV, c0 == 0);
    else if (rem == 6) tile<6, NV>(W + (size_t)c0 * BM * BK + r0 * BK, cols + c0, nb, P, T + r0 * 16 * NV, c0 == 0);
    else if (rem != 0) { fprintf(stderr, "rem %d\n", rem); exit(1); }
  }
}
int main(int argc, char** argv) {
  int K = argc > 1 ? atoi(argv[1]) : 3072;
  int nblk = argc > 2 ? atoi(argv[2]) : 29;
  int Mb = argc > 3 ? atoi(argv[3]) : 24;
  const int Kb = K / BK;
  std::vector<float> W((size_t)Mb * nblk * BM * BK), P((size_t)K * 32), T(BM * 32);
  std::vector<int> cols((size_t)Mb * nblk);
  srand(1);
  for (auto& v : W) v = (rand() % 1000) / 1000.0f;
  for (auto& v : P) v = (rand() % 1000) / 1000.0f;
  for (int br = 0; br < Mb; ++br) for (int b = 0; b < nblk; ++b) cols[br * nblk + b] = (b * Kb) / nblk;
  auto run = [&](auto fn) {
    double best = 1e9;
    for (int rep = 0; rep < 7; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      for (int it = 0; it < 50; ++it)
        for (int br = 0; br < Mb; ++br) fn(W.data() + (size_t)br * nblk * BM * BK, cols.data() + br * nblk);
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 50;
      best = std::min(best, s);
    }
    return best;
  };
  double fmas32 = (double)Mb * nblk * BM * BK * 2;  // zmm FMAs for NV=2 (32 cols)
  auto rep = [&](const char* name, double s) { printf("%-14s K=%d nblk=%d: %.1f us  %.2f G vFMA/s\n", name, K, nblk, s * 1e6, fmas32 / s / 1e9); };
  for (int CH : {4}) {
    rep("R8 NV2", run([&](const float* w, const int* c) { block_row<8, 2>(w, c, nblk, P.data(), T.data(), CH); }));
    rep("R11 NV2", run([&](const float* w, const int* c) { block_row<11, 2>(w, c, nblk, P.data(), T.data(), CH); }));
    rep("R12 NV2", run([&](const float* w, const int* c) { block_row<12, 2>(w, c, nblk, P.data(), T.data(), CH); }));
    rep("R14 NV2", run([&](const float* w, const int* c) { block_row<14, 2>(w, c, nblk, P.data(), T.data(), CH); }));
    rep("R16 NV1 x2", run([&](const float* w, const int* c) { block_row<16, 1>(w, c, nblk, P.data(), T.data(), CH); block_row<16, 1>(w, c, nblk, P.data() , T.data(), CH); }));
  }
}
