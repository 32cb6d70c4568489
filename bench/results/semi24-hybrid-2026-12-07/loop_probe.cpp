#include <immintrin.h>
#include <chrono>
#include <cstdio>
alignas(64) static float buf[64 * 16 * 16 + 64];
__attribute__((noinline)) __m512 fma_only(long iters, __m512 x, __m512 y) {
  __m512 r[16]; for (int i = 0; i < 16; ++i) r[i] = _mm512_set1_ps(i);
  for (long it = 0; it < iters; ++it)
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = _mm512_fmadd_ps(r[i], x, y);
  __m512 s = r[0]; for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, r[i]); return s;
}
__attribute__((noinline)) __m512 perm_only(long iters, __m512i idx) {
  __m512 r[16]; for (int i = 0; i < 16; ++i) r[i] = _mm512_set1_ps(i);
  for (long it = 0; it < iters; ++it)
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = _mm512_permutexvar_ps(idx, r[i]);
  __m512 s = r[0]; for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, r[i]); return s;
}
// LOR-like: 16 distinct perms of 4 loaded x's by 4 idx, each feeding an FMA
__attribute__((noinline)) __m512 perm_fma(long iters, const __m512i* ix, __m512 v) {
  __m512 r[16]; for (int i = 0; i < 16; ++i) r[i] = _mm512_set1_ps(i);
  __m512i id[4]; for (int i = 0; i < 4; ++i) id[i] = ix[i];
  for (long it = 0; it < iters; ++it) {
    const float* p = buf + (it & 63) * 64;
#pragma GCC unroll 4
    for (int b = 0; b < 4; ++b) {
      const __m512 x = _mm512_loadu_ps(p + 16 * b);
#pragma GCC unroll 4
      for (int a = 0; a < 4; ++a) r[4*b+a] = _mm512_fmadd_ps(v, _mm512_permutexvar_ps(id[a], x), r[4*b+a]);
    }
  }
  __m512 s = r[0]; for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, r[i]); return s;
}
// panel-like: bcast from memory * B row from memory
__attribute__((noinline)) __m512 load_fma(long iters, __m512 w0) {
  __m512 r[16]; for (int i = 0; i < 16; ++i) r[i] = _mm512_set1_ps(i);
  for (long it = 0; it < iters; ++it) {
    const float* p = buf + (it & 63) * 16 * 4;
    const float* q = buf + ((it * 7) & 1023);
#pragma GCC unroll 4
    for (int rr = 0; rr < 4; ++rr) {
      const __m512 w = _mm512_set1_ps(q[rr]);
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) r[4*rr+u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p + 16 * u + 1024 * rr), r[4*rr+u]);
    }
  }
  __m512 s = r[0]; for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, r[i]); return s;
}
// hybrid: 8 LOR-like + 8 panel-like per iteration
__attribute__((noinline)) __m512 hybrid(long iters, const __m512i* ix, __m512 v) {
  __m512 r[16]; for (int i = 0; i < 16; ++i) r[i] = _mm512_set1_ps(i);
  __m512i id[4]; for (int i = 0; i < 4; ++i) id[i] = ix[i];
  for (long it = 0; it < iters; ++it) {
    const float* p = buf + (it & 63) * 64;
    const float* q = buf + ((it * 7) & 1023);
#pragma GCC unroll 2
    for (int b = 0; b < 2; ++b) {
      const __m512 x = _mm512_loadu_ps(p + 16 * b);
#pragma GCC unroll 4
      for (int a = 0; a < 4; ++a) r[4*b+a] = _mm512_fmadd_ps(v, _mm512_permutexvar_ps(id[a], x), r[4*b+a]);
    }
#pragma GCC unroll 2
    for (int rr = 0; rr < 2; ++rr) {
      const __m512 w = _mm512_set1_ps(q[rr]);
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) r[8+4*rr+u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p + 16 * u + 1024 * rr), r[8+4*rr+u]);
    }
  }
  __m512 s = r[0]; for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, r[i]); return s;
}
int main() {
  for (auto& f : buf) f = 1e-3f;
  __m512i ix[4];
  for (int i = 0; i < 4; ++i) ix[i] = _mm512_add_epi32(_mm512_set_epi32(0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15), _mm512_set1_epi32(i));
  const long iters = 20000000;
  __m512 sink = _mm512_setzero_ps();
  auto t = [&](const char* name, auto f, double fmas) {
    double best = 1e9;
    for (int k = 0; k < 5; ++k) {
      auto t0 = std::chrono::steady_clock::now(); sink = _mm512_add_ps(sink, f());
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (s < best) best = s;
    }
    printf("%-10s %.3f ns/iter  %.2f G vec-op/s\n", name, best / iters * 1e9, fmas * iters / best / 1e9);
  };
  t("fma", [&] { return fma_only(iters, _mm512_set1_ps(0.999f), _mm512_set1_ps(1e-3f)); }, 16);
  t("perm", [&] { return perm_only(iters, ix[1]); }, 16);
  t("perm_fma", [&] { return perm_fma(iters, ix, _mm512_set1_ps(0.5f)); }, 16);
  t("load_fma", [&] { return load_fma(iters, _mm512_set1_ps(0.5f)); }, 16);
  t("hybrid", [&] { return hybrid(iters, ix, _mm512_set1_ps(0.5f)); }, 16);
  printf("%f\n", _mm512_reduce_add_ps(sink));
}
