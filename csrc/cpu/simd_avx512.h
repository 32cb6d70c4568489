// AVX-512 (F/BW/VL/DQ) helpers for the x86 kernels, compiled per function with target
// attributes like simd_avx2.h (see isa.h). Internal linkage only.
#pragma once

#include "simd_avx2.h"

#include <type_traits>

#if SK_HAVE_AVX2_KERNELS
#define SK_HAVE_AVX512_KERNELS 1

#define SK_AVX512_TARGET "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq"
#define SK_AVX512 __attribute__((target(SK_AVX512_TARGET)))
#define SK_AVX512_INLINE static inline __attribute__((target(SK_AVX512_TARGET), always_inline))

namespace sparsekern {
namespace cpu {
namespace {

// 16 weights -> 16 floats.
SK_AVX512_INLINE __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
SK_AVX512_INLINE __m512 load16(const bf16* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
SK_AVX512_INLINE __m512 load16(const f16* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// The first n (0..16) of 16 weights -> floats; the other lanes 0 and never read.
SK_AVX512_INLINE __mmask16 first_lanes16(int64_t n) {
  if (n <= 0) return 0;
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
}
SK_AVX512_INLINE __m512 load16_first(const float* p, int64_t n) {
  return _mm512_maskz_loadu_ps(first_lanes16(n), p);
}
SK_AVX512_INLINE __m512 load16_first(const bf16* p, int64_t n) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(first_lanes16(n), p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
SK_AVX512_INLINE __m512 load16_first(const f16* p, int64_t n) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(first_lanes16(n), p));
}

// One weight broadcast to 16 lanes.
SK_AVX512_INLINE __m512 bcast16(const float* p) { return _mm512_set1_ps(*p); }
SK_AVX512_INLINE __m512 bcast16(const bf16* p) {
  return _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(p->bits) << 16)));
}
SK_AVX512_INLINE __m512 bcast16(const f16* p) {
  return _mm512_cvtph_ps(_mm256_set1_epi16(static_cast<short>(p->bits)));
}

// 4 consecutive weights -> 4 floats, repeated in all four 128-bit lanes.
SK_AVX512_INLINE __m512 load4_dup16(const float* p) {
  return _mm512_broadcast_f32x4(_mm_loadu_ps(p));
}
SK_AVX512_INLINE __m512 load4_dup16(const bf16* p) {
  const __m128i w = _mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm512_broadcast_f32x4(_mm_castsi128_ps(_mm_slli_epi32(w, 16)));
}
SK_AVX512_INLINE __m512 load4_dup16(const f16* p) {
  return _mm512_broadcast_f32x4(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// The 4 consecutive weights p[0..3], each broadcast to 16 lanes into w[0..3]: by 4 broadcast
// loads, or with REG (broadcast_in_registers, isa.h) by in-lane permutes of one load, which
// frees 3 loads for panel kernels bound by their loads. 16-bit weights at NV >= 3 zmm per row
// keep the loads (their conversion is already a shuffle: bf16 2:4 at N=128 measured
// 0.96-0.98x with the permutes). The same values either way.
template <bool REG, int NV, typename T>
SK_AVX512_INLINE void bcast4x16(const T* p, __m512* w) {
  if (REG && (std::is_same<T, float>::value || NV <= 2)) {
    const __m512 w4 = load4_dup16(p);
    w[0] = _mm512_permute_ps(w4, 0x00);
    w[1] = _mm512_permute_ps(w4, 0x55);
    w[2] = _mm512_permute_ps(w4, 0xAA);
    w[3] = _mm512_permute_ps(w4, 0xFF);
  } else {
    for (int i = 0; i < 4; ++i) w[i] = bcast16(p + i);
  }
}

// Stores the first n (0 < n <= 16) lanes of v to p[0], p[stride], ...
SK_AVX512_INLINE void store_lanes16(float* p, int64_t stride, __m512 v, int64_t n) {
  if (stride == 1) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), v);
    return;
  }
  alignas(64) float tmp[16];
  _mm512_store_ps(tmp, v);
  for (int64_t j = 0; j < n; ++j) p[j * stride] = tmp[j];
}

// Transposes the 16x16 block held in r[0..16) in place: r[i] = row i's 16 values -> r[j] =
// value j of the 16 rows (4 stages of 16 shuffles; the 2:4 kernels, the backward's tiles and
// the attention kernel's Q packing share it).
SK_AVX512_INLINE void transpose16x16(__m512* r) {
  __m512 t[16];
  SK_UNROLL for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  SK_UNROLL for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  // r[4i + c], 128-bit lane L: rows 4i..4i+3 of value 4L + c.
  SK_UNROLL for (int c = 0; c < 4; ++c) {
    const __m512 ab0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
    const __m512 ab1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xDD);
    const __m512 ef0 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
    const __m512 ef1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xDD);
    t[c] = _mm512_shuffle_f32x4(ab0, ef0, 0x88);
    t[8 + c] = _mm512_shuffle_f32x4(ab0, ef0, 0xDD);
    t[4 + c] = _mm512_shuffle_f32x4(ab1, ef1, 0x88);
    t[12 + c] = _mm512_shuffle_f32x4(ab1, ef1, 0xDD);
  }
  SK_UNROLL for (int i = 0; i < 16; ++i) r[i] = t[i];
}

}  // namespace
}  // namespace cpu
}  // namespace sparsekern
#else
#define SK_HAVE_AVX512_KERNELS 0
#endif
