// Fused attention for short sequences (encoders): one work item is a block of up to 4 * W
// query rows of one (batch, head); its scores, probabilities and output stay in L1/L2-sized
// scratch, so the [Sq, Sk] score matrix never goes to memory and no head-layout copies are
// made (any strides in and out). See kernels.h for the contract.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <cstring>
#include <new>
#include <vector>

#include "isa.h"
#include "kernels.h"
#include "parallel.h"
#include "simd_avx512.h"

namespace sparsekern {
namespace cpu {
namespace {

// Below this many multiply-adds a call runs on the calling thread (waking helpers costs more).
constexpr int64_t kAttentionSerialFmas = int64_t{1} << 18;

// Scratch of one thread, grown on demand and kept (a call's items reuse it).
struct AttScratch {
  std::vector<float> qt, tile, vp, ob, linv;
};
AttScratch& att_scratch() {
  thread_local AttScratch s;
  return s;
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// The portable kernel: one query row at a time, accumulating in T.
template <typename T>
int attention_rows(const AttentionArgs<T>& a, int64_t b, int64_t h, int64_t i0, int64_t i1,
                   std::vector<T>& p) {
  const int64_t hk = h / (a.H / a.Hkv);
  const T* q = a.q + b * a.q_b + h * a.q_h;
  const T* k = a.k + b * a.k_b + hk * a.k_h;
  const T* v = a.v + b * a.v_b + hk * a.v_h;
  const T* mask = a.mask != nullptr ? a.mask + b * a.m_b + h * a.m_h : nullptr;
  T* o = a.out + b * a.o_b + h * a.o_h;
  p.resize(static_cast<size_t>(a.Sk));
  for (int64_t i = i0; i < i1; ++i) {
    T mx = -INFINITY;
    for (int64_t j = 0; j < a.Sk; ++j) {
      T s = 0;
      for (int64_t d = 0; d < a.D; ++d) s += q[i * a.q_s + d * a.q_d] * k[j * a.k_s + d * a.k_d];
      s = s * a.scale + (mask != nullptr ? mask[i * a.m_i + j * a.m_j] : T(0));
      p[j] = s;
      mx = s > mx ? s : mx;
    }
    // a fully masked row (every score -inf) gives 0, as scaled_dot_product_attention; a NaN
    // score still gives NaN (through p)
    const bool masked = mx == -INFINITY;
    T l = 0;
    for (int64_t j = 0; j < a.Sk; ++j) {
      p[j] = std::exp(p[j] - (masked ? T(0) : mx));
      l += p[j];
    }
    const T linv = masked ? T(0) : T(1) / l;
    for (int64_t d = 0; d < a.Dv; ++d) {
      T acc = 0;
      for (int64_t j = 0; j < a.Sk; ++j) acc += p[j] * v[j * a.v_s + d * a.v_d];
      o[i * a.o_s + d * a.o_d] = acc * linv;
    }
  }
  return kOk;
}

// exp's degree-7 Taylor coefficients on |r| <= ln2 / 2, highest first (Horner).
constexpr float kExpTaylor[8] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24,
                                 1.0f / 6,    0.5f,        1.0f,        1.0f};

#if SK_HAVE_AVX512_KERNELS
// exp(x) for float lanes: 2^n * p(r), r = x - n ln2 (two-part ln2), a degree-7 Taylor p on
// |r| <= ln2 / 2 (truncation < 6e-9 relative); vscalefps gives 0 for -inf. NaN propagates:
// vmaxps/vminps return their second operand when either is NaN.
SK_AVX512_INLINE __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(88.72f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(kExpTaylor[0]);
  SK_UNROLL for (int c = 1; c < 8; ++c) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpTaylor[c]));
  return _mm512_scalef_ps(p, n);
}

#define SK_ATT_FN(name) SK_AVX512 void att512_##name
#define VEC __m512
#define W 16
#define JB 4
#define R 8
#define V_LOAD _mm512_loadu_ps
#define V_STORE _mm512_storeu_ps
#define V_SET1 _mm512_set1_ps
#define V_ZERO _mm512_setzero_ps
#define V_FMA _mm512_fmadd_ps
#define V_ADD _mm512_add_ps
#define V_SUB _mm512_sub_ps
#define V_MUL _mm512_mul_ps
#define V_MAX _mm512_max_ps
#define V_EXP exp16
#define V_TRANSPOSE transpose16x16
#define V_NEGINF_TO_ZERO(x) \
  _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_NEQ_UQ), x)
#include "attention_body.inc"
#endif  // SK_HAVE_AVX512_KERNELS

#if SK_HAVE_AVX2_KERNELS
// exp16's method on 8 lanes; 2^n built in the exponent field (x >= -87.3 keeps n >= -126, so
// exp of anything below is ~1e-38 instead of 0: negligible against a row maximum's 1).
SK_AVX2_INLINE __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.3f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
  __m256 p = _mm256_set1_ps(kExpTaylor[0]);
  SK_UNROLL for (int c = 1; c < 8; ++c) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpTaylor[c]));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

#define SK_ATT_FN(name) SK_AVX2 void att256_##name
#define VEC __m256
#define W 8
#define JB 2
#define R 4
#define V_LOAD _mm256_loadu_ps
#define V_STORE _mm256_storeu_ps
#define V_SET1 _mm256_set1_ps
#define V_ZERO _mm256_setzero_ps
#define V_FMA _mm256_fmadd_ps
#define V_ADD _mm256_add_ps
#define V_SUB _mm256_sub_ps
#define V_MUL _mm256_mul_ps
#define V_MAX _mm256_max_ps
#define V_EXP exp8
#define V_TRANSPOSE transpose8x8
#define V_NEGINF_TO_ZERO(x) \
  _mm256_and_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_NEQ_UQ), x)
#include "attention_body.inc"
#endif  // SK_HAVE_AVX2_KERNELS

#if SK_HAVE_AVX2_KERNELS
// Up to this many query rows an item runs row by row (att*_row: vectors over head dims): the
// block kernel's vectors run over query rows, so with 1-4 rows it would compute 4-16x more.
constexpr int64_t kRowsKernelMax = 4;

// An item of few query rows through att*_row, when k and v are contiguous over head dims and
// D, Dv are whole vectors; false when the layout does not allow it.
bool attention_rows_vector(const AttentionArgs<float>& a, Isa isa, int64_t b, int64_t h,
                           int64_t i0, int64_t ib, int* status) {
  const int W = isa == Isa::kAvx512 ? 16 : 8;
  if (ib > kRowsKernelMax || a.k_d != 1 || a.v_d != 1 || a.D % W != 0 || a.Dv % W != 0)
    return false;
  const int64_t hk = h / (a.H / a.Hkv);
  const float* q = a.q + b * a.q_b + h * a.q_h;
  const float* k = a.k + b * a.k_b + hk * a.k_h;
  const float* v = a.v + b * a.v_b + hk * a.v_h;
  const float* mask = a.mask != nullptr ? a.mask + b * a.m_b + h * a.m_h : nullptr;
  float* o = a.out + b * a.o_b + h * a.o_h;
  AttScratch& s = att_scratch();
  try {
    s.qt.resize(static_cast<size_t>(a.D));
    s.tile.resize(static_cast<size_t>(round_up(a.Sk, W)));
  } catch (const std::bad_alloc&) {
    *status = kNoMemory;
    return true;
  }
  for (int64_t i = i0; i < i0 + ib; ++i) {
    for (int64_t d = 0; d < a.D; ++d) s.qt[d] = a.scale * q[i * a.q_s + d * a.q_d];
    const float* mrow = mask != nullptr ? mask + i * a.m_i : nullptr;
#if SK_HAVE_AVX512_KERNELS
    if (isa == Isa::kAvx512)
      att512_row(a, s.qt.data(), k, v, mrow, s.tile.data(), o + i * a.o_s, a.o_d);
    else
#endif
      att256_row(a, s.qt.data(), k, v, mrow, s.tile.data(), o + i * a.o_s, a.o_d);
  }
  *status = kOk;
  return true;
}

// One item of the vector kernel (lanes W, query rows [i0, i0 + ib), ib <= 4 * W): packs, runs
// the three passes of ISA `isa`, writes the output block.
int attention_block(const AttentionArgs<float>& a, Isa isa, int64_t b, int64_t h, int64_t i0,
                    int64_t ib) {
  const int W = isa == Isa::kAvx512 ? 16 : 8, IB = 4 * W, R = isa == Isa::kAvx512 ? 8 : 4;
  const int64_t hk = h / (a.H / a.Hkv), D = a.D, Sk = a.Sk, Dv = a.Dv;
  const int64_t Dvp = round_up(Dv, W);
  const float* q = a.q + b * a.q_b + h * a.q_h;
  const float* k = a.k + b * a.k_b + hk * a.k_h;
  const float* v = a.v + b * a.v_b + hk * a.v_h;
  const float* mask = a.mask != nullptr ? a.mask + b * a.m_b + h * a.m_h : nullptr;
  AttScratch& s = att_scratch();
  try {
    s.qt.resize(static_cast<size_t>(D * IB));
    s.tile.resize(static_cast<size_t>(Sk * IB));
    s.ob.resize(static_cast<size_t>(IB * Dvp));
    s.linv.resize(static_cast<size_t>(IB));
  } catch (const std::bad_alloc&) {
    return kNoMemory;
  }
  float* qt = s.qt.data();
  // packing loops run along the smaller input stride (the other order misses a line per read)
  if (a.q_d == 1 && D % W == 0) {
#if SK_HAVE_AVX512_KERNELS
    if (isa == Isa::kAvx512) att512_pack_q(q + i0 * a.q_s, a.q_s, ib, D, a.scale, qt);
    else
#endif
      att256_pack_q(q + i0 * a.q_s, a.q_s, ib, D, a.scale, qt);
  } else if (a.q_s <= a.q_d) {
    for (int64_t d = 0; d < D; ++d)
      for (int64_t i = 0; i < IB; ++i)
        qt[d * IB + i] = i < ib ? a.scale * q[(i0 + i) * a.q_s + d * a.q_d] : 0.0f;
  } else {
    std::fill(qt, qt + D * IB, 0.0f);
    for (int64_t i = 0; i < ib; ++i)
      for (int64_t d = 0; d < D; ++d) qt[d * IB + i] = a.scale * q[(i0 + i) * a.q_s + d * a.q_d];
  }
  // V rows as they are when contiguous over d and whole vectors; otherwise packed
  const float* vp = v;
  int64_t ldv = a.v_s;
  if (!(a.v_d == 1 && Dv % W == 0)) {
    try {
      s.vp.resize(static_cast<size_t>(Sk * Dvp));
    } catch (const std::bad_alloc&) {
      return kNoMemory;
    }
    float* p = s.vp.data();
    if (a.v_s < a.v_d) {
      std::fill(p, p + Sk * Dvp, 0.0f);
      for (int64_t d = 0; d < Dv; ++d)
        for (int64_t j = 0; j < Sk; ++j) p[j * Dvp + d] = v[j * a.v_s + d * a.v_d];
    } else {
      for (int64_t j = 0; j < Sk; ++j)
        for (int64_t d = 0; d < Dvp; ++d) p[j * Dvp + d] = d < Dv ? v[j * a.v_s + d * a.v_d] : 0.0f;
    }
    vp = s.vp.data();
    ldv = Dvp;
  }
  float* tile = s.tile.data();
  const int64_t rows = round_up(ib, R);
  const int nt = static_cast<int>((ib + W - 1) / W);  // vectors of query rows to compute
#if SK_HAVE_AVX512_KERNELS
  if (isa == Isa::kAvx512) {
    if (nt == 1) att512_scores<1>(a, k, mask, qt, tile);
    else if (nt == 2) att512_scores<2>(a, k, mask, qt, tile);
    else if (nt == 3) att512_scores<3>(a, k, mask, qt, tile);
    else att512_scores<4>(a, k, mask, qt, tile);
  } else
#endif
  {
    if (nt == 1) att256_scores<1>(a, k, mask, qt, tile);
    else if (nt == 2) att256_scores<2>(a, k, mask, qt, tile);
    else if (nt == 3) att256_scores<3>(a, k, mask, qt, tile);
    else att256_scores<4>(a, k, mask, qt, tile);
  }
  if (mask != nullptr && a.m_i != 0)  // a mask that varies over query rows: added here
    for (int64_t j = 0; j < Sk; ++j)
      for (int64_t i = 0; i < ib; ++i) tile[j * IB + i] += mask[(i0 + i) * a.m_i + j * a.m_j];
  // the output block straight into out when its rows are whole vectors, else via ob
  float* o = a.out + b * a.o_b + h * a.o_h + i0 * a.o_s;
  const bool direct = a.o_d == 1 && Dv == Dvp && rows == ib;
  float* ob = direct ? o : s.ob.data();
  const int64_t ldo = direct ? a.o_s : Dvp;
#if SK_HAVE_AVX512_KERNELS
  if (isa == Isa::kAvx512) {
    if (nt == 1) att512_softmax<1>(Sk, tile, s.linv.data());
    else if (nt == 2) att512_softmax<2>(Sk, tile, s.linv.data());
    else if (nt == 3) att512_softmax<3>(Sk, tile, s.linv.data());
    else att512_softmax<4>(Sk, tile, s.linv.data());
    att512_output(Sk, Dvp, ldv, rows, tile, vp, s.linv.data(), ob, ldo);
  } else
#endif
  {
    if (nt == 1) att256_softmax<1>(Sk, tile, s.linv.data());
    else if (nt == 2) att256_softmax<2>(Sk, tile, s.linv.data());
    else if (nt == 3) att256_softmax<3>(Sk, tile, s.linv.data());
    else att256_softmax<4>(Sk, tile, s.linv.data());
    att256_output(Sk, Dvp, ldv, rows, tile, vp, s.linv.data(), ob, ldo);
  }
  if (!direct)
    for (int64_t i = 0; i < ib; ++i)
      for (int64_t d = 0; d < Dv; ++d) o[i * a.o_s + d * a.o_d] = ob[i * Dvp + d];
  return kOk;
}
#endif  // SK_HAVE_AVX2_KERNELS

template <typename T>
struct AttentionCall {
  const AttentionArgs<T>* a;
  Isa isa;
  int64_t block, blocks;  // query rows per item, items per (batch, head)
};

template <typename T>
int attention_item(void* ctx, int64_t item) {
  const auto& c = *static_cast<const AttentionCall<T>*>(ctx);
  const AttentionArgs<T>& a = *c.a;
  const int64_t bh = item / c.blocks, i0 = (item % c.blocks) * c.block;
  const int64_t b = bh / a.H, h = bh % a.H, i1 = std::min(a.Sq, i0 + c.block);
#if SK_HAVE_AVX2_KERNELS
  if constexpr (std::is_same_v<T, float>) {
    if (c.isa != Isa::kPortable) {
      int status = kOk;
      if (attention_rows_vector(a, c.isa, b, h, i0, i1 - i0, &status)) return status;
      return attention_block(a, c.isa, b, h, i0, i1 - i0);
    }
  }
#endif
  thread_local std::vector<T> p;
  try {
    return attention_rows(a, b, h, i0, i1, p);
  } catch (const std::bad_alloc&) {
    return kNoMemory;
  }
}

template <typename T>
int attention_run(const AttentionArgs<T>& a, Isa isa) {
  if (a.B < 0 || a.H < 1 || a.Hkv < 1 || a.H % a.Hkv != 0 || a.Sq < 0 || a.Sk < 1 || a.D < 1 ||
      a.Dv < 0)
    return kBadArgument;
  if (a.B == 0 || a.Sq == 0 || a.Dv == 0) return kOk;
  AttentionCall<T> c{&a, isa, isa == Isa::kAvx512 ? 64 : isa == Isa::kAvx2 ? 32 : 16, 0};
  c.blocks = (a.Sq + c.block - 1) / c.block;
  const int64_t items = a.B * a.H * c.blocks;
  const double fmas = static_cast<double>(a.B * a.H) * a.Sq * a.Sk * (a.D + a.Dv);
  const int threads = fmas < kAttentionSerialFmas ? 1 : a.num_threads;
  if (threads <= 1) {
    for (int64_t it = 0; it < items; ++it) {
      const int st = attention_item<T>(&c, it);
      if (st != kOk) return st;
    }
    return kOk;
  }
  return run_items(items, threads, &attention_item<T>, &c);
}

}  // namespace

int attention(const AttentionArgs<float>& a) {
  Isa isa = active_isa();
#if !SK_HAVE_AVX2_KERNELS
  isa = Isa::kPortable;
#endif
  return attention_run(a, isa);
}

int attention(const AttentionArgs<double>& a) { return attention_run(a, Isa::kPortable); }

}  // namespace cpu
}  // namespace sparsekern
