// Run-time ISA choice (see isa.h).
#include "isa.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>

#include <pthread.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "kernels.h"

namespace sparsekern {
namespace cpu {

namespace {
bool detect_avx2() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  // libgcc's feature bits already account for OS support of the ymm state (XGETBV).
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool detect_avx512() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (!detect_avx2() || !__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq"))
    return false;
  // The OS must save the opmask and zmm state (XCR0 bits 5-7) besides xmm/ymm (bits 1-2);
  // checked here too, not only left to the compiler runtime's feature bits.
  uint32_t ecx = 0, eax, ebx, edx;
  __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1), "c"(0));
  if ((ecx & (1u << 27)) == 0) return false;  // no OSXSAVE: XGETBV unavailable
  uint32_t xcr0_lo, xcr0_hi;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  return (xcr0_lo & 0xE6u) == 0xE6u;
#else
  return false;
#endif
}
// Intel's AVX-512 gathers and scatters run at a few cycles per element; Zen 4/5 microcode
// them (a 16-entry gather-FMA-scatter measured ~2x slower there than 16 scalar
// read-FMA-writes, ~1.3-1.6x faster on a Sapphire Rapids-class Xeon).
bool detect_intel() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  uint32_t eax, ebx, ecx, edx;
  __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(0), "c"(0));
  char vendor[13];
  std::memcpy(vendor, &ebx, 4);
  std::memcpy(vendor + 4, &edx, 4);
  std::memcpy(vendor + 8, &ecx, 4);
  vendor[12] = '\0';
  return std::strcmp(vendor, "GenuineIntel") == 0;
#else
  return false;
#endif
}

// The last-level cache's bytes from cpuid's deterministic cache parameters (Intel leaf 4, AMD
// leaf 0x8000001D: one subleaf per cache, the highest level wins); 0 when the CPU gives none.
int64_t detect_llc_bytes() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  uint32_t eax, ebx, ecx, edx;
  __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(0x80000000u), "c"(0));
  uint32_t leaf = 0;
  if (detect_intel()) {
    __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(0), "c"(0));
    if (eax >= 4) leaf = 4;
  } else if (eax >= 0x8000001Du) {
    leaf = 0x8000001Du;
  }
  if (leaf == 0) return 0;
  int64_t best = 0;
  int best_level = 0;
  for (uint32_t sub = 0; sub < 16; ++sub) {
    __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(leaf), "c"(sub));
    if ((eax & 31u) == 0) break;  // no more caches
    const int level = static_cast<int>((eax >> 5) & 7u);
    const int64_t bytes = static_cast<int64_t>((ebx >> 22) + 1) * (((ebx >> 12) & 1023u) + 1) *
                          ((ebx & 4095u) + 1) * (static_cast<int64_t>(ecx) + 1);
    if (level > best_level || (level == best_level && bytes > best)) {
      best_level = level;
      best = bytes;
    }
  }
  return best;
#else
  return 0;
#endif
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Whether two clock reads in a row take under 100 ns: the least of 16 pairs, so a preempted
// pair (a busy machine) cannot make a fast clock look slow.
bool detect_fast_clock() {
  int64_t best = INT64_MAX;
  for (int i = 0; i < 16; ++i) {
    const int64_t t0 = now_ns();
    const int64_t t1 = now_ns();
    if (t1 - t0 < best) best = t1 - t0;
  }
  return best < 100;
}

inline void load_fence() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_lfence();
#endif
}
}  // namespace

bool cpu_has_avx512() {
  static const bool has = detect_avx512();
  return has;
}

bool cpu_has_avx2() {
  static const bool has = detect_avx2();
  return has;
}

namespace {
enum PrefetchChoice { kPrefetchAuto = 0, kPrefetchAlways = 1, kPrefetchNever = 2 };

// SPARSEKERN_CPU_ISA as last read by isa_reload(): read once at load and on an explicit
// reload, never per call (a getenv per call costs time and races with setenv in other
// threads). `isa` is what the kernels load on every call; `env` only feeds error messages.
struct IsaState {
  std::atomic<int> isa{static_cast<int>(Isa::kPortable)};
  std::atomic<int> env_status{static_cast<int>(IsaEnvStatus::kOk)};
  std::atomic<bool> vector_scatter{false};
  std::atomic<bool> register_broadcast{false};
  std::atomic<int> prefetch{0};  // PrefetchChoice
  std::mutex mu;
  std::string env;  // the offending variable's text (guarded by mu)
};

IsaState& state();

void read_env(IsaState& st) {
  const char* v = std::getenv("SPARSEKERN_CPU_ISA");
  const std::string text = v == nullptr ? "" : v;
  IsaEnvStatus status = IsaEnvStatus::kOk;
  if (!(text.empty() || text == "auto" || text == "portable" || text == "avx2" ||
        text == "avx512"))
    status = IsaEnvStatus::kUnknown;
  else if (text == "avx2" && !cpu_has_avx2())
    status = IsaEnvStatus::kAvx2Missing;
  else if (text == "avx512" && !cpu_has_avx512())
    status = IsaEnvStatus::kAvx512Missing;
  Isa isa;
  if (text == "portable")
    isa = Isa::kPortable;
  else if (text == "avx2")
    isa = cpu_has_avx2() ? Isa::kAvx2 : Isa::kPortable;
  else if (cpu_has_avx512())
    isa = Isa::kAvx512;
  else
    isa = cpu_has_avx2() ? Isa::kAvx2 : Isa::kPortable;
  const char* sv = std::getenv("SPARSEKERN_CPU_SCATTER");
  const std::string scatter = sv == nullptr ? "" : sv;
  bool vector = detect_intel();
  if (scatter == "scalar" || scatter == "vector")
    vector = scatter == "vector";
  else if (!(scatter.empty() || scatter == "auto") && status == IsaEnvStatus::kOk)
    status = IsaEnvStatus::kUnknownScatter;
  const char* bv = std::getenv("SPARSEKERN_CPU_BROADCAST");
  const std::string broadcast = bv == nullptr ? "" : bv;
  bool in_registers = !detect_intel();
  if (broadcast == "register" || broadcast == "load")
    in_registers = broadcast == "register";
  else if (!(broadcast.empty() || broadcast == "auto") && status == IsaEnvStatus::kOk)
    status = IsaEnvStatus::kUnknownBroadcast;
  const char* pv = std::getenv("SPARSEKERN_CPU_PREFETCH");
  const std::string prefetch = pv == nullptr ? "" : pv;
  int fetch = kPrefetchAuto;
  if (prefetch == "always" || prefetch == "never")
    fetch = prefetch == "always" ? kPrefetchAlways : kPrefetchNever;
  else if (!(prefetch.empty() || prefetch == "auto") && status == IsaEnvStatus::kOk)
    status = IsaEnvStatus::kUnknownPrefetch;
  std::lock_guard<std::mutex> lock(st.mu);
  st.env = status == IsaEnvStatus::kUnknownScatter     ? scatter
           : status == IsaEnvStatus::kUnknownBroadcast ? broadcast
           : status == IsaEnvStatus::kUnknownPrefetch  ? prefetch
                                                       : text;
  st.prefetch.store(fetch);
  st.env_status.store(static_cast<int>(status));
  st.vector_scatter.store(vector);
  st.register_broadcast.store(in_registers);
  st.isa.store(static_cast<int>(isa));
}

IsaState& state() {
  static IsaState* st = [] {
    auto* s = new IsaState();  // never destroyed: kernels may run during exit
    read_env(*s);
    return s;
  }();
  return *st;
}

// Read at load, so the first call pays nothing.
const bool g_read_at_load = (state(), true);

// A forked child's lock starts unlocked whatever another thread of the parent held at the fork.
void after_fork_child() { new (&state().mu) std::mutex(); }
const bool g_fork_handler = (pthread_atfork(nullptr, nullptr, &after_fork_child), true);
}  // namespace

void isa_reload() { read_env(state()); }

IsaEnvStatus isa_env_status(std::string* value) {
  IsaState& st = state();
  const auto status = static_cast<IsaEnvStatus>(st.env_status.load(std::memory_order_relaxed));
  if (status != IsaEnvStatus::kOk && value != nullptr) {
    std::lock_guard<std::mutex> lock(st.mu);
    *value = st.env;
  }
  return status;
}

Isa active_isa() { return static_cast<Isa>(state().isa.load(std::memory_order_relaxed)); }

bool vector_scatter() { return state().vector_scatter.load(std::memory_order_relaxed); }
bool broadcast_in_registers() {
  return state().register_broadcast.load(std::memory_order_relaxed);
}

bool probe_says_cached(int64_t elapsed_ns, int64_t bytes, int64_t llc_bytes, bool fast_clock) {
  const int64_t limit = (llc_bytes > 0 ? llc_bytes : int64_t{8} << 20) / 4;
  return fast_clock && bytes > 0 && bytes <= limit && elapsed_ns >= 0 &&
         elapsed_ns < kCachedProbeNanos;
}

bool weight_looks_cached(const void* p, int64_t bytes) {
  static const int64_t llc = detect_llc_bytes();
  static const bool fast_clock = detect_fast_clock();
  if (p == nullptr || !probe_says_cached(0, bytes, llc, fast_clock)) return false;
  const char* c = static_cast<const char*>(p);
  // Offsets 1/16, 3/16, ..., 15/16 of the way, rounded down to a line: inside [p, p + bytes).
  // Their loads overlap: the probe takes about the slowest one's time.
  int64_t off[8];
  for (int i = 0; i < 8; ++i) off[i] = (bytes / 16) * (2 * i + 1) & ~int64_t{63};
  load_fence();
  const int64_t t0 = now_ns();
  load_fence();
  int sum = 0;
  for (int i = 0; i < 8; ++i) sum += *reinterpret_cast<const volatile char*>(c + off[i]);
  load_fence();  // the loads are done before the clock is read again
  const int64_t t1 = now_ns();
  volatile int sink = sum;  // the loads count
  (void)sink;
  return probe_says_cached(t1 - t0, bytes, llc, fast_clock);
}

bool fetch_next_tiles(const void* p, int64_t bytes) {
  switch (state().prefetch.load(std::memory_order_relaxed)) {
    case kPrefetchAlways: return true;
    case kPrefetchNever: return false;
    default: return !weight_looks_cached(p, bytes);
  }
}

bool fetch_next_tiles(bool looks_cached) {
  switch (state().prefetch.load(std::memory_order_relaxed)) {
    case kPrefetchAlways: return true;
    case kPrefetchNever: return false;
    default: return !looks_cached;
  }
}

const char* active_isa_name() {
  switch (active_isa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "portable";
  }
}

}  // namespace cpu
}  // namespace sparsekern
