// The thread pool, B panel packing and the per-thread scratch buffers (see parallel.h).
#include "parallel.h"

#include "isa.h"
#include "simd_avx2.h"

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <thread>

#include <pthread.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

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

namespace {
// Rows [k0, k1) of the panel from B(k, j) = B[j * ldb_n + k] (ldb_k == 1), scalar.
void pack_cols_scalar(const float* B, int64_t ldb_n, int64_t j0, int64_t nb, int64_t ldp,
                      int64_t k0, int64_t k1, float* P) {
  for (int64_t k = k0; k < k1; ++k) {
    for (int64_t j = j0; j < nb; ++j) P[k * ldp + j] = B[j * ldb_n + k];
    for (int64_t j = nb; j < ldp; ++j) P[k * ldp + j] = 0.0f;
  }
}

#if SK_HAVE_AVX2_KERNELS
// The same for a column-major B (a Linear's x.T): 8 x 8 tiles through a register transpose,
// each column of B read 8 floats at a time.
SK_AVX2 void pack_cols_avx2(const float* B, int64_t ldb_n, int64_t nb, int64_t ldp, int64_t k0,
                            int64_t k1, float* P) {
  const int64_t j8 = nb / 8 * 8;
  int64_t k = k0;
  for (; k + 8 <= k1; k += 8) {
    for (int64_t j = 0; j < j8; j += 8) {
      __m256 r[8];
      for (int c = 0; c < 8; ++c) r[c] = _mm256_loadu_ps(B + (j + c) * ldb_n + k);
      transpose8x8(r);  // r[i]: row k + i of the panel, columns j..j+7
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(P + (k + i) * ldp + j, r[i]);
    }
    pack_cols_scalar(B, ldb_n, j8, nb, ldp, k, k + 8, P);
  }
  pack_cols_scalar(B, ldb_n, 0, nb, ldp, k, k1, P);
}
#endif
}  // namespace

void pack_panel(const Dense& d, int64_t n0, int64_t nb, int64_t ldp, int64_t k0, int64_t k1,
                float* P) {
  const float* B = d.B + n0 * d.ldb_n;
#if SK_HAVE_AVX2_KERNELS
  if (d.ldb_k == 1 && nb >= 8 && active_isa() != Isa::kPortable) {
    pack_cols_avx2(B, d.ldb_n, nb, ldp, k0, k1, P);
    return;
  }
#endif
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

// ----------------------------------------------------------------------------- pool
//
// The glue normally installs a runner on torch's intra-op (OpenMP) pool (set_item_runner,
// csrc/ops.cpp), which backs off to this pool when a call shows a stalled teammate; this
// pool serves everything when no runner is installed, in a forked child, and while the
// runner declines.
//
// Why this pool is not OpenMP: an OpenMP parallel region ends in a barrier that waits for
// every thread of the team, and libgomp's idle threads spin for a long while
// (GOMP_SPINCOUNT) before sleeping. On a machine where another process keeps a core busy, a
// team thread that is not scheduled holds the call for a whole scheduler slice (measured: every call of 0.1-2 ms took a flat
// 8 ms with one busy core), and our kernels and torch linked two different libgomp copies
// whose spinning teams fought for the same 2 cores. Here a call never waits for a thread
// that has not claimed work, helpers sleep on a futex after a short spin, and only the
// items already claimed are waited for.

namespace {

constexpr int kMaxHelpers = 255;
constexpr uint64_t kClosed = 0xffffffffu;  // a claim word's next item when none may be claimed
constexpr int64_t kSpinNanos = 50000;  // a helper's spin before sleeping (back-to-back calls)

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Sleeps while *word == expected (may return early); wakes sleepers on word.
void wait_on(std::atomic<uint32_t>& word, uint32_t expected) {
#ifdef __linux__
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr,
          nullptr, 0);
#else
  if (word.load() == expected) std::this_thread::sleep_for(std::chrono::microseconds(50));
#endif
}
void wake_all(std::atomic<uint32_t>& word) {
#ifdef __linux__
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr,
          nullptr, 0);
#else
  (void)word;
#endif
}

// The CPU the calling thread runs on, or -1.
int current_cpu() {
#ifdef __linux__
  return sched_getcpu();
#else
  return -1;
#endif
}

// A helper woken on the caller's CPU moves to its other CPUs. When no CPU is idle (another
// process keeps one busy), Linux places a woken thread beside its waker: both of a call's
// threads then share one CPU and the call runs at one thread's speed (measured: 2:4 4096²
// N=64 took its one-thread time with a spinner on the other core, the helper runnable on the
// caller's CPU 3x as often as on its own), while on another CPU the helper gets its share
// beside the busy process. The helper's own mask loses that one CPU and gets back the one it
// gave up last time (so a later call from another CPU moves it back, and a mask the user set
// is otherwise kept); nothing changes when no CPU would be left.
void leave_callers_cpu(int caller_cpu) {
#ifdef __linux__
  static thread_local int removed = -1;
  if (caller_cpu < 0 || caller_cpu >= CPU_SETSIZE || sched_getcpu() != caller_cpu) return;
  cpu_set_t mask;
  if (sched_getaffinity(0, sizeof mask, &mask) != 0) return;  // this thread's
  if (removed >= 0) CPU_SET(removed, &mask);
  CPU_CLR(caller_cpu, &mask);
  if (CPU_COUNT(&mask) == 0) return;
  if (sched_setaffinity(0, sizeof mask, &mask) == 0) removed = caller_cpu;
#else
  (void)caller_cpu;
#endif
}

std::atomic<bool> g_fuzz{false};
}  // namespace

// set_pool_fuzz's pause: a sleep of 0-200 us on one call in four (a thread-local xorshift).
void fuzz_point() {
  if (!g_fuzz.load(std::memory_order_relaxed)) return;
  static thread_local uint32_t x = 0x9e3779b9u ^ static_cast<uint32_t>(now_ns());
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  if ((x & 3) == 0) std::this_thread::sleep_for(std::chrono::microseconds((x >> 8) % 200));
}

namespace {

// Spins up to kSpinNanos while pred() is false; returns pred().
template <typename P>
bool spin_until(P&& pred) {
  const int64_t t0 = now_ns();
  for (int i = 1;; ++i) {
    if (pred()) return true;
    cpu_relax();
    if ((i & 63) == 0 && now_ns() - t0 > kSpinNanos) return pred();
  }
}

struct Pool {
  std::mutex submit;                    // held by the call the pool serves (try_lock only)
  std::atomic<uint64_t> claim{0};       // generation << 32 | next unclaimed item
  std::atomic<uint32_t> gen{0};         // futex word of idle helpers: the current generation
  std::atomic<uint32_t> done{0};        // futex word of the caller: items finished
  std::atomic<int> sleepers{0};         // helpers asleep (or about to sleep) on gen
  std::atomic<int> caller_asleep{0};    // the caller sleeps on done
  std::atomic<int> status{kOk};
  std::atomic<int64_t> items{0};
  std::atomic<int> helpers_wanted{0};   // helpers [0, helpers_wanted) take part
  std::atomic<bool> dynamic{false};     // more items than threads (see take)
  std::atomic<ItemFn> fn{nullptr};
  std::atomic<int> caller_cpu{-1};      // where the current call's caller runs
  std::atomic<void*> ctx{nullptr};
  int spawned = 0;                      // guarded by submit

  // Claims the next item of generation g into *item; false when the call g has none left.
  // `leave_last`: a helper does not claim the last item of a dynamic split (more items than
  // threads). A helper that wakes late (its core busy with another process) would otherwise
  // take the last item just before the caller, and the caller would wait for a thread that
  // may be descheduled again; the caller takes it instead and never waits for a late claim.
  // `items` and `dynamic` are read after `claim` and may already belong to the next call; the
  // CAS on the claim read first then fails, because run_items closes the claim word (a new
  // generation with no item to claim) before it writes the next call's fields (seq_cst
  // stores and loads order the two). Without that a helper preempted inside take() at the
  // end of one call claimed an item of the next call's count under the old generation: an
  // item ran twice and the call hung (caught by CI under load, 3 threads on 2 cores).
  bool take(uint32_t g, int64_t* item, bool leave_last) {
    uint64_t c = claim.load();
    for (;;) {
      if (static_cast<uint32_t>(c >> 32) != g) return false;
      const int64_t next = static_cast<int64_t>(c & 0xffffffffu);
      fuzz_point();
      const int64_t n = items.load();
      if (next >= n || (leave_last && next + 1 == n && dynamic.load(std::memory_order_relaxed)))
        return false;
      if (claim.compare_exchange_weak(c, c + 1)) {
        *item = next;
        return true;
      }
    }
  }

  // Runs items of generation g until none is left (`helper`: see take).
  void work(uint32_t g, bool helper) {
    int64_t item;
    while (take(g, &item, helper)) {
      // A claimed item keeps the call (and fn, ctx, items) alive until it is counted done.
      const int s = fn.load(std::memory_order_relaxed)(ctx.load(std::memory_order_relaxed), item);
      if (s != kOk) {
        int expected = kOk;
        status.compare_exchange_strong(expected, s);
      }
      fuzz_point();
      const uint32_t d = done.fetch_add(1) + 1;
      if (d == static_cast<uint32_t>(items.load(std::memory_order_relaxed)) && caller_asleep.load())
        wake_all(done);
    }
  }

  void helper_loop(int index) {
    uint32_t seen = gen.load();
    for (;;) {
      if (!spin_until([&] { return gen.load(std::memory_order_acquire) != seen; })) {
        sleepers.fetch_add(1);
        if (gen.load() == seen) wait_on(gen, seen);
        sleepers.fetch_sub(1);
      }
      const uint32_t g = gen.load(std::memory_order_acquire);
      if (g == seen) continue;
      seen = g;
      fuzz_point();
      if (index < helpers_wanted.load(std::memory_order_relaxed)) {
        leave_callers_cpu(caller_cpu.load(std::memory_order_relaxed));
        work(g, true);
      }
    }
  }
};

std::atomic<Pool*> g_pool{nullptr};
std::mutex g_pool_init;

std::atomic<ItemRunner> g_runner{nullptr};
std::atomic<bool> g_forked{false};

// After fork() the child has none of the helpers: it gets a fresh pool (the old one leaks),
// and never an installed runner: torch's OpenMP team hangs in a forked child once the
// parent has used it.
void after_fork_child() {
  g_pool.store(nullptr);
  new (&g_pool_init) std::mutex();
  g_forked.store(true);
  g_runner.store(nullptr);
}

void register_fork_handler() {
  static bool registered = [] {
    pthread_atfork(nullptr, nullptr, &after_fork_child);
    return true;
  }();
  (void)registered;
}

Pool* pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p != nullptr) return p;
  std::lock_guard<std::mutex> lock(g_pool_init);
  if (g_pool.load() == nullptr) {
    register_fork_handler();
    g_pool.store(new Pool());  // never destroyed: helpers may outlive static destructors
  }
  return g_pool.load();
}

}  // namespace

void set_pool_fuzz(bool on) { g_fuzz.store(on); }

void set_item_runner(ItemRunner runner) {
  register_fork_handler();
  if (!g_forked.load()) g_runner.store(runner);
}

int run_items(int64_t items, int threads, ItemFn fn, void* ctx) {
  auto serial = [&]() -> int {
    for (int64_t i = 0; i < items; ++i) {
      const int s = fn(ctx, i);
      if (s != kOk) return s;
    }
    return kOk;
  };
  if (items <= 1 || threads <= 1 || items > 0x7fffffff) return serial();
  if (const ItemRunner runner = g_runner.load(std::memory_order_relaxed)) {
    const int s = runner(items, threads, fn, ctx);
    if (s != kRunnerDeclined) return s;
  }
  Pool* p = pool();
  std::unique_lock<std::mutex> lock(p->submit, std::try_to_lock);
  if (!lock.owns_lock()) return serial();  // the pool serves another call
  const int helpers = threads - 1 < kMaxHelpers ? threads - 1 : kMaxHelpers;
  while (p->spawned < helpers) {
    try {
      const int index = p->spawned;
      std::thread([p, index] { p->helper_loop(index); }).detach();
      ++p->spawned;
    } catch (...) {
      break;  // no more threads: the caller and the helpers there are do the work
    }
  }
  const uint32_t g = p->gen.load(std::memory_order_relaxed) + 1;
  // Close the claim word first (generation g, nothing to claim): a helper still inside take()
  // for the last call can no longer claim once it may see this call's fields (see take).
  p->claim.store(static_cast<uint64_t>(g) << 32 | kClosed);
  p->fn.store(fn, std::memory_order_relaxed);
  p->ctx.store(ctx, std::memory_order_relaxed);
  p->items.store(items);
  fuzz_point();
  p->helpers_wanted.store(helpers, std::memory_order_relaxed);
  p->dynamic.store(items > threads, std::memory_order_relaxed);
  p->status.store(kOk, std::memory_order_relaxed);
  p->done.store(0, std::memory_order_relaxed);
  p->caller_cpu.store(current_cpu(), std::memory_order_relaxed);
  p->claim.store(static_cast<uint64_t>(g) << 32);  // open: items [0, items) to claim
  p->gen.store(g);
  if (p->sleepers.load() > 0) wake_all(p->gen);
  p->work(g, false);
  const uint32_t all = static_cast<uint32_t>(items);
  // Only items claimed by a helper and not yet finished are left.
  if (!spin_until([&] { return p->done.load(std::memory_order_acquire) == all; })) {
    p->caller_asleep.store(1);
    for (uint32_t d = p->done.load(); d != all; d = p->done.load()) wait_on(p->done, d);
    p->caller_asleep.store(0);
  }
  return p->status.load();
}

// ----------------------------------------------------------------------------- panels

namespace {

// What a batched call needs to run one item on any thread.
struct PanelCall {
  const Dense* d;
  PanelWork* work;
  int parts;
  int64_t panel_width, ldp_max, npanels, align;
  bool by_panel;
  uint64_t id;  // unique per call: the per-thread packed panel is reused only within it
  std::atomic<int>* next_part;  // !by_panel: per panel, the next part to claim
};

std::atomic<uint64_t> g_panel_call{0};

// The panel in this thread's buffer: (call id, panel index).
struct PackedPanel {
  uint64_t call = 0;
  int64_t panel = -1;
};
PackedPanel& packed_panel() {
  static thread_local PackedPanel p;
  return p;
}

// A (panel, part) for the thread running pair item i: the next part of the panel it has
// packed while one is left, else of its starting panel (i % npanels: on a quiet machine the
// threads' first items start them on different panels), else of the panel with the most parts
// left. There are as many items as pairs and each item claims one, so a claim succeeds when
// every item runs once; false (never a loop without end) if none is left.
bool claim_pair(const PanelCall& c, int64_t i, int64_t* panel, int* part) {
  const PackedPanel& pp = packed_panel();
  const int64_t first = pp.call == c.id ? pp.panel : i % c.npanels;
  for (int pass = 0;; ++pass) {
    int64_t pi = first;
    if (pass > 0) {  // the panel with the most parts left (a scan: npanels < 4 * threads)
      int best = 0;  // counters only grow: a stale read overstates what is left, never hides it
      for (int64_t q = 0; q < c.npanels; ++q) {
        const int left = c.parts - c.next_part[q].load(std::memory_order_relaxed);
        if (left > best) best = left, pi = q;
      }
      if (best == 0) return false;
    }
    const int p = c.next_part[pi].fetch_add(1, std::memory_order_relaxed);
    if (p < c.parts) {
      *panel = pi;
      *part = p;
      return true;
    }
  }
}

int run_panel_item(void* ctx, int64_t i) {
  const PanelCall& c = *static_cast<const PanelCall*>(ctx);
  const Dense& d = *c.d;
  int64_t pi = i;
  int part = 0;
  if (!c.by_panel && !claim_pair(c, i, &pi, &part)) return kInternal;
  const int64_t n0 = pi * c.panel_width;
  const int64_t nb = min_i64(c.panel_width, d.N - n0), ldp = round_up(nb, c.align);
  float* P = scratch_panel().get_as<float>(max_i64(d.K, 1), c.ldp_max);
  if (P == nullptr) return kNoMemory;
  PackedPanel& pp = packed_panel();
  if (pp.call != c.id || pp.panel != pi) {
    pack_panel(d, n0, nb, ldp, 0, d.K, P);
    pp.call = c.id;
    pp.panel = pi;
  }
  if (!c.by_panel) return c.work->run(part, P, ldp, n0, nb);
  for (int p = 0; p < c.parts; ++p) {
    const int s = c.work->run(p, P, ldp, n0, nb);
    if (s != kOk) return s;
  }
  return kOk;
}

}  // namespace

int run_panels(const Dense& d, int threads, int parts, int64_t panel_width, PanelWork& work,
               int64_t align) {
  PanelCall c;
  c.d = &d;
  c.work = &work;
  c.parts = parts;
  c.panel_width = panel_width;
  c.align = align;
  c.ldp_max = round_up(min_i64(panel_width, d.N), align);
  c.npanels = ceil_div(d.N, panel_width);
  // With enough panels each item is a whole panel (packed once, by the thread that runs it);
  // otherwise (panel, part) pairs, each thread staying on the panel it packed (claim_pair).
  // A few whole panels, even one per thread, would be a static split: under load the call
  // waited for the thread whose core was busy (CSC 90% 4096² N=64, 2 threads: 2 panels of 32
  // columns, one busy core: the one-thread time, 1.5-1.7x the quiet time).
  c.by_panel = !panels_shared(threads, d.N, panel_width);
  c.id = g_panel_call.fetch_add(1) + 1;
  std::unique_ptr<std::atomic<int>[]> next_part;
  if (!c.by_panel) {
    next_part.reset(new (std::nothrow) std::atomic<int>[c.npanels]);
    if (!next_part) return kNoMemory;
    for (int64_t q = 0; q < c.npanels; ++q) next_part[q].store(0, std::memory_order_relaxed);
  }
  c.next_part = next_part.get();
  const int64_t items = c.by_panel ? c.npanels : c.npanels * parts;
  return run_items(items, threads, &run_panel_item, &c);
}

bool split_panel_tail(const Dense& d, int64_t max_tail, Dense* head, Dense* tail) {
  // AVX-512: up to max_tail columns past 16q. AVX2 (8-column ymm panels, no small-N kernel):
  // one column past 16q, the panel's third vector of 17 columns or a whole extra panel pass
  // at 33 (fused into the panel work: 1.0-1.35x at 17 and 33 columns; at 25 and 41 it saved
  // less than the GEMV costs; 9-11 columns, split as a separate pass, measured 0.66-0.95x;
  // bench/results/semi24-fused-tail-2026-12-06, panel-tail-2026-12-05).
  constexpr int64_t w = 16;
  const Isa isa = active_isa();
  if (isa == Isa::kAvx2 && max_tail > 1) max_tail = 1;
  if ((isa != Isa::kAvx512 && isa != Isa::kAvx2) || d.N <= w) return false;
  const int64_t r = d.N % w;
  if (r < 1 || r > max_tail) return false;
  *head = d;
  *tail = d;
  head->N = d.N - r;
  tail->N = r;
  tail->B = d.B + head->N * d.ldb_n;
  tail->Y = d.Y + head->N * d.ldy_n;
  return true;
}

int split_panel_tail(const Dense& d, int64_t max_tail, Dense* head, Dense* tail, PanelTail* pt) {
  *pt = PanelTail();
  if (!split_panel_tail(d, max_tail, head, tail)) return kOk;
  pt->X = tail->N == 1 ? gemv_x(*tail) : small_n_columns(*tail, &pt->ldx);
  if (pt->X == nullptr) return kNoMemory;
  pt->d = tail;
  return kOk;
}

const float* gemv_x(const Dense& d) {
  if (d.ldb_k == 1 || d.K <= 1) return d.B;
  float* x = scratch_x().get_as<float>(d.K);
  if (x == nullptr) return nullptr;
  for (int64_t k = 0; k < d.K; ++k) x[k] = d.B[k * d.ldb_k];
  return x;
}

void bytes_equal_each(const void* const* a, const void* const* b, const size_t* n, int count,
                      int threads, bool* equal) {
  // Parts of at least 64 KB over all pairs together (one pool round trip): inside a model
  // the bytes come from the LLC or memory, where a 64 KB part costs a few microseconds,
  // about a round trip on a team that is awake.
  constexpr size_t kMinPart = size_t{1} << 16;
  if (count > kMaxComparePairs) {
    for (int t = 0; t < count; t += kMaxComparePairs) {
      const int c = count - t < kMaxComparePairs ? count - t : kMaxComparePairs;
      bytes_equal_each(a + t, b + t, n + t, c, threads, equal + t);
    }
    return;
  }
  size_t total = 0;
  for (int t = 0; t < count; ++t) total += n[t];
  const size_t by_size = total / kMinPart;
  const int parts = static_cast<int>(by_size < 1 ? 1 : by_size < 64 ? by_size : 64);
  std::atomic<bool> differ[kMaxComparePairs];
  for (int t = 0; t < count; ++t) differ[t].store(false, std::memory_order_relaxed);
  parallel_parts(parts, threads < parts ? threads : parts, [&](int p) {
    // Part p: bytes [lo, hi) of the pairs laid end to end.
    const size_t lo = total * p / parts, hi = total * (p + 1) / parts;
    size_t start = 0;
    for (int t = 0; t < count; start += n[t], ++t) {
      const size_t s = lo > start ? lo - start : 0, e = hi - start < n[t] ? hi - start : n[t];
      if (hi <= start || s >= e || differ[t].load(std::memory_order_relaxed)) continue;
      if (std::memcmp(static_cast<const char*>(a[t]) + s, static_cast<const char*>(b[t]) + s,
                      e - s) != 0)
        differ[t].store(true, std::memory_order_relaxed);
    }
    return static_cast<int>(kOk);
  });
  for (int t = 0; t < count; ++t) equal[t] = !differ[t].load();
}

bool bytes_equal(const void* a, const void* b, size_t n, int threads) {
  bool equal = true;
  bytes_equal_each(&a, &b, &n, 1, threads, &equal);
  return equal;
}

const float* small_n_columns(const Dense& d, int64_t* ldx) {
  if (d.ldb_k == 1 || d.K <= 1) {
    *ldx = d.ldb_n;
    return d.B;
  }
  float* X = scratch_x().get_as<float>(d.N, max_i64(d.K, 1));
  if (X == nullptr) return nullptr;
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t k = 0; k < d.K; ++k) X[n * d.K + k] = d.B[k * d.ldb_k + n * d.ldb_n];
  *ldx = d.K;
  return X;
}

}  // namespace cpu
}  // namespace sparsekern
