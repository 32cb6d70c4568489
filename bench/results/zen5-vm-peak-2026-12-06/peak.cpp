#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <algorithm>
template <int MODE> __attribute__((noinline)) float run(const float* buf, int64_t iters) {
  __m512 a[12]; for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(0.f);
  const __m512 w = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
    const float* p = buf + (it & 15) * 16 * 12;
    const __m512 vv = _mm512_loadu_ps(p + 5);
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) {
      if (MODE == 0) a[i] = _mm512_fmadd_ps(w, a[i], w);
      else if (MODE == 1) a[i] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p + 16 * i), a[i]);
      else if (MODE == 2) a[i] = _mm512_fmadd_ps(_mm512_set1_ps(p[i * 16 + 3]), _mm512_loadu_ps(p + 16 * i), a[i]);
      else if (MODE == 4) a[i] = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_set1_epi32(i), vv), _mm512_loadu_ps(p + 16 * i), a[i]);
      else if (MODE == 5) a[i] = _mm512_fmadd_ps(_mm512_broadcastss_ps(_mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_set1_epi32(i), vv))), _mm512_loadu_ps(p + 16 * i), a[i]);
      else { __m256 x = _mm256_loadu_ps(p + 8 * i); a[i] = _mm512_castps256_ps512(_mm256_fmadd_ps(_mm256_set1_ps(1e-7f), x, _mm512_castps512_ps256(a[i]))); }
    }

  }
  __m512 s = a[0]; for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, a[i]);
  return _mm512_reduce_add_ps(s);
}
template <int MODE> void b(const char* n, const float* buf) {
  int64_t iters = 20000000; double best = 1e9; float r = 0;
  for (int k = 0; k < 5; ++k) { auto t0 = std::chrono::steady_clock::now(); r += run<MODE>(buf, iters);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()); }
  printf("%s: %.2f G vFMA/s (%g)\n", n, iters * 12 / best / 1e9, r);
}
int main() { float* buf = (float*)aligned_alloc(64, 64 * 16 * 12 * 4); for (int i = 0; i < 64 * 16 * 12; ++i) buf[i] = 1e-3f;
  b<0>("reg-reg fma", buf); b<1>("fma + load", buf); b<2>("fma + load + bcast", buf); b<3>("ymm fma + load", buf); b<4>("fma + load + vpermps bcast", buf); }
