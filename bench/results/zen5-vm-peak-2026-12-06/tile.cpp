#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <vector>
#include <algorithm>
static inline void transpose8x8(__m256* r) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20); r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20); r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31); r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31); r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
template <int TR>  // tile rows: 8 or 16
__attribute__((noinline)) void rows(const float* vals, const int16_t* cols, const int64_t* rp, int64_t M,
                                    const float* P, float* Y, int64_t ldy, int mode) {
  constexpr int64_t LDP = 32;
  alignas(64) float tile[16 * LDP];
  int64_t t0 = 0;
  for (int64_t m = 0; m < M; ++m) {
    __m512 a[4][2];
    for (int s = 0; s < 4; ++s) a[s][0] = a[s][1] = _mm512_setzero_ps();
    int64_t i = rp[m], e = rp[m + 1];
    for (; i + 4 <= e; i += 4) {
#pragma GCC unroll 4
      for (int s = 0; s < 4; ++s) {
        const __m512 w = _mm512_set1_ps(vals[i + s]);
        const float* p = P + int64_t(cols[i + s]) * LDP;
        a[s][0] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p), a[s][0]);
        a[s][1] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p + 16), a[s][1]);
      }
    }
    for (; i < e; ++i) { const __m512 w = _mm512_set1_ps(vals[i]); const float* p = P + int64_t(cols[i]) * LDP;
      a[0][0] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p), a[0][0]); a[0][1] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p + 16), a[0][1]); }
    for (int u = 0; u < 2; ++u)
      _mm512_store_ps(tile + (m - t0) * LDP + 16 * u, _mm512_add_ps(_mm512_add_ps(a[0][u], a[1][u]), _mm512_add_ps(a[2][u], a[3][u])));
    if (m + 1 - t0 == TR) {
      if (mode == 0) {  // no output (kernel only)
      } else {
        for (int h = 0; h < TR; h += 8)
          for (int j = 0; j < 32; j += 8) {
            __m256 r[8];
            for (int q = 0; q < 8; ++q) r[q] = _mm256_load_ps(tile + (h + q) * LDP + j);
            transpose8x8(r);
            if (mode == 2) for (int c = 0; c < 8; ++c) _mm256_stream_ps(Y + (j + c) * ldy + t0 + h, r[c]);
            else for (int c = 0; c < 8; ++c) _mm256_storeu_ps(Y + (j + c) * ldy + t0 + h, r[c]);
          }
      }
      t0 = m + 1;
    }
  }
}
int main() {
  const int64_t M = 1536, K = 384, N = 2048; const double d = 0.1;
  std::vector<int64_t> rp(M + 1, 0); std::vector<int16_t> cols; std::vector<float> vals;
  srand(1);
  for (int64_t m = 0; m < M; ++m) { for (int64_t k = 0; k < K; ++k) if (rand() < d * RAND_MAX) { cols.push_back(k); vals.push_back(1e-3f); } rp[m + 1] = cols.size(); }
  float* P = (float*)aligned_alloc(64, K * 32 * 4); for (int64_t i = 0; i < K * 32; ++i) P[i] = 1e-3f;
  float* Y = (float*)aligned_alloc(64, N * M * 4); for (int64_t i = 0; i < N * M; ++i) Y[i] = 0;
  for (int rep = 0; rep < 3; ++rep)
  for (int mode = 0; mode < 3; ++mode) for (int tr : {8, 16}) {
    double best = 1e9;
    for (int r = 0; r < 5; ++r) {
      auto t = std::chrono::steady_clock::now();
      for (int64_t pnl = 0; pnl < N / 32; ++pnl)
        (tr == 8 ? rows<8> : rows<16>)(vals.data(), cols.data(), rp.data(), M, P, Y + pnl * 32 * M, M, mode);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
    }
    printf("mode=%s tile=%d: %.3f ms, %.2f G vFMA/s\n", mode == 2 ? "stream" : mode ? "store" : "nostore", tr, best * 1e3, cols.size() * 2.0 * N / 32 / best / 1e9);
  }
}
