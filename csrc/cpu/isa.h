// Which instruction set the CPU kernels use, chosen at run time.
//
// The AVX2+FMA kernels are compiled into the same binary as the portable ones with
// per-function target attributes (SK_AVX2 in simd_avx2.h), so the build works with the
// compiler's baseline flags on any x86-64 and on aarch64; they run only when the CPU has
// AVX2, FMA and F16C. The AVX-512 kernels (SK_AVX512 in simd_avx512.h) likewise, when the CPU
// has AVX-512 F/BW/VL/DQ and the OS saves the zmm state (XCR0). SPARSEKERN_CPU_ISA=
// portable|avx2|avx512|auto forces one (tests run every one the CPU has); it is read once at
// load and again on isa_reload() (Python: sparsekern.backends.reload_env()), never per call.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

namespace sparsekern {
namespace cpu {

enum class Isa { kPortable, kAvx2, kAvx512 };

// The ISA for this call: the environment switch (as last read), limited by what the CPU has.
Isa active_isa();

// Read SPARSEKERN_CPU_ISA again (done once at load).
void isa_reload();

// Whether this CPU (and OS) can run the AVX2 kernels.
bool cpu_has_avx2();

// Whether this CPU (and OS) can run the AVX-512 kernels.
bool cpu_has_avx512();

// Whether this CPU's vector gathers and scatters are fast (Intel; AMD's Zen 4/5 microcode
// them): the AVX-512 CSC GEMV then scatters 16 entries of a column with one
// gather-FMA-scatter (true) instead of scalar read-FMA-writes, and the CSC panels run a tail
// column past 16q as a row-gather GEMV wherever they may (csc_tail_columns).
// SPARSEKERN_CPU_SCATTER=vector|scalar|auto (auto: vector on Intel, scalar elsewhere), read
// with SPARSEKERN_CPU_ISA. Both give the same sums.
bool vector_scatter();

// Whether the AVX-512 panel kernels make a stored weight's 16-lane broadcast in registers (one
// load of 4 consecutive weights, then an in-lane permute per weight) instead of one broadcast
// load per weight. Their loops are bound by the load ports (a broadcast and a panel row per
// multiply-add): on AMD's Zen 4/5, whose shuffles have ports of their own, the permutes free
// a load per weight (2:4 at 12-32 columns 1.1-1.29x); Intel's 512-bit shuffles share a port
// with its FMAs, so there the broadcast stays a load. SPARSEKERN_CPU_BROADCAST=register|load|
// auto (auto: load on Intel, register elsewhere), read with SPARSEKERN_CPU_ISA. A panel gives
// the same sums bit for bit either way (the same products added in the same order); 2:4 with
// float32 weights at 10-11 columns also changes kernel with it (register: the panel, load: the
// small-N kernel; sums equal up to rounding).
bool broadcast_in_registers();

// f(std::true_type{}) when broadcast_in_registers(), else f(std::false_type{}): the choice as
// a compile-time argument for the panel kernels' templates.
template <typename F>
auto with_broadcast_choice(F&& f) {
  return broadcast_in_registers() ? f(std::true_type{}) : f(std::false_type{});
}

// Whether the AVX-512 GEMVs of 2:4 and 1:4 and 2:4's 2-4 column kernel fetch the next tile
// of weight rows into L2 while they multiply the current one (NextTileFetch, common.h), and
// the AVX2 2:4 GEMV its row 4 KB ahead, for a weight of `bytes` at p. From memory the fetches make these loops 1.2-1.7x faster; with the
// weight in L2 or L3 they make them 1.3-1.4x slower (they take load slots in a loop bound by
// its loads; bench/results/gemv-fetch-probe-2026-12-07). SPARSEKERN_CPU_PREFETCH=
// always|never|auto, read with SPARSEKERN_CPU_ISA (auto: fetch unless weight_looks_cached).
// The same sums either way.
bool fetch_next_tiles(const void* p, int64_t bytes);
// The same choice for a caller that already probed: `looks_cached` = weight_looks_cached(...).
bool fetch_next_tiles(bool looks_cached);

// Whether the `bytes` at p look cached: they fit in a quarter of the last-level cache and 8
// lines spread over them load in under kCachedProbeNanos (on the Zen 5 VM from memory
// 470-1070 ns, from L2 or L3 20-90 ns, the clock reads included; in the op, over a rotation
// of weights 4x the LLC, 1.6% of the calls read under 150 ns). A call that is preempted
// during the probe reads "not cached" (the fetching loop: a little slower, never wrong);
// nothing is kept between calls. False when the clock is too slow to tell (a read pair
// over 100 ns, the least of 16 taken once).
bool weight_looks_cached(const void* p, int64_t bytes);
constexpr int64_t kCachedProbeNanos = 150;

// weight_looks_cached's verdict from its parts (pure; tests drive it with fake clocks):
// `elapsed_ns` the probe's time, `llc_bytes` the last-level cache (0: unknown, taken as
// 8 MB), `fast_clock` whether the clock can tell. With elapsed_ns = 0 it says whether a
// probe is worth taking at all.
bool probe_says_cached(int64_t elapsed_ns, int64_t bytes, int64_t llc_bytes, bool fast_clock);

enum class IsaEnvStatus {
  kOk, kUnknown, kAvx2Missing, kAvx512Missing, kUnknownScatter, kUnknownBroadcast,
  kUnknownPrefetch };

// Whether SPARSEKERN_CPU_ISA, _SCATTER, _BROADCAST and _PREFETCH (as last read) are unset
// or choices this CPU can honour; when one is not, `value` (if given) gets that variable's
// text.
IsaEnvStatus isa_env_status(std::string* value);

}  // namespace cpu
}  // namespace sparsekern
