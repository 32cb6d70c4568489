#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <random>
#include <algorithm>
#include <cmath>
#include "kernels.h"
using namespace sparsekern::cpu;
int main(int argc, char** argv) {
  int64_t M = atol(argv[1]), K = atol(argv[2]), N = atol(argv[3]); int reps = atoi(argv[4]); int nt = atoi(argv[5]);
  int64_t half = K / 2, mcols = (K / 4 + 1) / 2;
  std::vector<float> vals(M * half), B(K * N), Y(M * N);
  std::vector<uint8_t> meta(M * mcols);
  std::vector<int> pos(M * (K / 4) * 2);
  std::mt19937 rng(1); std::uniform_real_distribution<float> u(-1, 1);
  for (auto& v : vals) v = u(rng);
  for (auto& v : B) v = u(rng);
  const int pairs[6][2] = {{0,1},{0,2},{0,3},{1,2},{1,3},{2,3}};
  for (int64_t m = 0; m < M; ++m) for (int64_t g = 0; g < K / 4; ++g) {
    int p = rng() % 6; meta[m * mcols + g / 2] |= (pairs[p][0] | (pairs[p][1] << 2)) << ((g & 1) * 4);
    pos[(m * (K/4) + g) * 2] = pairs[p][0]; pos[(m * (K/4) + g) * 2 + 1] = pairs[p][1];
  }
  Dense d; d.M = M; d.K = K; d.N = N; d.B = B.data(); d.ldb_k = 1; d.ldb_n = K;
  d.Y = Y.data(); d.ldy_m = 1; d.ldy_n = M; d.num_threads = nt;
  int st = semi24_spmm(vals.data(), WeightType::kF32, meta.data(), d);
  double maxerr = 0;
  for (int64_t m = 0; m < std::min<int64_t>(M, 40); ++m) for (int64_t n = 0; n < N; ++n) {
    double acc = 0;
    for (int64_t g = 0; g < K / 4; ++g) for (int j = 0; j < 2; ++j)
      acc += (double)vals[m * half + 2 * g + j] * B[n * K + 4 * g + pos[(m * (K/4) + g) * 2 + j]];
    maxerr = std::max(maxerr, std::abs(acc - Y[m + n * M]));
  }
  std::vector<double> ts;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    semi24_spmm(vals.data(), WeightType::kF32, meta.data(), d);
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  double t = ts[ts.size() / 2];
  printf("%d %.1e %.4f %.1f\n", st, maxerr, t * 1e3, (double)M * K * N / t / 1e9);
}
