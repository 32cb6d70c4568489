// 2:4 GEMV from memory: variants of prefetch / tile shape. g++ -O3 -march=native -fopenmp
#include <immintrin.h>
#include <omp.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <algorithm>
#include <cstdint>
static inline __m512i perm_indices(uint32_t word) {
  const __m512i shifts = _mm512_setr_epi32(0,2,4,6,8,10,12,14,16,18,20,22,24,26,28,30);
  const __m512i base = _mm512_setr_epi32(0,0,4,4,8,8,12,12,16,16,20,20,24,24,28,28);
  const __m512i pos = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)word), shifts), _mm512_set1_epi32(3));
  return _mm512_add_epi32(pos, base);
}
struct P { const float* v; const uint8_t* mt; const float* x; float* y; int64_t M, K, half, mcols; };
// variant: R rows per tile; pf: 0 none, 1 next tile into L2 spread over steps, 2 per-row T0 at dist, 3 next-next tile
template <int R>
static void tile(const P& p, int64_t m, int pf, int64_t dist) {
  const int64_t steps = p.K / 32;
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  const float* v = p.v + m * p.half; const uint8_t* mt = p.mt + m * p.mcols;
  const char* nv = (const char*)(v + (pf == 3 ? 2 : 1) * R * p.half);
  const char* nm = (const char*)(mt + (pf == 3 ? 2 : 1) * R * p.mcols);
  const int64_t lines_v = R * p.half * 4 / 64, lines_m = R * p.mcols / 64;
  const int64_t per_v = (lines_v + steps - 1) / steps, per_m = (lines_m + steps - 1) / steps;
  bool more = m + (pf == 3 ? 3 : 2) * R <= p.M;
  int64_t dv = 0, dm = 0;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t j = 4 * s;
    const __m512 xlo = _mm512_loadu_ps(p.x + 8 * j), xhi = _mm512_loadu_ps(p.x + 8 * j + 16);
    if ((pf == 1 || pf == 3) && more) {
      for (int64_t e = dv + per_v; dv < e && dv < lines_v; ++dv) _mm_prefetch(nv + 64 * dv, _MM_HINT_T1);
      for (int64_t e = dm + per_m; dm < e && dm < lines_m; ++dm) _mm_prefetch(nm + 64 * dm, _MM_HINT_T1);
    }
    if (pf == 4 && more) {
      for (int64_t e = dv + per_v; dv < e && dv < lines_v; dv += 2) _mm_prefetch(nv + 64 * dv, _MM_HINT_T1);
      for (int64_t e = dm + per_m; dm < e && dm < lines_m; ++dm) _mm_prefetch(nm + 64 * dm, _MM_HINT_T1);
    }
    if (pf == 5 && more) {
      for (int64_t e = dv + per_v; dv < e && dv < lines_v; ++dv) _mm_prefetch(nv + 64 * dv, _MM_HINT_T0);
      for (int64_t e = dm + per_m; dm < e && dm < lines_m; ++dm) _mm_prefetch(nm + 64 * dm, _MM_HINT_T0);
    }
    if (pf == 6 && more) {
      for (int64_t e = dv + per_v; dv < e && dv < lines_v; ++dv) _mm_prefetch(nv + 64 * dv, _MM_HINT_T2);
      for (int64_t e = dm + per_m; dm < e && dm < lines_m; ++dm) _mm_prefetch(nm + 64 * dm, _MM_HINT_T2);
    }
    if (pf == 7 && more && s < 4) {  // whole next tile's first lines only
      for (int64_t e = dv + per_v; dv < e && dv < lines_v; ++dv) _mm_prefetch(nv + 64 * dv, _MM_HINT_T1);
    }
    for (int r = 0; r < R; ++r) {
      if (pf == 2) _mm_prefetch((const char*)(v + r * p.half + 4 * j) + dist, _MM_HINT_T0);
      uint32_t word; std::memcpy(&word, mt + r * p.mcols + j, 4);
      acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(v + r * p.half + 4 * j), _mm512_permutex2var_ps(xlo, perm_indices(word), xhi), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) p.y[m + r] = _mm512_reduce_add_ps(acc[r]);
}
template <int R>
static void run(const P& p, int pf, int64_t dist, int nt) {
  // 8 parts per thread-count... use contiguous halves per thread, like a static split
  #pragma omp parallel num_threads(nt)
  {
    int t = omp_get_thread_num(), n = omp_get_num_threads();
    int64_t m0 = p.M * t / n / R * R, m1 = p.M * (t + 1) / n / R * R;
    for (int64_t m = m0; m < m1; m += R) tile<R>(p, m, pf, dist);
  }
}
static float sum_stream(const float* a, int64_t n, int nt) {
  float tot = 0;
  #pragma omp parallel num_threads(nt) reduction(+:tot)
  {
    int t = omp_get_thread_num(), k = omp_get_num_threads();
    int64_t i0 = n * t / k / 16 * 16, i1 = n * (t + 1) / k / 16 * 16;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    for (int64_t i = i0; i < i1; i += 32) { a0 = _mm512_add_ps(a0, _mm512_loadu_ps(a + i)); a1 = _mm512_add_ps(a1, _mm512_loadu_ps(a + i + 16)); }
    tot += _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  }
  return tot;
}
int main(int argc, char** argv) {
  int64_t M = atoll(argv[1]), K = atoll(argv[2]); int nt = atoi(argv[3]);
  int nw = argc > 4 ? atoi(argv[4]) : 6;  // weights rotated so the set exceeds L3
  int64_t half = K / 2, mcols = K / 8;
  std::vector<float*> vs; std::vector<uint8_t*> ms;
  for (int w = 0; w < nw; ++w) {
    float* v = (float*)aligned_alloc(64, M * half * 4); uint8_t* mt = (uint8_t*)aligned_alloc(64, M * mcols);
    for (int64_t i = 0; i < M * half; ++i) v[i] = (float)((i * 7 + w) % 13) * 0.1f;
    for (int64_t i = 0; i < M * mcols; ++i) { int a = (i * 5 + w) % 6; static const uint8_t nib[6] = {0x4,0x8,0xC,0x9,0xD,0xE}; mt[i] = nib[a] | (nib[(a+1)%6] << 4); }
    vs.push_back(v); ms.push_back(mt);
  }
  std::vector<float> x(K), y(M);
  for (int64_t i = 0; i < K; ++i) x[i] = (i % 7) * 0.25f;
  struct V { const char* name; int R, pf; int64_t dist; };
  V vars[] = {{"R4 next-tile T1 (today)",4,1,0},{"R4 none",4,0,0},{"R4 next-next T1",4,3,0},{"R4 rowT0 2K",4,2,2048},{"R4 rowT0 4K",4,2,4096},
              {"R1 none",1,0,0},{"R1 rowT0 2K",1,2,2048},{"R1 rowT0 4K",1,2,4096},{"R2 next-tile",2,1,0},{"R8 next-tile",8,1,0},{"R4 rowT0 1K",4,2,1024},{"R4 next half-lines",4,4,0},{"R4 next T0",4,5,0},{"R4 next T2",4,6,0}};
  int nv = sizeof(vars) / sizeof(V);
  std::vector<std::vector<double>> ts(nv + 1);
  size_t fb = (size_t)M * half * 4;
  for (int rep = 0; rep < (argc > 5 ? atoi(argv[5]) : 200); ++rep)
    for (int k = 0; k <= nv; ++k)
      for (int w = 0; w < nw; ++w) {
        P p{vs[w], ms[w], x.data(), y.data(), M, K, half, mcols};
        auto t0 = std::chrono::steady_clock::now();
        if (k == nv) { volatile float s = sum_stream(vs[w], M * half, nt); (void)s; }
        else switch (vars[k].R) { case 1: run<1>(p, vars[k].pf, vars[k].dist, nt); break; case 2: run<2>(p, vars[k].pf, vars[k].dist, nt); break;
          case 4: run<4>(p, vars[k].pf, vars[k].dist, nt); break; default: run<8>(p, vars[k].pf, vars[k].dist, nt); }
        auto t1 = std::chrono::steady_clock::now();
        ts[k].push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      }
  double bytes = fb + (double)M * mcols;
  for (int k = 0; k <= nv; ++k) {
    auto& t = ts[k]; std::sort(t.begin(), t.end());
    printf("%-26s %8.1f us  p25 %8.1f  %5.1f GB/s\n", k == nv ? "sum of values (stream)" : vars[k].name, t[t.size()/2], t[t.size()/4], bytes / t[t.size()/2] / 1e3);
  }
}
