#include "/work/main/csrc/cpu/semi24.cpp"
#include <chrono>
#include <cstdio>
#include <cstdlib>
using namespace sparsekern::cpu;
namespace sparsekern { namespace cpu { namespace {
// Variant A: precomputed indices (ii per slot, 8 per window), per half.
template <int NB>
SK_AVX512 void chunkA(const float* sv, const int32_t* si, const float* X, int64_t ldx, int64_t G, float* t) {
  __m512 acc[NB];
  SK_UNROLL for (int n = 0; n < NB; ++n) acc[n] = _mm512_load_ps(t + 16 * n);
  for (int64_t g = 0; g < G; g += 4) {  // a window of 4 groups = 16 columns
    const float* vq = sv + 2 * g * 16; const int32_t* iq = si + 2 * g * 16;
    SK_UNROLL for (int h = 0; h < 2; ++h) {
      __m512 vv[4]; __m512i ii[4];
      SK_UNROLL for (int s = 0; s < 4; ++s) { vv[s] = _mm512_load_ps(vq + 16 * (4*h+s)); ii[s] = _mm512_load_si512(iq + 16 * (4*h+s)); }
      SK_UNROLL for (int n = 0; n < NB; ++n) {
        const __m512 xz = _mm512_castps256_ps512(_mm256_loadu_ps(X + n * ldx + 4 * g + 8 * h));
        SK_UNROLL for (int s = 0; s < 4; ++s) acc[n] = _mm512_fmadd_ps(vv[s], _mm512_permutexvar_ps(ii[s], xz), acc[n]);
      }
    }
  }
  SK_UNROLL for (int n = 0; n < NB; ++n) _mm512_store_ps(t + 16 * n, acc[n]);
}
// Variant B: 16 activations per column per window (one zmm load), indices 0..15; 2 sums per column alternate.
template <int NB>
SK_AVX512 void chunkB(const float* sv, const int32_t* si, const float* X, int64_t ldx, int64_t G, float* t) {
  __m512 acc[NB];
  SK_UNROLL for (int n = 0; n < NB; ++n) acc[n] = _mm512_load_ps(t + 16 * n);
  for (int64_t g = 0; g < G; g += 4) {
    const float* vq = sv + 2 * g * 16; const int32_t* iq = si + 2 * g * 16;
    SK_UNROLL for (int h = 0; h < 2; ++h) {
      __m512 vv[4]; __m512i ii[4];
      SK_UNROLL for (int s = 0; s < 4; ++s) { vv[s] = _mm512_load_ps(vq + 16 * (4*h+s)); ii[s] = _mm512_add_epi32(_mm512_load_si512(iq + 16 * (4*h+s)), _mm512_set1_epi32(8*h)); }
      SK_UNROLL for (int n = 0; n < NB; ++n) {
        const __m512 xz = _mm512_loadu_ps(X + n * ldx + 4 * g);
        SK_UNROLL for (int s = 0; s < 4; ++s) acc[n] = _mm512_fmadd_ps(vv[s], _mm512_permutexvar_ps(ii[s], xz), acc[n]);
      }
    }
  }
  SK_UNROLL for (int n = 0; n < NB; ++n) _mm512_store_ps(t + 16 * n, acc[n]);
}
// Variant C: slots outer-2: per pair of slots (one group), per column 2 FMAs; 2 vv + 2 ii live.
template <int NB>
SK_AVX512 void chunkC(const float* sv, const int32_t* si, const float* X, int64_t ldx, int64_t G, float* t) {
  __m512 acc[NB];
  SK_UNROLL for (int n = 0; n < NB; ++n) acc[n] = _mm512_load_ps(t + 16 * n);
  for (int64_t g = 0; g < G; g += 4) {
    const float* vq = sv + 2 * g * 16; const int32_t* iq = si + 2 * g * 16;
    SK_UNROLL for (int h = 0; h < 2; ++h) {
      __m512 vv[4]; __m512i ii[4];
      SK_UNROLL for (int s = 0; s < 4; ++s) { vv[s] = _mm512_load_ps(vq + 16 * (4*h+s)); ii[s] = _mm512_load_si512(iq + 16 * (4*h+s)); }
      SK_UNROLL for (int n = 0; n < NB; n += 2) {
        const __m512 x0 = _mm512_castps256_ps512(_mm256_loadu_ps(X + n * ldx + 4 * g + 8 * h));
        const __m512 x1 = _mm512_castps256_ps512(_mm256_loadu_ps(X + (n+1) * ldx + 4 * g + 8 * h));
        SK_UNROLL for (int s = 0; s < 4; ++s) { acc[n] = _mm512_fmadd_ps(vv[s], _mm512_permutexvar_ps(ii[s], x0), acc[n]);
          acc[n+1] = _mm512_fmadd_ps(vv[s], _mm512_permutexvar_ps(ii[s], x1), acc[n+1]); }
      }
    }
  }
  SK_UNROLL for (int n = 0; n < NB; ++n) _mm512_store_ps(t + 16 * n, acc[n]);
}

// Variant D: in-lane vpermilps on a 128-bit broadcast of each group's 4 activations.
template <int NB>
SK_AVX512 void chunkD(const float* sv, const int32_t* si, const float* X, int64_t ldx, int64_t G, float* t) {
  __m512 acc[NB];
  SK_UNROLL for (int n = 0; n < NB; ++n) acc[n] = _mm512_load_ps(t + 16 * n);
  for (int64_t g = 0; g < G; g += 2) {
    const float* vq = sv + 2 * g * 16; const int32_t* iq = si + 2 * g * 16;
    __m512 vv[4]; __m512i ii[4];
    SK_UNROLL for (int s = 0; s < 4; ++s) { vv[s] = _mm512_load_ps(vq + 16 * s); ii[s] = _mm512_load_si512(iq + 16 * s); }
    SK_UNROLL for (int n = 0; n < NB; ++n) {
      SK_UNROLL for (int h = 0; h < 2; ++h) {
        const __m512 xb = _mm512_broadcast_f32x4(_mm_loadu_ps(X + n * ldx + 4 * (g + h)));
        acc[n] = _mm512_fmadd_ps(vv[2*h], _mm512_permutevar_ps(xb, ii[2*h]), acc[n]);
        acc[n] = _mm512_fmadd_ps(vv[2*h+1], _mm512_permutevar_ps(xb, ii[2*h+1]), acc[n]);
      }
    }
  }
  SK_UNROLL for (int n = 0; n < NB; ++n) _mm512_store_ps(t + 16 * n, acc[n]);
}
}}}
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
int main(int argc, char** argv) {
  const int64_t K = 256, G = 64, NB = 16;
  alignas(64) static float sv[G * 2 * 16]; alignas(64) static int32_t si[G * 2 * 16]; alignas(64) static float X[NB * K]; alignas(64) static float t[16 * 16];
  for (auto& v : sv) v = rand() / (float)RAND_MAX; for (auto& x : X) x = rand() / (float)RAND_MAX;
  for (int64_t i = 0; i < G*2*16; ++i) si[i] = rand() % 8;
  long reps = 200000;
  for (int r = 0; r < 2; ++r) {
    double t0 = now(); for (long i = 0; i < reps; ++i) chunkA<16>(sv, si, X, K, G, t); double t1 = now();
    for (long i = 0; i < reps; ++i) chunkB<16>(sv, si, X, K, G, t); double t2 = now();
    for (long i = 0; i < reps; ++i) chunkC<16>(sv, si, X, K, G, t); double t3 = now();
    for (long i = 0; i < reps; ++i) chunkA<12>(sv, si, X, K, G, t); double t4 = now();
    for (long i = 0; i < reps; ++i) chunkD<16>(sv, si, X, K, G, t); double t5 = now();
    double f = reps * (double)G * 2 * 16 / 1e9;
    printf("A16 %.2f  B16 %.2f  C16 %.2f  A12 %.2f  D16 %.2f G vFMA/s (%g)\n", f/(t1-t0), f/(t2-t1), f/(t3-t2), f*12/16/(t4-t3), f/(t5-t4), t[3]);
  }
}
