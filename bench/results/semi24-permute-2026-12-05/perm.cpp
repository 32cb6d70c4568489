#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <vector>
#include <cstdint>
#include <cstdlib>
// Inner loop of the lane-permute 2:4 kernel: 16 rows per zmm, x chunk of 16 k per column.
template<int NB>
void kern(const float* vals, const int32_t* idx, const float* x, float* y, int K, int N, int Mb) {
  // vals/idx: [Mb][K/16][8][16]; x: [N][K]; y: [N][Mb*16]
  for (int mb = 0; mb < Mb; ++mb)
  for (int n0 = 0; n0 < N; n0 += NB) {
    __m512 acc[NB];
    for (int j = 0; j < NB; ++j) acc[j] = _mm512_setzero_ps();
    const float* v = vals + (size_t)mb * (K/2) * 16;
    const int32_t* ix = idx + (size_t)mb * (K/2) * 16;
    for (int c = 0; c < K/16; ++c) {
      __m512 V[8]; __m512i I[8];
      for (int s = 0; s < 8; ++s) { V[s] = _mm512_loadu_ps(v + (c*8+s)*16); I[s] = _mm512_loadu_si512(ix + (c*8+s)*16); }
      for (int j = 0; j < NB; ++j) {
        __m512 xv = _mm512_loadu_ps(x + (size_t)(n0+j)*K + c*16);
        for (int s = 0; s < 8; ++s) acc[j] = _mm512_fmadd_ps(V[s], _mm512_permutexvar_ps(I[s], xv), acc[j]);
      }
    }
    for (int j = 0; j < NB; ++j) _mm512_storeu_ps(y + (size_t)(n0+j)*Mb*16 + mb*16, acc[j]);
  }
}
int main(int argc, char** argv) {
  int K = 256, N = 64, Mb = 64; // small: all in L1/L2 -> pure throughput
  std::vector<float> vals(Mb*(K/2)*16), x(N*K), y(N*Mb*16);
  std::vector<int32_t> idx(Mb*(K/2)*16);
  for (auto& a: vals) a = rand()/(float)RAND_MAX;
  for (auto& a: x) a = rand()/(float)RAND_MAX;
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = rand()%16;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    int iters = 200;
    for (int it = 0; it < iters; ++it) kern<8>(vals.data(), idx.data(), x.data(), y.data(), K, N, Mb);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count();
    double fmas = (double)iters * Mb * N * (K/2);
    printf("NB=8: %.2f G vFMA/s\n", fmas/s/1e9);
    t0 = std::chrono::steady_clock::now();
    for (int it = 0; it < iters; ++it) kern<12>(vals.data(), idx.data(), x.data(), y.data(), K, 60, Mb);
    s = std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count();
    fmas = (double)iters * Mb * 60 * (K/2);
    printf("NB=12: %.2f G vFMA/s\n", fmas/s/1e9);
  }
}
