// values' gradient of 2:4: out[m, 2g+s] = G[m,:] . B[4g+p_s,:]. Variant A: tiles of 8 rows of one
// pair list per group. Variant B: group pairs (g, g+1): rows listed by g's pair; 6-row tiles;
// each row's g+1 B rows as per-row pointers (4 FMAs per G load).
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <cmath>
static const int PC[6][2] = {{0,1},{0,2},{0,3},{1,2},{1,3},{2,3}};
struct Prob { int M, K, N, G; std::vector<float> Gm, Bm; std::vector<uint8_t> pair; };
template <int R>
static void tileA(const Prob& p, const int* rows, const float* b0, const float* b1, float* r0, float* r1) {
  __m512 a0[R], a1[R]; const float* g[R];
  for (int r = 0; r < R; ++r) { a0[r] = a1[r] = _mm512_setzero_ps(); g[r] = p.Gm.data() + (int64_t)rows[r] * p.N; }
  for (int v = 0; v < p.N / 16; ++v) {
    const __m512 x0 = _mm512_loadu_ps(b0 + 16 * v), x1 = _mm512_loadu_ps(b1 + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) { const __m512 y = _mm512_loadu_ps(g[r] + 16 * v); a0[r] = _mm512_fmadd_ps(y, x0, a0[r]); a1[r] = _mm512_fmadd_ps(y, x1, a1[r]); }
  }
  for (int r = 0; r < R; ++r) { r0[r] = _mm512_reduce_add_ps(a0[r]); r1[r] = _mm512_reduce_add_ps(a1[r]); }
}
static int PFD = 0;
template <int R>
static void tileC(const Prob& p, const int* rows, const float* b0, const float* b1, float* r0, float* r1) {
  __m512 a0[R], a1[R]; const float* g[R];
  for (int r = 0; r < R; ++r) { a0[r] = a1[r] = _mm512_setzero_ps(); g[r] = p.Gm.data() + (int64_t)rows[r] * p.N; }
  for (int v = 0; v < p.N / 16; ++v) {
    const __m512 x0 = _mm512_loadu_ps(b0 + 16 * v), x1 = _mm512_loadu_ps(b1 + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) { _mm_prefetch((const char*)(g[r] + 16 * v + PFD), _MM_HINT_T0); const __m512 y = _mm512_loadu_ps(g[r] + 16 * v); a0[r] = _mm512_fmadd_ps(y, x0, a0[r]); a1[r] = _mm512_fmadd_ps(y, x1, a1[r]); }
  }
  for (int r = 0; r < R; ++r) { r0[r] = _mm512_reduce_add_ps(a0[r]); r1[r] = _mm512_reduce_add_ps(a1[r]); }
}
static bool USEC = false;
static void runA(const Prob& p, int block, std::vector<float>& out) {
  const int half = p.K / 2;
  std::vector<int> lists[6]; float r0[8], r1[8];
  for (int mb = 0; mb < p.M; mb += block) {
    int me = std::min(p.M, mb + block);
    for (int g = 0; g < p.G; ++g) {
      for (auto& l : lists) l.clear();
      for (int m = mb; m < me; ++m) lists[p.pair[(int64_t)m * p.G + g]].push_back(m);
      for (int q = 0; q < 6; ++q) {
        const float* b0 = p.Bm.data() + (int64_t)(4 * g + PC[q][0]) * p.N; const float* b1 = p.Bm.data() + (int64_t)(4 * g + PC[q][1]) * p.N;
        auto& l = lists[q]; size_t i = 0;
        for (; i + 8 <= l.size(); i += 8) { if (USEC) tileC<8>(p, &l[i], b0, b1, r0, r1); else tileA<8>(p, &l[i], b0, b1, r0, r1); for (int r = 0; r < 8; ++r) { out[(int64_t)l[i+r]*half + 2*g] = r0[r]; out[(int64_t)l[i+r]*half + 2*g+1] = r1[r]; } }
        for (; i < l.size(); ++i) { tileA<1>(p, &l[i], b0, b1, r0, r1); out[(int64_t)l[i]*half + 2*g] = r0[0]; out[(int64_t)l[i]*half + 2*g+1] = r1[0]; }
      }
    }
  }
}
template <int R>
static void tileB(const Prob& p, const int* rows, const float* b0, const float* b1, const float* const* c0, const float* const* c1, float* o) {
  __m512 a0[R], a1[R], a2[R], a3[R]; const float* g[R];
  for (int r = 0; r < R; ++r) { a0[r] = a1[r] = a2[r] = a3[r] = _mm512_setzero_ps(); g[r] = p.Gm.data() + (int64_t)rows[r] * p.N; }
  for (int v = 0; v < p.N / 16; ++v) {
    const __m512 x0 = _mm512_loadu_ps(b0 + 16 * v), x1 = _mm512_loadu_ps(b1 + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 y = _mm512_loadu_ps(g[r] + 16 * v);
      a0[r] = _mm512_fmadd_ps(y, x0, a0[r]); a1[r] = _mm512_fmadd_ps(y, x1, a1[r]);
      a2[r] = _mm512_fmadd_ps(y, _mm512_loadu_ps(c0[r] + 16 * v), a2[r]); a3[r] = _mm512_fmadd_ps(y, _mm512_loadu_ps(c1[r] + 16 * v), a3[r]);
    }
  }
  for (int r = 0; r < R; ++r) { o[4*r] = _mm512_reduce_add_ps(a0[r]); o[4*r+1] = _mm512_reduce_add_ps(a1[r]); o[4*r+2] = _mm512_reduce_add_ps(a2[r]); o[4*r+3] = _mm512_reduce_add_ps(a3[r]); }
}
static void runB(const Prob& p, int block, std::vector<float>& out) {
  const int half = p.K / 2;
  std::vector<int> lists[6]; float o[32]; const float* c0[8]; const float* c1[8];
  for (int mb = 0; mb < p.M; mb += block) {
    int me = std::min(p.M, mb + block);
    for (int g = 0; g + 1 < p.G; g += 2) {
      for (auto& l : lists) l.clear();
      for (int m = mb; m < me; ++m) lists[p.pair[(int64_t)m * p.G + g]].push_back(m);
      for (int q = 0; q < 6; ++q) {
        const float* b0 = p.Bm.data() + (int64_t)(4 * g + PC[q][0]) * p.N; const float* b1 = p.Bm.data() + (int64_t)(4 * g + PC[q][1]) * p.N;
        auto& l = lists[q];
        auto emit = [&](int n, int i) { for (int r = 0; r < n; ++r) { int64_t m = l[i+r]; float* d = &out[m*half + 2*g]; d[0]=o[4*r]; d[1]=o[4*r+1]; d[2]=o[4*r+2]; d[3]=o[4*r+3]; } };
        size_t i = 0;
        for (; i < l.size(); i += 6) {
          int n = std::min<size_t>(6, l.size() - i);
          for (int r = 0; r < n; ++r) { int qq = p.pair[(int64_t)l[i+r] * p.G + g + 1]; c0[r] = p.Bm.data() + (int64_t)(4*(g+1) + PC[qq][0]) * p.N; c1[r] = p.Bm.data() + (int64_t)(4*(g+1) + PC[qq][1]) * p.N; }
          switch (n) { case 6: tileB<6>(p,&l[i],b0,b1,c0,c1,o); break; case 5: tileB<5>(p,&l[i],b0,b1,c0,c1,o); break; case 4: tileB<4>(p,&l[i],b0,b1,c0,c1,o); break;
            case 3: tileB<3>(p,&l[i],b0,b1,c0,c1,o); break; case 2: tileB<2>(p,&l[i],b0,b1,c0,c1,o); break; default: tileB<1>(p,&l[i],b0,b1,c0,c1,o); }
          emit(n, i);
        }
      }
    }
  }
}
int main(int argc, char** argv) {
  Prob p; p.M = atoi(argv[1]); p.K = atoi(argv[2]); p.N = atoi(argv[3]); p.G = p.K / 4;
  int block = atoi(argv[4]); PFD = atoi(argv[5]);
  p.Gm.resize((size_t)p.M * p.N); p.Bm.resize((size_t)p.K * p.N); p.pair.resize((size_t)p.M * p.G);
  srand(1); for (auto& x : p.Gm) x = rand() / (float)RAND_MAX - 0.5f; for (auto& x : p.Bm) x = rand() / (float)RAND_MAX - 0.5f; for (auto& x : p.pair) x = rand() % 6;
  std::vector<float> oa((size_t)p.M * p.K / 2), ob(oa.size());
  std::vector<double> ta, tb;
  for (int rep = 0; rep < 9; ++rep) {
    USEC = false; auto t0 = std::chrono::steady_clock::now(); runA(p, block, oa); auto t1 = std::chrono::steady_clock::now(); USEC = true; runA(p, block, ob); auto t2 = std::chrono::steady_clock::now();
    ta.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count()); tb.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  double md = 0; for (size_t i = 0; i < oa.size(); ++i) md = std::max(md, (double)std::fabs(oa[i] - ob[i]));
  std::sort(ta.begin(), ta.end()); std::sort(tb.begin(), tb.end());
  double fmas = (double)p.M * p.K / 2 * p.N / 16;
  printf("M%d K%d N%d block %d: A %.2f ms (%.2f G vFMA/s)  C %.2f ms (%.2f)  A/C %.2fx  maxdiff %.1e\n", p.M, p.K, p.N, block, ta[4], fmas / ta[4] / 1e6, tb[4], fmas / tb[4] / 1e6, ta[4] / tb[4], md);
}
