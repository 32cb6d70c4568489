// Which instruction set the CPU kernels use, chosen at run time.
//
// The AVX2+FMA kernels are compiled into the same binary as the portable ones with
// per-function target attributes (SK_AVX2 in simd_avx2.h), so the build works with the
// compiler's baseline flags on any x86-64 and on aarch64; they run only when the CPU has
// AVX2, FMA and F16C. The AVX-512 kernels (SK_AVX512 in simd_avx512.h) likewise, when the CPU
// has AVX-512 F/BW/VL/DQ and the OS saves the zmm state (XCR0). SPARSEKERN_CPU_ISA=
// portable|avx2|avx512|auto, read at every call, forces one (tests run every one the CPU has).
#pragma once

namespace sparsekern {
namespace cpu {

enum class Isa { kPortable, kAvx2, kAvx512 };

// The ISA for this call: the environment switch, limited by what the CPU has.
Isa active_isa();

// Whether this CPU (and OS) can run the AVX2 kernels.
bool cpu_has_avx2();

// Whether this CPU (and OS) can run the AVX-512 kernels.
bool cpu_has_avx512();

// Whether SPARSEKERN_CPU_ISA is unset or one of portable, avx2, avx512, auto; `value` gets
// its text.
bool isa_env_valid(const char** value);

}  // namespace cpu
}  // namespace sparsekern
