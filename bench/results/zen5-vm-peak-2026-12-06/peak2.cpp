#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <algorithm>
template <int C, bool Z> __attribute__((noinline)) float run(long iters) {
  __m512 a[C]; __m256 b[C]; for (int i = 0; i < C; ++i) { a[i] = _mm512_set1_ps(i); b[i] = _mm256_set1_ps(i); }
  const __m512 w = _mm512_set1_ps(0.999f); const __m256 v = _mm256_set1_ps(0.999f);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < C; ++i) { if (Z) a[i] = _mm512_fmadd_ps(w, a[i], w); else b[i] = _mm256_fmadd_ps(v, b[i], v); }
  }
  float s = 0; for (int i = 0; i < C; ++i) s += Z ? _mm512_reduce_add_ps(a[i]) : _mm256_cvtss_f32(b[i]);
  return s;
}
template <int C, bool Z> void b(const char* n) { long iters = 100000000; double best = 1e9; float r = 0;
  for (int k = 0; k < 3; ++k) { auto t0 = std::chrono::steady_clock::now(); r += run<C, Z>(iters);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()); }
  printf("%s chains=%d: %.2f G FMA/s (%.2f per cycle at 3.6 GHz) %g\n", n, C, iters * C / best / 1e9, iters * C / best / 3.6e9, r); }
int main() { b<8, true>("zmm"); b<16, true>("zmm"); b<24, true>("zmm"); b<8, false>("ymm"); b<16, false>("ymm"); }
