// Run-time ISA choice (see isa.h).
#include "isa.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>

#include <pthread.h>

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
// SPARSEKERN_CPU_ISA as last read by isa_reload(): read once at load and on an explicit
// reload, never per call (a getenv per call costs time and races with setenv in other
// threads). `isa` is what the kernels load on every call; `env` only feeds error messages.
struct IsaState {
  std::atomic<int> isa{static_cast<int>(Isa::kPortable)};
  std::atomic<int> env_status{static_cast<int>(IsaEnvStatus::kOk)};
  std::atomic<bool> vector_scatter{false};
  std::atomic<bool> register_broadcast{false};
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
  std::lock_guard<std::mutex> lock(st.mu);
  st.env = status == IsaEnvStatus::kUnknownScatter     ? scatter
           : status == IsaEnvStatus::kUnknownBroadcast ? broadcast
                                                       : text;
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

const char* active_isa_name() {
  switch (active_isa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "portable";
  }
}

}  // namespace cpu
}  // namespace sparsekern
