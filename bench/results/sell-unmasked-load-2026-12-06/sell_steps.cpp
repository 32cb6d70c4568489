// SELL-16x64 GEMV: today's steps (a lane's entries in column order; a step mixes both 32-column
// halves: two vpermt2ps + a blend) against "half-split" steps (a group's steps that hold
// columns 0-31 first, then those that hold 32-63: one vpermt2ps per step, no blend, more steps).
// g++ -O3 -march=native sellsplit.cpp -o sellsplit && ./sellsplit M K density
#include <immintrin.h>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>
#include <algorithm>

struct Sell {
  std::vector<float> v;
  std::vector<uint8_t> ix;      // steps x 16
  std::vector<int64_t> off;     // (G+1) x 3: steps, values, first hi step (split only)
};

// rows[m] = sorted columns of row m.
Sell build(const std::vector<std::vector<int>>& cols, const std::vector<std::vector<float>>& vals,
           int M, int K, bool split) {
  Sell s;
  const int S = (M + 15) / 16, KB = (K + 63) / 64;
  s.off.assign(3, 0);
  int64_t steps = 0, nv = 0;
  for (int sl = 0; sl < S; ++sl)
    for (int b = 0; b < KB; ++b) {
      // per lane: entries in block b, split into lo / hi
      std::vector<std::vector<std::pair<int, float>>> lo(16), hi(16);
      for (int l = 0; l < 16; ++l) {
        const int m = 16 * sl + l;
        if (m >= M) continue;
        for (size_t t = 0; t < cols[m].size(); ++t) {
          const int c = cols[m][t];
          if (c / 64 != b) continue;
          (c % 64 < 32 ? lo : hi)[l].push_back({c % 64, vals[m][t]});
        }
      }
      auto emit = [&](const std::vector<std::vector<std::pair<int, float>>>& a, int n) {
        for (int t = 0; t < n; ++t) {
          for (int l = 0; l < 16; ++l) {
            if (t < (int)a[l].size()) {
              s.ix.push_back((uint8_t)a[l][t].first);
              s.v.push_back(a[l][t].second);
              ++nv;
            } else {
              s.ix.push_back(255);
            }
          }
          ++steps;
        }
      };
      int64_t first_hi;
      if (split) {
        size_t nlo = 0, nhi = 0;
        for (int l = 0; l < 16; ++l) { nlo = std::max(nlo, lo[l].size()); nhi = std::max(nhi, hi[l].size()); }
        emit(lo, (int)nlo);
        first_hi = steps;
        emit(hi, (int)nhi);
      } else {
        std::vector<std::vector<std::pair<int, float>>> all(16);
        size_t n = 0;
        for (int l = 0; l < 16; ++l) {
          all[l] = lo[l];
          all[l].insert(all[l].end(), hi[l].begin(), hi[l].end());
          n = std::max(n, all[l].size());
        }
        emit(all, (int)n);
        first_hi = steps;
      }
      s.off.push_back(steps);
      s.off.push_back(nv);
      s.off.push_back(first_hi);
    }
  return s;
}

static inline __m512 expand_vals(const float* v, int64_t* p, __mmask16 real) {
  const int cnt = __builtin_popcount((unsigned)real);
  const __m512 r = _mm512_maskz_expand_ps(real, _mm512_maskz_loadu_ps((__mmask16)((1u << cnt) - 1u), v + *p));
  *p += cnt;
  return r;
}

// today's step: both halves
__attribute__((noinline)) void gemv_mixed(const Sell& s, const float* x, float* y, int M, int K) {
  const int S = (M + 15) / 16, KB = (K + 63) / 64;
  const __m512i lim = _mm512_set1_epi32(64);
  for (int sl = 0; sl < S; ++sl) {
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int b = 0; b < KB; ++b) {
      const int64_t g = (int64_t)sl * KB + b;
      const float* xb = x + 64 * b;
      const __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16), x2 = _mm512_loadu_ps(xb + 32), x3 = _mm512_loadu_ps(xb + 48);
      int64_t t = s.off[3 * g], p = s.off[3 * g + 1];
      const int64_t e = s.off[3 * g + 3];
      auto STEP = [&](int u) {
        const __m512i id = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(s.ix.data() + 16 * t)));
        const __mmask16 real = _mm512_cmplt_epu32_mask(id, lim);
        const __m512 vals = expand_vals(s.v.data(), &p, real);
        const __m512 lo = _mm512_permutex2var_ps(x0, id, x1);
        const __m512 hi = _mm512_permutex2var_ps(x2, id, x3);
        const __m512 xv = _mm512_mask_blend_ps(_mm512_test_epi32_mask(id, _mm512_set1_epi32(32)), lo, hi);
        a[u] = _mm512_mask3_fmadd_ps(vals, xv, a[u], real);
        ++t;
      };
      for (; t + 4 <= e;) { STEP(0); STEP(1); STEP(2); STEP(3); }
      while (t < e) STEP(0);
    }
    _mm512_storeu_ps(y + 16 * sl, _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
  }
}

// today's step: both halves
template <int V> __attribute__((noinline)) void gemv_mixed_v(const Sell& s, const float* x, float* y, int M, int K) {
  const int S = (M + 15) / 16, KB = (K + 63) / 64;
  const __m512i lim = _mm512_set1_epi32(64);
  for (int sl = 0; sl < S; ++sl) {
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int b = 0; b < KB; ++b) {
      const int64_t g = (int64_t)sl * KB + b;
      const float* xb = x + 64 * b;
      const __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16), x2 = _mm512_loadu_ps(xb + 32), x3 = _mm512_loadu_ps(xb + 48);
      int64_t t = s.off[3 * g], p = s.off[3 * g + 1];
      const int64_t e = s.off[3 * g + 3];
      auto STEP = [&](int u) {
        const __m512i id = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(s.ix.data() + 16 * t)));
        const __mmask16 real = _mm512_cmplt_epu32_mask(id, lim);
        __m512 vals;
        if (V == 1) { vals = _mm512_loadu_ps(s.v.data() + p); p += __builtin_popcount((unsigned)real); }
        else if (V == 2) { const int cnt = __builtin_popcount((unsigned)real); vals = _mm512_maskz_loadu_ps((__mmask16)((1u << cnt) - 1u), s.v.data() + p); p += cnt; }
        else { vals = _mm512_maskz_expand_ps(real, _mm512_loadu_ps(s.v.data() + p)); p += __builtin_popcount((unsigned)real); }
        const __m512 lo = _mm512_permutex2var_ps(x0, id, x1);
        const __m512 hi = _mm512_permutex2var_ps(x2, id, x3);
        const __m512 xv = _mm512_mask_blend_ps(_mm512_test_epi32_mask(id, _mm512_set1_epi32(32)), lo, hi);
        a[u] = _mm512_mask3_fmadd_ps(vals, xv, a[u], real);
        ++t;
      };
      for (; t + 4 <= e;) { STEP(0); STEP(1); STEP(2); STEP(3); }
      while (t < e) STEP(0);
    }
    _mm512_storeu_ps(y + 16 * sl, _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
  }
}

// split steps: lo steps use (x0, x1), hi steps (x2, x3)
__attribute__((noinline)) void gemv_split(const Sell& s, const float* x, float* y, int M, int K) {
  const int S = (M + 15) / 16, KB = (K + 63) / 64;
  const __m512i lim = _mm512_set1_epi32(64);
  for (int sl = 0; sl < S; ++sl) {
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int b = 0; b < KB; ++b) {
      const int64_t g = (int64_t)sl * KB + b;
      const float* xb = x + 64 * b;
      int64_t t = s.off[3 * g], p = s.off[3 * g + 1];
      const int64_t h = s.off[3 * g + 5], e = s.off[3 * g + 3];
      for (int half = 0; half < 2; ++half) {
        const __m512 xa = _mm512_loadu_ps(xb + 32 * half), xc = _mm512_loadu_ps(xb + 32 * half + 16);
        const int64_t end = half ? e : h;
          auto STEP = [&](int u) {
          const __m512i id = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(s.ix.data() + 16 * t)));
          const __mmask16 real = _mm512_cmplt_epu32_mask(id, lim);
          const __m512 vals = expand_vals(s.v.data(), &p, real);
          a[u] = _mm512_mask3_fmadd_ps(vals, _mm512_permutex2var_ps(xa, id, xc), a[u], real);
          ++t;
        };
        for (; t + 4 <= end;) { STEP(0); STEP(1); STEP(2); STEP(3); }
        while (t < end) STEP(0);
      }
    }
    _mm512_storeu_ps(y + 16 * sl, _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
  }
}

int main(int argc, char** argv) {
  const int M = argc > 1 ? atoi(argv[1]) : 4096, K = argc > 2 ? atoi(argv[2]) : 4096;
  const double dens = argc > 3 ? atof(argv[3]) : 0.1;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> U(0, 1);
  std::vector<std::vector<int>> cols(M);
  std::vector<std::vector<float>> vals(M);
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k)
      if (U(rng) < dens) { cols[m].push_back(k); vals[m].push_back(U(rng) - 0.5f); }
  std::vector<float> x(K + 64, 0.f);
  for (int k = 0; k < K; ++k) x[k] = U(rng) - 0.5f;
  std::vector<float> ref(M, 0.f);
  for (int m = 0; m < M; ++m) for (size_t t = 0; t < cols[m].size(); ++t) ref[m] += vals[m][t] * x[cols[m][t]];
  Sell a = build(cols, vals, M, K, false), b = build(cols, vals, M, K, true);
  const int64_t nnz = a.v.size();
  printf("%dx%d density %.2f nnz %ld: mixed steps %zu (%.2f B idx/entry), split steps %zu (%.2f B idx/entry)\n", M, K, dens, (long)nnz,
         a.ix.size() / 16, (double)a.ix.size() / nnz, b.ix.size() / 16, (double)b.ix.size() / nnz);
  std::vector<float> ya(M + 16), yb(M + 16);
  gemv_mixed(a, x.data(), ya.data(), M, K);
  gemv_split(b, x.data(), yb.data(), M, K);
  double ea = 0, eb = 0;
  for (int m = 0; m < M; ++m) { ea = std::max(ea, (double)fabsf(ya[m] - ref[m])); eb = std::max(eb, (double)fabsf(yb[m] - ref[m])); }
  printf("max err mixed %.2e split %.2e\n", ea, eb);
  for (int rep = 0; rep < 3; ++rep) {
    double best[2] = {1e9, 1e9};
    for (int it = 0; it < 30; ++it) {
      for (int w = 0; w < 2; ++w) {
        auto t0 = std::chrono::steady_clock::now();
        for (int r = 0; r < 5; ++r) (w ? gemv_split(b, x.data(), yb.data(), M, K) : gemv_mixed(a, x.data(), ya.data(), M, K));
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 5;
        best[w] = std::min(best[w], dt);
      }
    }
    double bv[4] = {1e9, 1e9, 1e9, 1e9};
    for (int it = 0; it < 30; ++it) for (int w = 1; w < 4; ++w) {
      auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < 5; ++r) { if (w == 1) gemv_mixed_v<1>(a, x.data(), ya.data(), M, K); else if (w == 2) gemv_mixed_v<2>(a, x.data(), ya.data(), M, K); else gemv_mixed_v<3>(a, x.data(), ya.data(), M, K); }
      bv[w] = std::min(bv[w], std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 5);
    }
    printf("variants (wrong sums, timing only): plain load %.1f us, masked load no expand %.1f us, expand of unmasked load %.1f us\n", bv[1]*1e6, bv[2]*1e6, bv[3]*1e6);
    printf("warm, 1 thread: mixed %.1f us (%.2f entries/ns)  split %.1f us (%.2f entries/ns)  mixed/split %.2fx\n",
           best[0] * 1e6, nnz / best[0] / 1e9, best[1] * 1e6, nnz / best[1] / 1e9, best[0] / best[1]);
  }
}
