#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>
#include <cstdint>
#include <cstdlib>
#include <cmath>
// 2:4 at N tokens. Standard format: vals[M][K/2], meta[M][K/8] (nibble per group: p0 | p1<<2).
// X: [N][K] row-major (token-major). Y: [N][M].
static int M = 1536, K = 384, N = 16;

// (P) production-like panel kernel, NV=1 (16 tokens): P[k][16]
template <int R>
__attribute__((noinline)) void panel(const float* vals, const uint8_t* meta, const float* P, float* Y) {
  const int half = K / 2, mcols = K / 8;
  for (int m = 0; m + R <= M; m += R) {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (int j = 0; j < K / 8; ++j) {
      const float* pj = P + 8 * j * 16;
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const unsigned b = meta[(m + r) * mcols + j];
        const float* w = vals + (m + r) * half + 4 * j;
        acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(w[0]), _mm512_loadu_ps(pj + (b & 3) * 16), acc[r]);
        acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(w[1]), _mm512_loadu_ps(pj + ((b >> 2) & 3) * 16), acc[r]);
        acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(w[2]), _mm512_loadu_ps(pj + (4 + ((b >> 4) & 3)) * 16), acc[r]);
        acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(w[3]), _mm512_loadu_ps(pj + (4 + (b >> 6)) * 16), acc[r]);
      }
    }
    alignas(64) float t[16];
    for (int r = 0; r < R; ++r) { _mm512_store_ps(t, acc[r]); for (int n = 0; n < 16; ++n) Y[n * M + m + r] = t[n]; }
  }
}

// Expanded indices for 16 rows, 8 slots, from the 16 rows' 16-bit metadata words in a zmm (32-bit lanes)
static inline void expand(__m512i mw, __m512i I[8]) {
  const __m512i three = _mm512_set1_epi32(3);
  for (int s = 0; s < 8; ++s)
    I[s] = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(mw, 2 * s), three), _mm512_set1_epi32(4 * (s / 2)));
}

// (B) pre-transposed: v16[M/16][K/16][8][16], m16[M/16][K/16][16] (uint16)
template <int NB>
__attribute__((noinline)) void permB(const float* v16, const uint16_t* m16, const float* X, float* Y) {
  for (int mb = 0; mb < M / 16; ++mb)
    for (int n0 = 0; n0 < N; n0 += NB) {
      __m512 acc[NB];
      for (int j = 0; j < NB; ++j) acc[j] = _mm512_setzero_ps();
      for (int c = 0; c < K / 16; ++c) {
        const size_t blk = (size_t)mb * (K / 16) + c;
        __m512i I[8]; __m512 V[8];
        expand(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(m16 + blk * 16))), I);
        for (int s = 0; s < 8; ++s) V[s] = _mm512_loadu_ps(v16 + (blk * 8 + s) * 16);
#pragma GCC unroll 16
        for (int j = 0; j < NB; ++j) {
          const __m512 xv = _mm512_loadu_ps(X + (size_t)(n0 + j) * K + c * 16);
#pragma GCC unroll 8
          for (int s = 0; s < 8; ++s) acc[j] = _mm512_fmadd_ps(V[s], _mm512_permutexvar_ps(I[s], xv), acc[j]);
        }
      }
      for (int j = 0; j < NB; ++j) _mm512_storeu_ps(Y + (size_t)(n0 + j) * M + mb * 16, acc[j]);
    }
}

// (C) on the fly from the standard format: transpose 16 rows x 8 values per chunk.
static inline void transpose_vals(const float* vals, int half, int c, __m512 V[8]) {
  // Z_r = [row r | row r+8], 8 values each
  __m512 Z[8];
  for (int r = 0; r < 8; ++r)
    Z[r] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(vals + r * half + 8 * c)),
                              _mm256_loadu_ps(vals + (r + 8) * half + 8 * c), 1);
  // 8x8 transpose within each 256-bit half
  __m512 t0 = _mm512_unpacklo_ps(Z[0], Z[1]), t1 = _mm512_unpackhi_ps(Z[0], Z[1]);
  __m512 t2 = _mm512_unpacklo_ps(Z[2], Z[3]), t3 = _mm512_unpackhi_ps(Z[2], Z[3]);
  __m512 t4 = _mm512_unpacklo_ps(Z[4], Z[5]), t5 = _mm512_unpackhi_ps(Z[4], Z[5]);
  __m512 t6 = _mm512_unpacklo_ps(Z[6], Z[7]), t7 = _mm512_unpackhi_ps(Z[6], Z[7]);
  __m512 u0 = _mm512_shuffle_ps(t0, t2, 0x44), u1 = _mm512_shuffle_ps(t0, t2, 0xEE);
  __m512 u2 = _mm512_shuffle_ps(t1, t3, 0x44), u3 = _mm512_shuffle_ps(t1, t3, 0xEE);
  __m512 u4 = _mm512_shuffle_ps(t4, t6, 0x44), u5 = _mm512_shuffle_ps(t4, t6, 0xEE);
  __m512 u6 = _mm512_shuffle_ps(t5, t7, 0x44), u7 = _mm512_shuffle_ps(t5, t7, 0xEE);
  // u0: rows0-3 col0 | rows0-3 col4 per 128-lane... within 256 half: lanes [r0..r3 of col0, r0..r3 of col4]
  // combine u_i (rows 0-3) with u_{i+4} (rows 4-7): 128-bit lane shuffles
  const __m512i lo = _mm512_setr_epi32(0,1,2,3,16,17,18,19, 8,9,10,11,24,25,26,27);
  const __m512i hi = _mm512_setr_epi32(4,5,6,7,20,21,22,23, 12,13,14,15,28,29,30,31);
  V[0] = _mm512_permutex2var_ps(u0, lo, u4); V[4] = _mm512_permutex2var_ps(u0, hi, u4);
  V[1] = _mm512_permutex2var_ps(u1, lo, u5); V[5] = _mm512_permutex2var_ps(u1, hi, u5);
  V[2] = _mm512_permutex2var_ps(u2, lo, u6); V[6] = _mm512_permutex2var_ps(u2, hi, u6);
  V[3] = _mm512_permutex2var_ps(u3, lo, u7); V[7] = _mm512_permutex2var_ps(u3, hi, u7);
}
// V[s] lane order after this: [r0..r7 | r8..r15]? check in verification
template <int NB>
__attribute__((noinline)) void permC(const float* vals, const uint8_t* meta, const float* X, float* Y) {
  const int half = K / 2, mcols = K / 8;
  const __m512i rowoff = _mm512_mullo_epi32(_mm512_setr_epi32(0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15), _mm512_set1_epi32(mcols));
  for (int mb = 0; mb < M / 16; ++mb)
    for (int n0 = 0; n0 < N; n0 += NB) {
      __m512 acc[NB];
      for (int j = 0; j < NB; ++j) acc[j] = _mm512_setzero_ps();
      const float* vb = vals + (size_t)mb * 16 * half;
      const uint8_t* mbp = meta + (size_t)mb * 16 * mcols;
      for (int c = 0; c < K / 16; ++c) {
        __m512i I[8]; __m512 V[8];
        transpose_vals(vb, half, c, V);
        __m512i mw = _mm512_i32gather_epi32(rowoff, (const void*)(mbp + 2 * c), 1);
        expand(_mm512_and_si512(mw, _mm512_set1_epi32(0xFFFF)), I);
#pragma GCC unroll 16
        for (int j = 0; j < NB; ++j) {
          const __m512 xv = _mm512_loadu_ps(X + (size_t)(n0 + j) * K + c * 16);
#pragma GCC unroll 8
          for (int s = 0; s < 8; ++s) acc[j] = _mm512_fmadd_ps(V[s], _mm512_permutexvar_ps(I[s], xv), acc[j]);
        }
      }
      for (int j = 0; j < NB; ++j) _mm512_storeu_ps(Y + (size_t)(n0 + j) * M + mb * 16, acc[j]);
    }
}

int main(int argc, char** argv) {
  if (argc > 1) M = atoi(argv[1]);
  if (argc > 2) K = atoi(argv[2]);
  if (argc > 3) N = atoi(argv[3]);
  const int half = K / 2, mcols = K / 8;
  std::vector<float> vals(M * half), X(N * K), P(K * 16), Y(N * M), Yref(N * M, 0.f), v16(M * half);
  std::vector<uint8_t> meta(M * mcols);
  std::vector<uint16_t> m16(M / 16 * K / 16 * 16);
  const int pairs[6][2] = {{0,1},{0,2},{0,3},{1,2},{1,3},{2,3}};
  for (auto& a : vals) a = rand() / (float)RAND_MAX - 0.5f;
  for (auto& a : X) a = rand() / (float)RAND_MAX - 0.5f;
  for (int m = 0; m < M; ++m) for (int g = 0; g < K / 4; ++g) {
    int p = rand() % 6; int nib = pairs[p][0] | (pairs[p][1] << 2);
    meta[m * mcols + g / 2] |= nib << (4 * (g & 1));
    for (int i = 0; i < 2; ++i) { int k = 4 * g + pairs[p][i];
      for (int n = 0; n < N; ++n) Yref[n * M + m] += vals[m * half + 2 * g + i] * X[n * K + k]; }
  }
  for (int k = 0; k < K; ++k) for (int n = 0; n < 16 && n < N; ++n) P[k * 16 + n] = X[n * K + k];
  for (int mb = 0; mb < M / 16; ++mb) for (int c = 0; c < K / 16; ++c) {
    size_t blk = (size_t)mb * (K / 16) + c;
    for (int r = 0; r < 16; ++r) {
      int m = mb * 16 + r;
      m16[blk * 16 + r] = meta[m * mcols + 2 * c] | (meta[m * mcols + 2 * c + 1] << 8);
      for (int s = 0; s < 8; ++s) v16[(blk * 8 + s) * 16 + r] = vals[m * half + 8 * c + s];
    }
  }
  auto check = [&](const char* nm) {
    double e = 0; for (int i = 0; i < N * M; ++i) e = fmax(e, fabs(Y[i] - Yref[i]));
    if (e > 1e-3) printf("%s WRONG err %g\n", nm, e); std::fill(Y.begin(), Y.end(), 0.f);
  };
  auto timeit = [&](const char* nm, auto fn) {
    fn(); check(nm);
    double best = 1e9;
    for (int rep = 0; rep < 7; ++rep) {
      int iters = 200;
      auto t0 = std::chrono::steady_clock::now();
      for (int it = 0; it < iters; ++it) fn();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters);
    }
    printf("%-10s %8.1f us  %.2f G vFMA/s\n", nm, best * 1e6, (double)M * half * N / 16 / best / 1e9);
  };
  if (N == 16) timeit("panel R12", [&] { panel<12>(vals.data(), meta.data(), P.data(), Y.data()); });
  if (N == 16) timeit("panel R8", [&] { panel<8>(vals.data(), meta.data(), P.data(), Y.data()); });
  timeit("permB NB8", [&] { permB<8>(v16.data(), m16.data(), X.data(), Y.data()); });
  if (N % 16 == 0) timeit("permB NB16", [&] { permB<16>(v16.data(), m16.data(), X.data(), Y.data()); });
  timeit("permC NB8", [&] { permC<8>(vals.data(), meta.data(), X.data(), Y.data()); });
  if (N % 16 == 0) timeit("permC NB16", [&] { permC<16>(vals.data(), meta.data(), X.data(), Y.data()); });
}
