#include "kernels.h"  // csrc/cpu (the kernels are torch-free)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <random>
#include <algorithm>
using namespace sparsekern::cpu;
int main(int argc, char** argv) {
  int64_t M = atol(argv[1]), K = atol(argv[2]), N = atol(argv[3]);
  int threads = argc > 4 ? atoi(argv[4]) : 1;
  double secs = argc > 5 ? atof(argv[5]) : 2.0;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  int64_t half = K / 2, mcols = (K / 4 + 1) / 2;
  int64_t ldy = getenv("LDY") ? M + atol(getenv("LDY")) : M;
  std::vector<float> vals(M * half), B(K * N), Y(ldy * N);
  std::vector<uint8_t> meta(M * mcols);
  for (auto& v : vals) v = u(rng);
  for (auto& v : B) v = u(rng);
  static const uint8_t pairs[6] = {0 | 1 << 2, 0 | 2 << 2, 0 | 3 << 2, 1 | 2 << 2, 1 | 3 << 2, 2 | 3 << 2};
  for (auto& m : meta) m = pairs[rng() % 6] | pairs[rng() % 6] << 4;
  Dense d; d.M = M; d.K = K; d.N = N; d.B = B.data(); d.ldb_k = 1; d.ldb_n = K;
  d.Y = Y.data(); d.ldy_m = 1; d.ldy_n = ldy; d.num_threads = threads;
  for (int i = 0; i < 3; ++i) semi24_spmm(vals.data(), WeightType::kF32, meta.data(), d);
  std::vector<double> ts;
  auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < secs) {
    auto a = std::chrono::steady_clock::now();
    int s = semi24_spmm(vals.data(), WeightType::kF32, meta.data(), d);
    auto b = std::chrono::steady_clock::now();
    if (s) { printf("status %d\n", s); return 1; }
    ts.push_back(std::chrono::duration<double>(b - a).count());
  }
  std::sort(ts.begin(), ts.end());
  double med = ts[ts.size() / 2];
  double fma = double(M) * K / 2 * N / 16;
  printf("%ldx%ld N=%ld t=%d: %.3f ms  %.2f G zmm-FMA/s  %.2f /cycle@4.07GHz  chk %g\n", M, K, N, threads,
         med * 1e3, fma / med / 1e9, fma / med / 4.07e9, (double)Y[12345 % (M*N)]);
}
