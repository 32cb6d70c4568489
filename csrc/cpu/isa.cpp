// Run-time ISA choice (see isa.h).
#include "isa.h"

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
}  // namespace

bool cpu_has_avx2() {
  static const bool has = detect_avx2();
  return has;
}

bool isa_env_valid(const char** value) {
  const char* v = std::getenv("SPARSEKERN_CPU_ISA");
  *value = v;
  return v == nullptr || v[0] == '\0' || std::strcmp(v, "auto") == 0 ||
         std::strcmp(v, "portable") == 0 || std::strcmp(v, "avx2") == 0;
}

Isa active_isa() {
  const char* v = std::getenv("SPARSEKERN_CPU_ISA");
  if (v != nullptr && std::strcmp(v, "portable") == 0) return Isa::kPortable;
  return cpu_has_avx2() ? Isa::kAvx2 : Isa::kPortable;
}

const char* active_isa_name() { return active_isa() == Isa::kAvx2 ? "avx2" : "portable"; }

}  // namespace cpu
}  // namespace sparsekern
