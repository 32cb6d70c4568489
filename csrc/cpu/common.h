// Small helpers shared by the CPU kernels: weight element types, index loads, scratch
// buffers. Portable C++ only (no intrinsics here; see simd_avx2.h for those).
#pragma once
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace sparsekern {
namespace cpu {

// Sizes the kernels serve. The glue rejects larger M, K, N or block sizes before a kernel
// runs (with an error naming the argument), so every product the kernels form from sizes
// and strides (k * ldp, m * ldy_m, 256 threads * M, ...) stays far from int64 overflow and
// every column or row fits the int32 index types (BSR block columns, CSC rows, repacks).
constexpr int64_t kMaxDim = INT32_MAX;
// The largest scratch buffer a kernel may ask for: a larger request (e.g. a packed B panel
// of a stride-0 B with a huge K) fails with kNoMemory instead of reaching the allocator.
constexpr int64_t kMaxScratchBytes = int64_t{1} << 32;

// ceil(a / b) for a >= 0, b > 0, without the overflow of (a + b - 1) / b near INT64_MAX.
inline int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0 ? 1 : 0); }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
// a * b into *out; false (and *out untouched) when the product overflows int64.
inline bool checked_mul(int64_t a, int64_t b, int64_t* out) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return false;
  *out = r;
  return true;
}
inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }

// Half-precision weight elements, stored as their raw 16 bits.
struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};

// Calls f with a null `const T*` tag for the element type `wt` names (float, bf16 or f16);
// kBadArgument for any other value.
template <typename F>
int with_weight_type(WeightType wt, F&& f) {
  switch (wt) {
    case WeightType::kF32: return f(static_cast<const float*>(nullptr));
    case WeightType::kBF16: return f(static_cast<const bf16*>(nullptr));
    case WeightType::kF16: return f(static_cast<const f16*>(nullptr));
  }
  return kBadArgument;
}

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float to_float(float v) { return v; }
inline float to_float(bf16 v) { return bits_to_float(static_cast<uint32_t>(v.bits) << 16); }
inline float to_float(f16 v) {
  // IEEE binary16 -> binary32, exact for every input (subnormals, Inf, NaN included).
  const uint32_t sign = static_cast<uint32_t>(v.bits & 0x8000u) << 16;
  uint32_t exp = (v.bits >> 10) & 0x1fu;
  uint32_t mant = v.bits & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return bits_to_float(sign);
    exp = 113;  // normalise the subnormal
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --exp;
    }
    return bits_to_float(sign | (exp << 23) | ((mant & 0x3ffu) << 13));
  }
  return bits_to_float(sign | ((exp + 112) << 23) | (mant << 13));
}

template <typename T>
inline bool is_finite_weight(T v) {
  const float f = to_float(v);
  return f - f == 0.0f;  // false for Inf and NaN
}

// Index tensors are int16/int32/int64; kernels are templated on the C type.
template <typename I>
inline int64_t idx(const I* p, int64_t i) {
  return static_cast<int64_t>(p[i]);
}

// Offsets (CSC column pointer, BSR block-row pointer) start at 0, never decrease and end at
// nnz. Every kernel checks all of them before it reads any entry: a per-column check alone
// lets offsets [.., nnz + 1, nnz] send the column before past the entries.
template <typename PI>
inline bool offsets_ok(const PI* ptr, int64_t n, int64_t nnz) {
  if (idx(ptr, 0) != 0 || idx(ptr, n) != nnz) return false;
  for (int64_t i = 0; i < n; ++i)
    if (ptr[i + 1] < ptr[i]) return false;
  return true;
}

// A 64-byte aligned scratch buffer that only grows (one per purpose and calling thread,
// so repeated calls do not allocate).
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(ptr_); }
  // Returns at least `bytes` bytes (contents undefined), or null when out of memory or
  // above kMaxScratchBytes.
  void* get(size_t bytes) {
    if (bytes > static_cast<size_t>(kMaxScratchBytes)) return nullptr;
    if (bytes == 0) bytes = 64;
    if (bytes > size_) {
      std::free(ptr_);
      const size_t rounded = (bytes + 63) / 64 * 64;
      ptr_ = std::aligned_alloc(64, rounded);
      size_ = ptr_ != nullptr ? rounded : 0;
    }
    return ptr_;
  }
  // count1 * count2 elements of T (overflow-checked: null when the size cannot be served).
  template <typename T>
  T* get_as(int64_t count1, int64_t count2 = 1) {
    int64_t n, bytes;
    if (count1 < 0 || count2 < 0 || !checked_mul(count1, count2, &n) ||
        !checked_mul(max_i64(n, 1), static_cast<int64_t>(sizeof(T)), &bytes))
      return nullptr;
    return static_cast<T*>(get(static_cast<size_t>(bytes)));
  }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

// The per-calling-thread scratch buffers (thread_local: calls from several threads at once
// never share one).
Scratch& scratch_x();      // the activation vector of a GEMV (when B's column is strided)
Scratch& scratch_panel();  // the packed B panel of a batched call
Scratch& scratch_accum();  // per-thread partial outputs (CSC GEMV)
Scratch& scratch_index();  // index lists (CSC active columns)
Scratch& scratch_tile();   // a worker thread's partial output tile (K-chunked batched kernels)

// The bytes of the next tile of a GEMV (the next rows' values or metadata, contiguous),
// fetched into L2 a share per step of the current tile. A tile of R rows reads R streams at
// once, which the hardware prefetchers alone left at ~25 GB/s against the ~33 GB/s of NumPy's
// one-stream GEMV here. 2:4 GEMV, 2 threads, AVX-512 (R = 4), from memory: 1.72 -> 1.23 ms at
// 4096², 0.26 -> 0.18 ms at 3072x768 and 768x3072; a small weight in cache loses 9-14% (the
// prefetches take load slots: 3072x768 0.058 -> 0.066 ms), which a real model, whose layers
// evict each other, does not see (bench/results/g24-gemv-next-2026-12-04). Fetching only
// each row's first 1-2 KB, or every 2nd or 4th line, gained nothing from memory.
class NextTileFetch {
 public:
  NextTileFetch() = default;
  // `bytes` from p (none when p is null or bytes <= 0), spread over `steps` calls of step().
  NextTileFetch(const void* p, int64_t bytes, int64_t steps)
      : p_(static_cast<const char*>(p)), lines_(p != nullptr && bytes > 0 ? ceil_div(bytes, 64) : 0),
        per_step_(steps > 0 ? ceil_div(lines_, steps) : lines_) {}
  void step() {
    for (const int64_t e = done_ + per_step_; done_ < e && done_ < lines_; ++done_)
      __builtin_prefetch(p_ + 64 * done_, 0, 2);  // locality 2: into L2 (prefetcht1)
  }

 private:
  const char* p_ = nullptr;
  int64_t lines_ = 0, per_step_ = 0, done_ = 0;
};

// The fetch of the `rows` rows of `row_elems` elements each that follow a tile (contiguous
// from p); none when rows <= 0 (the tile is its part's last).
template <typename T>
inline NextTileFetch next_rows(const T* p, int64_t row_elems, int64_t rows, int64_t steps) {
  return rows > 0 ? NextTileFetch(p, rows * row_elems * static_cast<int64_t>(sizeof(T)), steps)
                  : NextTileFetch();
}

// Rows of a packed B panel (ldp floats each) per K chunk of the batched kernels: about 16 KB,
// so the chunk of B stays in L1 while the rows of a block are multiplied with it.
inline int64_t chunk_rows(int64_t ldp) { return ldp >= 32 ? 128 : 4096 / ldp; }

// Writes Y(m, n) = v + bias(m) for one element.
inline void store_out(const Dense& d, int64_t m, int64_t n, float v) {
  if (d.bias != nullptr) v += d.bias[m * d.bias_stride];
  d.Y[m * d.ldy_m + n * d.ldy_n] = v;
}

// Writes a tile of accumulators acc[r * ldacc + j] to Y rows m0.., columns n0..n0+nb.
inline void store_tile(const Dense& d, int64_t m0, int64_t rows, int64_t n0, int64_t nb,
                       const float* acc, int64_t ldacc) {
  for (int64_t r = 0; r < rows; ++r) {
    const float b = d.bias != nullptr ? d.bias[(m0 + r) * d.bias_stride] : 0.0f;
    float* y = d.Y + (m0 + r) * d.ldy_m + n0 * d.ldy_n;
    const float* a = acc + r * ldacc;
    if (d.ldy_n == 1) {
      for (int64_t j = 0; j < nb; ++j) y[j] = a[j] + b;
    } else {
      for (int64_t j = 0; j < nb; ++j) y[j * d.ldy_n] = a[j] + b;
    }
  }
}

// Writes bias (or 0) to rows [m0, m1) of Y, all N columns (rows without stored entries).
inline void store_bias_rows(const Dense& d, int64_t m0, int64_t m1) {
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t n = 0; n < d.N; ++n) store_out(d, m, n, 0.0f);
}

}  // namespace cpu
}  // namespace sparsekern
