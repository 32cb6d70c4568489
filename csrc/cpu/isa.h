// Which instruction set the CPU kernels use, chosen at run time.
//
// The AVX2+FMA kernels are compiled into the same binary as the portable ones with
// per-function target attributes (SK_AVX2 in simd_avx2.h), so the build works with the
// compiler's baseline flags on any x86-64 and on aarch64; they run only when the CPU has
// AVX2, FMA and F16C. SPARSEKERN_CPU_ISA=portable|avx2|auto, read at every call, forces the
// portable kernels (tests run the suite once with each).
#pragma once

namespace sparsekern {
namespace cpu {

enum class Isa { kPortable, kAvx2 };

// The ISA for this call: the environment switch, limited by what the CPU has.
Isa active_isa();

// Whether this CPU (and OS) can run the AVX2 kernels.
bool cpu_has_avx2();

// Whether SPARSEKERN_CPU_ISA is unset or one of portable, avx2, auto; `value` gets its text.
bool isa_env_valid(const char** value);

}  // namespace cpu
}  // namespace sparsekern
