// AVX2+FMA helpers for the x86 kernels, compiled per function with target attributes so the
// rest of the build keeps the compiler's baseline flags (see isa.h). Everything here has
// internal linkage: no AVX2 copy of an inline function can leak into portable code.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#define SK_HAVE_AVX2_KERNELS 1
#include <immintrin.h>

#include "common.h"

// Every function that uses AVX2 intrinsics carries SK_AVX2 (lambdas do not inherit it, so
// none are used inside such functions).
#define SK_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SK_AVX2_INLINE static inline __attribute__((target("avx2,fma,f16c"), always_inline))
// Fully unrolls a loop over accumulator indices: GCC keeps an array of __m256 in registers
// only when every index is a constant (otherwise it mirrors each FMA with a stack store).
#define SK_UNROLL _Pragma("GCC unroll 16")

namespace sparsekern {
namespace cpu {
namespace {

// 8 weights -> 8 floats.
SK_AVX2_INLINE __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
SK_AVX2_INLINE __m256 load8(const bf16* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
SK_AVX2_INLINE __m256 load8(const f16* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// One weight broadcast to 8 lanes.
SK_AVX2_INLINE __m256 bcast(const float* p) { return _mm256_broadcast_ss(p); }
SK_AVX2_INLINE __m256 bcast(const bf16* p) {
  return _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(p->bits) << 16)));
}
SK_AVX2_INLINE __m256 bcast(const f16* p) {
  return _mm256_cvtph_ps(_mm_set1_epi16(static_cast<short>(p->bits)));
}

// 4 consecutive weights -> 4 floats, repeated in both 128-bit halves (one load; each weight
// is then broadcast with an in-register vpermilps instead of a load of its own).
SK_AVX2_INLINE __m256 load4_dup(const float* p) {
  return _mm256_broadcast_ps(reinterpret_cast<const __m128*>(p));
}
SK_AVX2_INLINE __m256 load4_dup(const bf16* p) {
  const __m128i w = _mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  const __m128 f = _mm_castsi128_ps(_mm_slli_epi32(w, 16));
  return _mm256_set_m128(f, f);
}
SK_AVX2_INLINE __m256 load4_dup(const f16* p) {
  const __m128 f = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm256_set_m128(f, f);
}

SK_AVX2_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Stores the first n (0 < n <= 8) lanes of v to p[0], p[stride], ... (stride 1: one store
// when n == 8).
SK_AVX2_INLINE void store_lanes(float* p, int64_t stride, __m256 v, int64_t n) {
  if (stride == 1 && n == 8) {
    _mm256_storeu_ps(p, v);
    return;
  }
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  for (int64_t j = 0; j < n; ++j) p[j * stride] = tmp[j];
}

// Transposes the 8x8 block held in r[0..8) (r[i] = row i) in place (r[j] = column j).
SK_AVX2_INLINE void transpose8x8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// Writes rows [0, R) x columns [0, nb) of the tile t (row stride ldt, R <= 8) to a
// column-major Y: y[j * ldy + r] = t[r * ldt + j]. A Linear's output is column-major in
// the op's terms (Y = A @ x.T, stored as [N, M]); writing it row by row would scatter one
// float per cache line, so full tiles go through an 8x8 register transpose and each column
// is one 8-float store.
SK_AVX2_INLINE void store_tile_cols(const float* t, int64_t ldt, int R, int64_t nb, float* y,
                                    int64_t ldy) {
  int64_t j = 0;
  if (R == 8) {
    for (; j + 8 <= nb; j += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(t + i * ldt + j);
      transpose8x8(r);
      for (int c = 0; c < 8; ++c) _mm256_storeu_ps(y + (j + c) * ldy, r[c]);
    }
  }
  for (; j < nb; ++j)
    for (int i = 0; i < R; ++i) y[j * ldy + i] = t[i * ldt + j];
}

}  // namespace
}  // namespace cpu
}  // namespace sparsekern
#else
#define SK_HAVE_AVX2_KERNELS 0
#endif
