// Run-time ISA choice (see isa.h).
#include "isa.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

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
}  // namespace

bool cpu_has_avx512() {
  static const bool has = detect_avx512();
  return has;
}

bool cpu_has_avx2() {
  static const bool has = detect_avx2();
  return has;
}

bool isa_env_valid(const char** value) {
  const char* v = std::getenv("SPARSEKERN_CPU_ISA");
  *value = v;
  return v == nullptr || v[0] == '\0' || std::strcmp(v, "auto") == 0 ||
         std::strcmp(v, "portable") == 0 || std::strcmp(v, "avx2") == 0 ||
         std::strcmp(v, "avx512") == 0;
}

Isa active_isa() {
  const char* v = std::getenv("SPARSEKERN_CPU_ISA");
  if (v != nullptr && std::strcmp(v, "portable") == 0) return Isa::kPortable;
  if (v != nullptr && std::strcmp(v, "avx2") == 0)
    return cpu_has_avx2() ? Isa::kAvx2 : Isa::kPortable;
  if (cpu_has_avx512()) return Isa::kAvx512;
  return cpu_has_avx2() ? Isa::kAvx2 : Isa::kPortable;
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
