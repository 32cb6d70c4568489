// In-process A/B of the pool helpers' scheduler slice: blocks of calls alternate between the
// default slice and a short one; prints per-case medians of each.
#include "kernels.h"
#include "parallel.h"
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>
using namespace sparsekern::cpu;
struct Case { int64_t M, K, N; std::vector<float> vals, B, Y; std::vector<uint8_t> meta; Dense d; };
static Case make(int64_t M, int64_t K, int64_t N, int threads) {
  Case c; c.M = M; c.K = K; c.N = N;
  std::mt19937 rng(1); std::uniform_real_distribution<float> u(-1, 1);
  int64_t half = K / 2, mcols = (K / 4 + 1) / 2;
  c.vals.resize(M * half); c.B.resize(K * N); c.Y.resize(M * N); c.meta.resize(M * mcols);
  for (auto& v : c.vals) v = u(rng);
  for (auto& v : c.B) v = u(rng);
  static const uint8_t pairs[6] = {0 | 1 << 2, 0 | 2 << 2, 0 | 3 << 2, 1 | 2 << 2, 1 | 3 << 2, 2 | 3 << 2};
  for (auto& m : c.meta) m = pairs[rng() % 6] | pairs[rng() % 6] << 4;
  Dense& d = c.d; d.M = M; d.K = K; d.N = N; d.B = c.B.data(); d.ldb_k = 1; d.ldb_n = K;
  d.Y = c.Y.data(); d.ldy_m = 1; d.ldy_n = M; d.num_threads = threads;
  return c;
}
int main(int argc, char** argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 20, calls = argc > 2 ? atoi(argv[2]) : 50;
  uint64_t slice = argc > 3 ? atoll(argv[3]) : 100000;
  std::vector<Case> cases;
  cases.push_back(make(2048, 2048, 1, 2));
  cases.push_back(make(4096, 4096, 1, 2));
  cases.push_back(make(2048, 2048, 64, 2));
  std::vector<std::vector<double>> t[2];
  t[0].resize(cases.size()); t[1].resize(cases.size());
  for (int r = 0; r < rounds; ++r) {
    for (int k = 0; k < 2; ++k) {
      const int arm = (r % 2 == 0) ? k : 1 - k;
      exp_request_helper_slice(arm ? slice : 0);
      for (size_t ci = 0; ci < cases.size(); ++ci) {
        Case& c = cases[ci];
        for (int w = 0; w < 3; ++w) semi24_spmm(c.vals.data(), WeightType::kF32, c.meta.data(), c.d);
        for (int i = 0; i < calls; ++i) {
          auto a = std::chrono::steady_clock::now();
          semi24_spmm(c.vals.data(), WeightType::kF32, c.meta.data(), c.d);
          auto b = std::chrono::steady_clock::now();
          t[arm][ci].push_back(std::chrono::duration<double>(b - a).count() * 1e3);
        }
      }
    }
  }
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    double med[2], p90[2];
    for (int arm = 0; arm < 2; ++arm) {
      auto v = t[arm][ci]; std::sort(v.begin(), v.end());
      med[arm] = v[v.size() / 2]; p90[arm] = v[v.size() * 9 / 10];
    }
    printf("%ldx%ld N=%ld: default %.4f ms (p90 %.4f)  slice %.4f ms (p90 %.4f)  default/slice %.2fx\n",
           cases[ci].M, cases[ci].K, cases[ci].N, med[0], p90[0], med[1], p90[1], med[0] / med[1]);
  }
}
