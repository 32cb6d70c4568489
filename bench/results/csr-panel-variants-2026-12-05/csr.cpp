#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <vector>
#include <cstdint>
#include <cstdlib>
#include <cmath>
#include <algorithm>
static int M = 1536, K = 384, N = 2048;
// CSR: rowptr, cols (int16), vals. P: panel [K][W] for W columns. Y tile rows [M][W].
template <int NV>
__attribute__((noinline)) void rows(const int* rowptr, const int16_t* cols, const float* vals, const float* P, float* Y) {
  constexpr int LDP = 16 * NV;
  for (int m = 0; m < M; ++m) {
    __m512 a0[NV], a1[NV], a2[NV], a3[NV];
    for (int u = 0; u < NV; ++u) a0[u] = a1[u] = a2[u] = a3[u] = _mm512_setzero_ps();
    int i = rowptr[m]; const int e = rowptr[m + 1];
    for (; i + 4 <= e; i += 4) {
      const __m512 w0 = _mm512_set1_ps(vals[i]), w1 = _mm512_set1_ps(vals[i+1]), w2 = _mm512_set1_ps(vals[i+2]), w3 = _mm512_set1_ps(vals[i+3]);
      const float *p0 = P + cols[i] * LDP, *p1 = P + cols[i+1] * LDP, *p2 = P + cols[i+2] * LDP, *p3 = P + cols[i+3] * LDP;
#pragma GCC unroll 4
      for (int u = 0; u < NV; ++u) {
        a0[u] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(p0 + 16*u), a0[u]);
        a1[u] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(p1 + 16*u), a1[u]);
        a2[u] = _mm512_fmadd_ps(w2, _mm512_loadu_ps(p2 + 16*u), a2[u]);
        a3[u] = _mm512_fmadd_ps(w3, _mm512_loadu_ps(p3 + 16*u), a3[u]);
      }
    }
    for (; i < e; ++i) { const __m512 w0 = _mm512_set1_ps(vals[i]); const float* p0 = P + cols[i] * LDP;
      for (int u = 0; u < NV; ++u) a0[u] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(p0 + 16*u), a0[u]); }
    for (int u = 0; u < NV; ++u) _mm512_storeu_ps(Y + (size_t)m * LDP + 16*u, _mm512_add_ps(_mm512_add_ps(a0[u], a1[u]), _mm512_add_ps(a2[u], a3[u])));
  }
}

// B: byte offsets precomputed (int32)
template <int NV>
__attribute__((noinline)) void rowsB(const int* rowptr, const int32_t* offs, const float* vals, const float* P, float* Y) {
  constexpr int LDP = 16 * NV;
  const char* Pc = (const char*)P;
  for (int m = 0; m < M; ++m) {
    __m512 a0[NV], a1[NV], a2[NV], a3[NV];
    for (int u = 0; u < NV; ++u) a0[u] = a1[u] = a2[u] = a3[u] = _mm512_setzero_ps();
    int i = rowptr[m]; const int e = rowptr[m + 1];
    for (; i + 4 <= e; i += 4) {
      const __m512 w0 = _mm512_set1_ps(vals[i]), w1 = _mm512_set1_ps(vals[i+1]), w2 = _mm512_set1_ps(vals[i+2]), w3 = _mm512_set1_ps(vals[i+3]);
      const float *p0 = (const float*)(Pc + offs[i]), *p1 = (const float*)(Pc + offs[i+1]), *p2 = (const float*)(Pc + offs[i+2]), *p3 = (const float*)(Pc + offs[i+3]);
#pragma GCC unroll 4
      for (int u = 0; u < NV; ++u) {
        a0[u] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(p0 + 16*u), a0[u]);
        a1[u] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(p1 + 16*u), a1[u]);
        a2[u] = _mm512_fmadd_ps(w2, _mm512_loadu_ps(p2 + 16*u), a2[u]);
        a3[u] = _mm512_fmadd_ps(w3, _mm512_loadu_ps(p3 + 16*u), a3[u]);
      }
    }
    for (; i < e; ++i) { const __m512 w0 = _mm512_set1_ps(vals[i]); const float* p0 = (const float*)(Pc + offs[i]);
      for (int u = 0; u < NV; ++u) a0[u] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(p0 + 16*u), a0[u]); }
    for (int u = 0; u < NV; ++u) _mm512_storeu_ps(Y + (size_t)m * LDP + 16*u, _mm512_add_ps(_mm512_add_ps(a0[u], a1[u]), _mm512_add_ps(a2[u], a3[u])));
  }
}
// D: K chunks of KC columns; chunk rowptr crp[m*(nc+1) + c]
template <int NV>
__attribute__((noinline)) void rowsD(const int* crp, int nc, const int16_t* cols, const float* vals, const float* P, float* Y, int RB) {
  constexpr int LDP = 16 * NV;
  for (int mb = 0; mb < M; mb += RB) {
    const int me = std::min(M, mb + RB);
    for (int c = 0; c < nc; ++c)
    for (int m = mb; m < me; ++m) {
      __m512 a0[NV], a1[NV];
      for (int u = 0; u < NV; ++u) { a0[u] = c ? _mm512_loadu_ps(Y + (size_t)m * LDP + 16*u) : _mm512_setzero_ps(); a1[u] = _mm512_setzero_ps(); }
      int i = crp[m * (nc + 1) + c]; const int e = crp[m * (nc + 1) + c + 1];
      for (; i + 2 <= e; i += 2) {
        const __m512 w0 = _mm512_set1_ps(vals[i]), w1 = _mm512_set1_ps(vals[i+1]);
        const float *p0 = P + cols[i] * LDP, *p1 = P + cols[i+1] * LDP;
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u) {
          a0[u] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(p0 + 16*u), a0[u]);
          a1[u] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(p1 + 16*u), a1[u]);
        }
      }
      for (; i < e; ++i) { const __m512 w0 = _mm512_set1_ps(vals[i]); const float* p0 = P + cols[i] * LDP;
        for (int u = 0; u < NV; ++u) a0[u] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(p0 + 16*u), a0[u]); }
      for (int u = 0; u < NV; ++u) _mm512_storeu_ps(Y + (size_t)m * LDP + 16*u, _mm512_add_ps(a0[u], a1[u]));
    }
  }
}
int main(int argc, char** argv) {
  if (argc > 1) M = atoi(argv[1]);
  if (argc > 2) K = atoi(argv[2]);
  double dens = argc > 3 ? atof(argv[3]) : 0.1;
  std::vector<int> rowptr(M + 1); std::vector<int16_t> cols; std::vector<float> vals;
  srand(1);
  for (int m = 0; m < M; ++m) { rowptr[m] = cols.size(); for (int k = 0; k < K; ++k) if (rand() / (double)RAND_MAX < dens) { cols.push_back(k); vals.push_back(rand() / (float)RAND_MAX); } }
  rowptr[M] = cols.size();
  const long nnz = cols.size();
  std::vector<float> P(K * 64), Y(M * 64);
  for (auto& a : P) a = rand() / (float)RAND_MAX;
  auto run = [&](const char* nm, int W, auto fn) {
    double best = 1e9;
    for (int rep = 0; rep < 9; ++rep) {
      int iters = std::max(1, (int)(2e7 / (nnz * W)));
      auto t0 = std::chrono::steady_clock::now();
      for (int it = 0; it < iters; ++it) fn();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters);
    }
    printf("%dx%d d=%.2f %-6s W=%d: %.2f G vFMA/s  (%.1f useful GF/s)\n", M, K, dens, nm, W, nnz * (W / 16) / best / 1e9, 2.0 * nnz * W / best / 1e9);
  };
  auto offs = [&](int LDP) { std::vector<int32_t> o(nnz); for (long i = 0; i < nnz; ++i) o[i] = cols[i] * LDP * 4; return o; };
  auto o32 = offs(32), o64 = offs(64);
  run("B", 32, [&] { rowsB<2>(rowptr.data(), o32.data(), vals.data(), P.data(), Y.data()); });
  run("B", 64, [&] { rowsB<4>(rowptr.data(), o64.data(), vals.data(), P.data(), Y.data()); });
  for (int KC : {64, 128, 256}) {
    int nc = (K + KC - 1) / KC; std::vector<int> crp(M * (nc + 1));
    for (int m = 0; m < M; ++m) { int i = rowptr[m]; for (int c = 0; c <= nc; ++c) { while (i < rowptr[m+1] && cols[i] < c * KC) ++i; crp[m*(nc+1)+c] = (c == nc) ? rowptr[m+1] : i; } }
    char nm[32]; snprintf(nm, 32, "D%d", KC);
    run(nm, 64, [&] { rowsD<4>(crp.data(), nc, cols.data(), vals.data(), P.data(), Y.data(), 64); });
    run(nm, 32, [&] { rowsD<2>(crp.data(), nc, cols.data(), vals.data(), P.data(), Y.data(), 64); });
  }
  run("rows", 16, [&] { rows<1>(rowptr.data(), cols.data(), vals.data(), P.data(), Y.data()); });
  run("rows", 32, [&] { rows<2>(rowptr.data(), cols.data(), vals.data(), P.data(), Y.data()); });
  run("rows", 48, [&] { rows<3>(rowptr.data(), cols.data(), vals.data(), P.data(), Y.data()); });
  run("rows", 64, [&] { rows<4>(rowptr.data(), cols.data(), vals.data(), P.data(), Y.data()); });
}
