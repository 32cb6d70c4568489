#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <random>
#include <algorithm>
#include "kernels.h"
using namespace sparsekern::cpu;
int main(int argc, char** argv) {
  int64_t M = atol(argv[1]), K = atol(argv[2]); int reps = atoi(argv[3]); int nt = atoi(argv[4]);
  int64_t half = K / 2, mcols = (K / 4 + 1) / 2, N = 1;
  std::vector<float> vals(M * half), B(K), Y(M);
  std::vector<uint8_t> meta(M * mcols);
  std::mt19937 rng(1); std::uniform_real_distribution<float> u(-1, 1);
  for (auto& v : vals) v = u(rng);
  for (auto& v : B) v = u(rng);
  const int pairs[6][2] = {{0,1},{0,2},{0,3},{1,2},{1,3},{2,3}};
  for (int64_t m = 0; m < M; ++m) for (int64_t g = 0; g < K / 4; ++g) {
    int p = rng() % 6; meta[m * mcols + g / 2] |= (pairs[p][0] | (pairs[p][1] << 2)) << ((g & 1) * 4);
  }
  Dense d; d.M = M; d.K = K; d.N = N; d.B = B.data(); d.ldb_k = 1; d.ldb_n = K;
  d.Y = Y.data(); d.ldy_m = 1; d.ldy_n = M; d.num_threads = nt;
  std::vector<float> fl(2 * 110100480 / 4);
  std::vector<double> ts; double s = 0;
  for (int r = 0; r < reps; ++r) {
    for (auto& f : fl) f = 1.0f; for (size_t i = 0; i < fl.size(); i += 16) s += fl[i];
    auto t0 = std::chrono::steady_clock::now();
    semi24_spmm(vals.data(), WeightType::kF32, meta.data(), d);
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  double t = ts[ts.size() / 2];
  printf("%.4f %.1f %g\n", t * 1e3, (M * half * 4.0 + M * mcols) / t / 1e9, s > 0 ? Y[0] : 0);
}
