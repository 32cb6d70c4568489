#include "/work/main/csrc/cpu/semi24.cpp"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cmath>
#include <algorithm>
namespace sparsekern { namespace cpu { namespace {
#ifndef PW
#define PW 16
#endif
#ifndef KC
#define KC 64
#endif
#ifndef PB
#define PB 8
#endif
#ifndef SL
#define SL 256
#endif
constexpr int64_t kGemmChunkGroups = KC, kGemmPanelBlocks = PB;
template <typename T>
SK_AVX512 int lor_gemm_rows_avx512(const T* values, const uint8_t* meta, const Dense& d,
                                   const float* X, int64_t ldx, int64_t c0, int64_t nc,
                                   int64_t m0, int64_t m1) {
  const int passes = static_cast<int>(ceil_div(nc, PW));
  int64_t pc[SL / 7 + 2];
  split_even(nc, passes, pc);
  const Semi24Rows g4(d.K);
  constexpr int64_t kValues = kGemmChunkGroups * 2 * 16, kWords = kGemmChunkGroups / 8 * 16;
  constexpr int64_t kBlock = kValues + kWords;
  float* s = scratch_tile().get_as<float>(kGemmPanelBlocks * (kBlock + passes * 256));
  if (s == nullptr) return kNoMemory;
  float* tt = s + kGemmPanelBlocks * kBlock;
  for (int64_t mp = m0; mp < m1; mp += kLorRows * kGemmPanelBlocks) {
    const int64_t mpe = min_i64(mp + kLorRows * kGemmPanelBlocks, m1);
    const int nb = static_cast<int>(ceil_div(mpe - mp, kLorRows));
    if (!meta_rows_valid_avx2(meta + mp * g4.mcols, mpe - mp, g4)) return kBadMeta;
    int64_t g0 = 0;
    do {
      const int64_t g1 = min_i64(g0 + kGemmChunkGroups, g4.G);
      for (int b = 0; b < nb; ++b) {
        const int64_t m = mp + b * kLorRows, rows = min_i64(kLorRows, mpe - m);
        const int64_t next = min_i64(kLorRows, m1 - m - rows);
        float* sv = s + b * kBlock;
        lor_transpose<T>(values + m * g4.half, meta + m * g4.mcols, g4, rows, next, g0, g1, sv,
                         reinterpret_cast<uint32_t*>(sv + kValues));
      }
      for (int q = 0; q < passes; ++q)
        for (int b = 0; b < nb; ++b) {
          float* sv = s + b * kBlock;
          lor_chunk_n(pc[q + 1] - pc[q], sv, reinterpret_cast<uint32_t*>(sv + kValues),
                      X + (c0 + pc[q]) * ldx, ldx, d.K, g0, g1, tt + (b * passes + q) * 256, g0 == 0);
        }
      g0 = g1;
    } while (g0 < g4.G);
    for (int b = 0; b < nb; ++b) {
      const int64_t m = mp + b * kLorRows, rows = min_i64(kLorRows, mpe - m);
      for (int q = 0; q < passes; ++q)
        lor_store(d, m, rows, c0 + pc[q], pc[q + 1] - pc[q], tt + (b * passes + q) * 256);
    }
  }
  return kOk;
}
int lor_gemm(const float* values, const uint8_t* meta, const Dense& d, const float* X, int64_t ldx, int nt) {
  const int64_t blocks = ceil_div(d.M, kLorRows);
  const int parts = parts_for(nt, blocks, kMaxParts);
  int64_t bounds[kMaxParts + 1];
  split_even(blocks, parts, bounds);
  for (int p = 0; p <= parts; ++p) bounds[p] = min_i64(d.M, bounds[p] * kLorRows);
  const int slices = static_cast<int>(ceil_div(d.N, SL));
  int64_t sc[64]; split_even(d.N, slices, sc);
  for (int sl = 0; sl < slices; ++sl) {
    int s = parallel_parts(parts, nt, [&](int p) {
      return lor_gemm_rows_avx512<float>(values, meta, d, X, ldx, sc[sl], sc[sl+1]-sc[sl], bounds[p], bounds[p + 1]);
    });
    if (s) return s;
  }
  return 0;
}
}}}
using namespace sparsekern::cpu;
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
int main(int argc, char** argv) {
  int64_t M = atol(argv[1]), K = atol(argv[2]), N = atol(argv[3]); int nt = atoi(argv[4]);
  Semi24Rows g4(K);
  std::vector<float> vals(M * g4.half); std::vector<uint8_t> meta(M * g4.mcols, 0);
  srand(1);
  const int combos[6][2] = {{0,1},{0,2},{0,3},{1,2},{1,3},{2,3}};
  for (int64_t m = 0; m < M; ++m) for (int64_t g = 0; g < g4.G; ++g) {
    int c = rand() % 6; meta[m * g4.mcols + g / 2] |= (combos[c][0] | combos[c][1] << 2) << (4 * (g & 1));
    vals[m * g4.half + 2*g] = rand() / (float)RAND_MAX - 0.5f; vals[m * g4.half + 2*g+1] = rand() / (float)RAND_MAX - 0.5f; }
  // B column-major (X: N x K), as SparseLinear passes x^T.
  std::vector<float> X(N * K); for (auto& x : X) x = rand() / (float)RAND_MAX - 0.5f;
  std::vector<float> Y0(M * N), Y1(M * N);
  Dense d; d.M = M; d.K = K; d.N = N; d.B = X.data(); d.ldb_k = 1; d.ldb_n = K; d.Y = Y0.data(); d.ldy_m = N; d.ldy_n = 1; if (getenv("YCOL")) { d.ldy_m = 1; d.ldy_n = M; } d.num_threads = nt;
  Dense d1 = d; d1.Y = Y1.data();
  semi24_spmm(vals.data(), WeightType::kF32, meta.data(), d);
  lor_gemm(vals.data(), meta.data(), d1, X.data(), K, nt);
  double err = 0; for (int64_t i = 0; i < M * N; ++i) err = std::max(err, (double)std::fabs(Y0[i] - Y1[i]));
  double fl = 2.0 * M * K * N;  // dense-equivalent
  std::vector<double> ta, tb;
  for (int r = 0; r < 15; ++r) {
    double t0 = now(); semi24_spmm(vals.data(), WeightType::kF32, meta.data(), d); double t1 = now();
    lor_gemm(vals.data(), meta.data(), d1, X.data(), K, nt); double t2 = now();
    ta.push_back(t1 - t0); tb.push_back(t2 - t1);
  }
  std::sort(ta.begin(), ta.end()); std::sort(tb.begin(), tb.end());
  printf("%ldx%ld N=%ld nt=%d err=%.2e panels %.3f ms (%.0f GF/s eq)  lor_gemm %.3f ms (%.0f)  ratio %.2fx\n", M, K, N, nt, err,
    ta[7]*1e3, fl/ta[7]/1e9, tb[7]*1e3, fl/tb[7]/1e9, ta[7]/tb[7]);
}
