#include "kernels.h"  // csrc/cpu (torch-free kernels)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>
using namespace sparsekern::cpu;
int main(int argc, char** argv) {
  int64_t M = atol(argv[1]), K = atol(argv[2]), N = atol(argv[3]);
  int threads = argc > 4 ? atoi(argv[4]) : 1;
  double secs = argc > 5 ? atof(argv[5]) : 1.0, density = argc > 6 ? atof(argv[6]) : 0.1;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<int64_t> colptr(K + 1, 0);
  std::vector<int16_t> rows;
  std::vector<float> vals;
  const int exact = getenv("EXACT") ? atoi(getenv("EXACT")) : 0;
  std::vector<std::vector<char>> keep(M, std::vector<char>(K, 0));
  for (int64_t m = 0; m < M; ++m) {
    if (exact > 0) {
      std::vector<int> idx(K); for (int i = 0; i < K; ++i) idx[i] = i;
      if (!getenv("FIRST")) std::shuffle(idx.begin(), idx.end(), rng);
      for (int i = 0; i < exact; ++i) keep[m][idx[i]] = 1;
    } else {
      for (int64_t k = 0; k < K; ++k) keep[m][k] = (u(rng) * 0.5f + 0.5f < density);
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t m = 0; m < M; ++m)
      if (keep[m][k]) { rows.push_back(int16_t(m)); vals.push_back(u(rng)); }
    colptr[k + 1] = rows.size();
  }
  Csc a; a.values = vals.data(); a.rows = rows.data(); a.row_type = IndexType::kI16;
  a.colptr = colptr.data(); a.ptr_type = IndexType::kI64; a.nnz = vals.size();
  CsrRepack csr;
  if (int s = csc_to_csr(a, M, K, &csr)) { printf("repack %d\n", s); return 1; }
  std::vector<float> B(K * N), Y(M * N);
  for (auto& v : B) v = u(rng);
  Dense d; d.M = M; d.K = K; d.N = N; d.B = B.data(); d.ldb_k = 1; d.ldb_n = K;
  d.Y = Y.data(); d.ldy_m = 1; d.ldy_n = M; d.num_threads = threads;
  for (int i = 0; i < 3; ++i) csr_spmm(csr, d);
  std::vector<double> ts;
  auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < secs) {
    auto s0 = std::chrono::steady_clock::now();
    int s = csr_spmm(csr, d);
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count());
    if (s) { printf("status %d\n", s); return 1; }
  }
  std::sort(ts.begin(), ts.end());
  double med = ts[ts.size() / 2], fma = double(vals.size()) * N / 16;
  double chk = 0; for (int i = 0; i < 1000; ++i) chk += Y[(i * 7919) % (M * N)];
  printf("%ldx%ld N=%ld t=%d nnz=%zu: %.3f ms  %.2f G zmm-FMA/s %.2f/cycle@4.07 chk %.6g\n", M, K, N,
         threads, vals.size(), med * 1e3, fma / med / 1e9, fma / med / 4.07e9, chk);
}
