// Thread partitioning and the thread-pool drivers shared by the kernels.
//
// Work is split by stored entries, not by rows: a unit's cost is its entry count plus a
// fixed cost per unit (its output row), so threads get equal work on skewed matrices.
// The drivers live here, in portable code; they call ISA-specific workers through plain
// calls.
#pragma once
#include <cstdint>
#include <type_traits>

#include "common.h"
#include "kernels.h"

namespace sparsekern {
namespace cpu {

// Threads worth using for `work` multiply-adds: waking a helper costs a few microseconds, so
// small problems run on the calling thread alone. Work is counted in vectorized
// multiply-adds; kernels scale it by the relative cost of theirs (kGemvCost, kEntryCost).
inline int threads_for(int requested, double work) {
  constexpr double kMinWorkPerThread = 65536.0;
  int nt = requested < 1 ? 1 : requested;
  const double by_work = work / kMinWorkPerThread;
  if (by_work < nt) nt = by_work < 1.0 ? 1 : static_cast<int>(by_work);
  return nt;
}

// Relative per-entry costs for threads_for: a GEMV multiply-add streams its weight (no
// reuse across N), a CSC/CSR GEMV entry is a scalar gather or scatter.
constexpr double kGemvCost = 2.0;
constexpr double kEntryCost = 8.0;
// A CSR panel step (one stored entry times one vector of panel columns: a broadcast, an index
// and a panel-row load, bound by the load ports at about one per cycle). With one
// entry-vector counted as 2.5 units, two threads start at ~52K entry-vectors: on the 2-vCPU
// Intel VM (N = 4..32, 90%), a second thread was slower below ~30K (384x384 at N=16: 14.5 us
// on one thread, 17.9 on two) and 0.7-0.8x above ~60K (bench/results/threads-2026-12-05).
constexpr double kPanelEntryCost = 2.5;

// Splits units [0, n) into `parts` contiguous ranges of about equal cost, where the cost of
// units [0, i) is (prefix[i] - prefix[0]) + unit_cost * i. `prefix` must not decrease.
// bounds[p]..bounds[p+1] is part p; bounds has parts + 1 entries.
template <typename P>
void split_by_prefix(const P* prefix, int64_t n, double unit_cost, int parts, int64_t* bounds) {
  const double base = static_cast<double>(prefix[0]);
  auto cost = [&](int64_t i) { return static_cast<double>(prefix[i]) - base + unit_cost * i; };
  const double total = cost(n);
  bounds[0] = 0;
  for (int p = 1; p < parts; ++p) {
    const double target = total * p / parts;
    int64_t lo = bounds[p - 1], hi = n;  // smallest i in [lo, hi] with cost(i) >= target
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (cost(mid) < target) lo = mid + 1; else hi = mid;
    }
    bounds[p] = lo;
  }
  bounds[parts] = n;
}

// Equal split of n uniform units.
inline void split_even(int64_t n, int parts, int64_t* bounds) {
  for (int p = 0; p <= parts; ++p) bounds[p] = n * p / parts;
}

// Parts per thread of a dynamic split: on a shared machine a thread whose core is busy with
// another process takes fewer parts instead of holding up the others (with one part per
// thread the call lasts as long as the slowest thread's share).
constexpr int kPartsPerThread = 4;

// Parts to split `units` into for `threads` threads: kPartsPerThread per thread, at most
// `units` and `max_parts`, and 1 on one thread.
inline int parts_for(int threads, int64_t units, int max_parts,
                     int per_thread = kPartsPerThread) {
  if (threads <= 1 || units <= 1) return 1;
  int64_t p = static_cast<int64_t>(threads) * per_thread;
  if (p > units) p = units;
  if (p > max_parts) p = max_parts;
  return static_cast<int>(p);
}

// Whether run_panels' threads share panels ((panel, part) pairs) rather than take whole
// panels: fewer than 4 panels of `panel_width` columns per thread.
inline bool panels_shared(int threads, int64_t N, int64_t panel_width) {
  return threads > 1 && (N + panel_width - 1) / panel_width < 4 * static_cast<int64_t>(threads);
}

// Parts for a run_panels call: parts_for's, twice as many when the threads share panels, so
// that a thread whose core is busy holds up the end of the call by a smaller part.
inline int panel_parts(int threads, int64_t units, int64_t N, int64_t panel_width,
                       int max_parts) {
  return parts_for(threads, units, max_parts,
                   panels_shared(threads, N, panel_width) ? 2 * kPartsPerThread
                                                          : kPartsPerThread);
}

// The thread pool the kernels run on (not OpenMP: see parallel.cpp for why).
// run_items runs fn(ctx, item) for every item in [0, items): the calling thread and up to
// threads - 1 pool helpers each take the next unclaimed item until none is left. The caller
// waits only for items another thread has claimed and not finished; a helper that is not
// running (its core busy with another process) claims nothing and is never waited for, and
// with more items than threads the last item is always the caller's (a helper that wakes
// late cannot make the caller wait for it at the very end).
// Returns the first non-zero status. Calls made while the pool serves another call (from
// another Python thread, or nested) run on the calling thread alone.
// (ItemFn and set_item_runner: kernels.h.)
int run_items(int64_t items, int threads, ItemFn fn, void* ctx);

// run_items for a callable fn(int part) -> status.
template <typename F>
int parallel_parts(int parts, int threads, F&& fn) {
  if (parts <= 0) return kOk;
  if (threads <= 1 || parts == 1) {
    for (int p = 0; p < parts; ++p) {
      const int s = fn(p);
      if (s != kOk) return s;
    }
    return kOk;
  }
  using Fn = std::remove_reference_t<F>;
  return run_items(parts, threads < parts ? threads : parts,
                   [](void* ctx, int64_t item) {
                     return static_cast<int>((*static_cast<Fn*>(ctx))(static_cast<int>(item)));
                   },
                   const_cast<void*>(static_cast<const void*>(&fn)));
}

// One part per thread (parts that own per-part buffers sized by the part count).
template <typename F>
int parallel_parts(int parts, F&& fn) {
  return parallel_parts(parts, parts, fn);
}

// The row work of a batched call over one packed panel of B.
class PanelWork {
 public:
  virtual ~PanelWork() = default;
  // Computes partition `part` for output columns [n0, n0 + nb): P[k * ldp + j] = B(k, n0 + j)
  // for k < K and j < nb, and 0 for nb <= j < ldp (ldp a multiple of run_panels' align).
  virtual int run(int part, const float* P, int64_t ldp, int64_t n0, int64_t nb) = 0;
};

// Copies B(k0..k1, n0..n0+nb) into P (row stride ldp, zero-padded to ldp columns).
void pack_panel(const Dense& d, int64_t n0, int64_t nb, int64_t ldp, int64_t k0, int64_t k1,
                float* P);

// Loops over panels of at most `panel_width` columns of B (a multiple of 8), each packed
// into a per-thread buffer (never a full copy of B), calling work.run for each of `parts`
// row parts of every panel on up to `threads` threads. With at least 4 panels per thread the
// threads take whole panels, else (panel, part) pairs, each thread taking the next part of
// the panel it packed while one is left (so a thread whose core is busy does fewer parts).
// Both are dynamic (the next item to whoever is free, see run_items); no barrier.
// `align` (8 or 16, dividing panel_width): each panel's row stride ldp is nb rounded up to it.
int run_panels(const Dense& d, int threads, int parts, int64_t panel_width, PanelWork& work,
               int64_t align = 8);

// Splits d into its first N - r columns (head) and its last r (tail) when N = 16q + r with
// q >= 1 and 1 <= r <= max_tail (AVX-512) or r == 1 (AVX2): a panel spends one multiply-add
// per vector of columns on every entry, so 17 columns cost two FMAs per entry where 16 cost
// one; the tail runs as GEMV / small-N instead (each layout sets max_tail from its GEMV's
// cost). False (head, tail untouched) otherwise, and under the portable ISA.
bool split_panel_tail(const Dense& d, int64_t max_tail, Dense* head, Dense* tail);

// The tail of a split_panel_tail for the head's panel work to run on each row part right after
// the part's last panel, while its weight rows are in L1/L2 (a GEMV after the panels read the
// whole weight again, inside a model from the LLC, and woke the threads a second time).
struct PanelTail {
  const Dense* d = nullptr;  // the tail's columns; null: no split
  const float* X = nullptr;  // its columns, each contiguous in k (column c at X + c * ldx)
  int64_t ldx = 0;
};

// split_panel_tail into *head / *tail, with pt->d = tail and pt->X its columns (gemv_x for one
// column, else small_n_columns); pt->d stays null when there is no split. kNoMemory when the
// columns cannot be copied, else kOk.
int split_panel_tail(const Dense& d, int64_t max_tail, Dense* head, Dense* tail, PanelTail* pt);

// B's only column as a contiguous vector of K floats (copied when B is strided).
const float* gemv_x(const Dense& d);

// B's N columns, each contiguous in k (column c at X + c * *ldx): B itself when ldb_k == 1
// (a Linear's x.T), else copied into the GEMV scratch. Null when the copy cannot be allocated.
const float* small_n_columns(const Dense& d, int64_t* ldx);

}  // namespace cpu
}  // namespace sparsekern
