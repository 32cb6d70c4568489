#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <vector>
#include <algorithm>
// CSR GEMV at 90% sparsity, M=K=4096: gather kernel vs scalar vs K-blocked permute (SELL-like).
int main() {
  const int M = 4096, K = 4096; const double dens = 0.1;
  std::vector<int> rowptr(M + 1); std::vector<int16_t> cols; std::vector<float> vals;
  srand(1);
  for (int m = 0; m < M; ++m) { rowptr[m] = cols.size(); for (int k = 0; k < K; ++k) if (rand() < dens * RAND_MAX) { cols.push_back(k); vals.push_back(1e-3f * (k % 7)); } }
  rowptr[M] = cols.size();
  const int64_t nnz = cols.size();
  std::vector<float> x(K), y(M);
  for (int k = 0; k < K; ++k) x[k] = 1e-2f * (k % 11);
  auto bench = [&](const char* name, auto f) {
    double best = 1e9;
    for (int r = 0; r < 20; ++r) { auto t0 = std::chrono::steady_clock::now(); f(); double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); best = std::min(best, s); }
    printf("%-10s %.3f ms  %.2f G nnz/s  y0=%g\n", name, best * 1e3, nnz / best / 1e9, y[5]);
  };
  bench("gather", [&] {
    for (int m = 0; m < M; ++m) {
      __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
      int i = rowptr[m], e = rowptr[m + 1];
      for (; i + 32 <= e; i += 32) {
        __m512i c0 = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i*)&cols[i]));
        __m512i c1 = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i*)&cols[i + 16]));
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(&vals[i]), _mm512_i32gather_ps(c0, x.data(), 4), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(&vals[i + 16]), _mm512_i32gather_ps(c1, x.data(), 4), a1);
      }
      float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
      for (; i < e; ++i) s += vals[i] * x[cols[i]];
      y[m] = s;
    }
  });
  bench("scalar", [&] {
    for (int m = 0; m < M; ++m) {
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0; int i = rowptr[m], e = rowptr[m + 1];
      for (; i + 4 <= e; i += 4) { s0 += vals[i] * x[cols[i]]; s1 += vals[i+1] * x[cols[i+1]]; s2 += vals[i+2] * x[cols[i+2]]; s3 += vals[i+3] * x[cols[i+3]]; }
      for (; i < e; ++i) s0 += vals[i] * x[cols[i]];
      y[m] = s0 + s1 + s2 + s3;
    }
  });
  // SELL-like: 16 rows per slice (lanes), K blocks of 64 columns (x block in 4 zmm);
  // per (slice, kblock): steps = max nnz of its rows in the block; per step per lane: value, idx(u8).
  const int KB = 64, S = 16;
  std::vector<int> sptr; std::vector<float> sv; std::vector<uint8_t> si; std::vector<int> ssteps;
  for (int m0 = 0; m0 < M; m0 += S) {
    std::vector<int> pos(S); for (int l = 0; l < S; ++l) pos[l] = rowptr[m0 + l];
    for (int kb = 0; kb < K; kb += KB) {
      std::vector<std::vector<std::pair<uint8_t, float>>> ent(S);
      for (int l = 0; l < S; ++l) { int &p = pos[l]; while (p < rowptr[m0 + l + 1] && cols[p] < kb + KB) { ent[l].push_back({(uint8_t)(cols[p] - kb), vals[p]}); ++p; } }
      int st = 0; for (auto& v : ent) st = std::max<int>(st, v.size());
      ssteps.push_back(st);
      for (int s = 0; s < st; ++s) for (int l = 0; l < S; ++l) { if (s < (int)ent[l].size()) { sv.push_back(ent[l][s].second); si.push_back(ent[l][s].first); } else { sv.push_back(0.f); si.push_back(0); } }
    }
  }
  printf("sell entries %zu (nnz %ld, padding %.0f%%)\n", sv.size(), (long)nnz, 100.0 * (sv.size() - nnz) / sv.size());
  bench("sell64", [&] {
    const float* v = sv.data(); const uint8_t* ix = si.data(); const int* st = ssteps.data();
    for (int m0 = 0; m0 < M; m0 += S) {
      __m512 acc = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps();
      for (int kb = 0; kb < K; kb += KB) {
        const __m512 x0 = _mm512_loadu_ps(&x[kb]), x1 = _mm512_loadu_ps(&x[kb + 16]);
        const __m512 x2 = _mm512_loadu_ps(&x[kb + 32]), x3 = _mm512_loadu_ps(&x[kb + 48]);
        const int n = *st++;
        for (int s = 0; s < n; ++s) {
          const __m512i id = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)ix));
          const __m512 lo = _mm512_permutex2var_ps(x0, id, x1);
          const __m512 hi = _mm512_permutex2var_ps(x2, id, x3);
          const __mmask16 k = _mm512_test_epi32_mask(id, _mm512_set1_epi32(32));
          const __m512 xv = _mm512_mask_blend_ps(k, lo, hi);
          if (s & 1) acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(v), xv, acc2); else acc = _mm512_fmadd_ps(_mm512_loadu_ps(v), xv, acc);
          v += 16; ix += 16;
        }
      }
      _mm512_storeu_ps(&y[m0], _mm512_add_ps(acc, acc2));
    }
  });
}
