// OpenMP drivers, B panel packing and the per-thread scratch buffers (see parallel.h).
#include "parallel.h"

#include <atomic>

namespace sparsekern {
namespace cpu {

Scratch& scratch_x() {
  static thread_local Scratch s;
  return s;
}
Scratch& scratch_panel() {
  static thread_local Scratch s;
  return s;
}
Scratch& scratch_accum() {
  static thread_local Scratch s;
  return s;
}
Scratch& scratch_index() {
  static thread_local Scratch s;
  return s;
}
Scratch& scratch_tile() {
  static thread_local Scratch s;
  return s;
}

void pack_panel(const Dense& d, int64_t n0, int64_t nb, int64_t ldp, int64_t k0, int64_t k1,
                float* P) {
  const float* B = d.B + n0 * d.ldb_n;
  if (d.ldb_n == 1) {  // row-major B: one short copy per row
    for (int64_t k = k0; k < k1; ++k) {
      const float* src = B + k * d.ldb_k;
      float* dst = P + k * ldp;
      for (int64_t j = 0; j < nb; ++j) dst[j] = src[j];
      for (int64_t j = nb; j < ldp; ++j) dst[j] = 0.0f;
    }
    return;
  }
  // Column-major (B = x.T from linear) or any strides: transpose in blocks of 8 rows so each
  // column of B is read in contiguous runs.
  constexpr int64_t kRun = 8;
  for (int64_t kb = k0; kb < k1; kb += kRun) {
    const int64_t ke = min_i64(kb + kRun, k1);
    for (int64_t j = 0; j < nb; ++j) {
      const float* src = B + j * d.ldb_n;
      for (int64_t k = kb; k < ke; ++k) P[k * ldp + j] = src[k * d.ldb_k];
    }
    for (int64_t k = kb; k < ke; ++k)
      for (int64_t j = nb; j < ldp; ++j) P[k * ldp + j] = 0.0f;
  }
}

int run_panels(const Dense& d, int threads, int parts, int64_t panel_width, PanelWork& work) {
  const int64_t K = d.K, N = d.N;
  const int64_t ldp_max = round_up(min_i64(panel_width, N), 8);
  const int64_t npanels = ceil_div(N, panel_width);
  if (threads <= 1) {
    float* P = scratch_panel().get_as<float>(max_i64(K, 1), ldp_max);
    if (P == nullptr) return kNoMemory;
    for (int64_t n0 = 0; n0 < N; n0 += panel_width) {
      const int64_t nb = min_i64(panel_width, N - n0), ldp = round_up(nb, 8);
      pack_panel(d, n0, nb, ldp, 0, K, P);
      for (int p = 0; p < parts; ++p) {
        const int s = work.run(p, P, ldp, n0, nb);
        if (s != kOk) return s;
      }
    }
    return kOk;
  }
  // Threads never wait for each other (a barrier per panel costs a lot on a busy machine).
  const bool by_panel = npanels % threads == 0 || npanels >= 4 * threads;
  const int64_t items = by_panel ? npanels : npanels * parts;
  std::atomic<int> status{kOk};
  std::atomic<int64_t> next{0};
#pragma omp parallel num_threads(threads)
  {
    float* P = scratch_panel().get_as<float>(max_i64(K, 1), ldp_max);  // this thread's own
    auto note = [&](int s) {
      int expected = kOk;
      if (s != kOk) status.compare_exchange_strong(expected, s);
    };
    if (P == nullptr) note(kNoMemory);
    int64_t packed = -1;  // the panel now in P
    for (int64_t i = next.fetch_add(1); P != nullptr && i < items; i = next.fetch_add(1)) {
      const int64_t pi = by_panel ? i : i / parts;
      const int64_t n0 = pi * panel_width;
      const int64_t nb = min_i64(panel_width, N - n0), ldp = round_up(nb, 8);
      if (pi != packed) {
        pack_panel(d, n0, nb, ldp, 0, K, P);
        packed = pi;
      }
      if (by_panel) {
        for (int p = 0; p < parts; ++p) note(work.run(p, P, ldp, n0, nb));
      } else {
        note(work.run(static_cast<int>(i % parts), P, ldp, n0, nb));
      }
    }
  }
  return status.load();
}

const float* gemv_x(const Dense& d) {
  if (d.ldb_k == 1 || d.K <= 1) return d.B;
  float* x = scratch_x().get_as<float>(d.K);
  if (x == nullptr) return nullptr;
  for (int64_t k = 0; k < d.K; ++k) x[k] = d.B[k * d.ldb_k];
  return x;
}

}  // namespace cpu
}  // namespace sparsekern
