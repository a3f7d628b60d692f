#pragma once
// Kernels of the sign family (sign, scaled_sign, one_bit):
//  - pack_negative_mask: bit i (LSB-first within each byte) = [x_i < 0]. -0.0 and NaN
//    give 0, so sgn(0) = +1 as in GRACE. Pad bits of the last byte are 0.
//  - expand_mask: out_i = bit_i ? neg : pos.
//  - l1 / split sums in a fixed summation order (16 lanes, then a fixed tree, in float
//    within chunks of 1024, chunks added in double), so every code path gives the same bytes.
//
// Each kernel has a portable version and, on x86-64, an AVX2 one chosen at run time
// (__builtin_cpu_supports); the default build targets baseline x86-64, whose SSE2
// path is the portable code's vectorisation, plus explicit SSE2 for the mask packing.
// All paths give identical bytes (tests/test_compress_sparsifiers.cpp checks this).

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define DISTOPT_COMPRESS_X86 1
#else
#define DISTOPT_COMPRESS_X86 0
#endif

namespace distopt::compress::detail {

/// Bytes of a mask of n bits.
constexpr std::size_t mask_bytes(std::size_t n) noexcept { return (n + 7) / 8; }

// ---- pack_negative_mask --------------------------------------------------------------

inline void pack_negative_mask_tail(const float* x, std::size_t begin, std::size_t n, std::byte* out) noexcept {
  // bits [begin, n): fewer than 32, begin a multiple of 8
  const float* p = x + begin;
  std::byte* o = out + begin / 8;
  const std::size_t rest = n - begin;
  unsigned v = 0;
  for (std::size_t j = 0; j < rest && j < 32; ++j) {
    v |= unsigned{p[j] < 0.0f} << (j % 8);
    if (j % 8 == 7 || j + 1 == rest) {
      o[j / 8] = static_cast<std::byte>(v);
      v = 0;
    }
  }
}

/// Portable: plain C++ (SSE2 on x86-64, where it is always present).
inline void pack_negative_mask_portable(const float* x, std::size_t n, std::byte* out) noexcept {
  std::size_t i = 0;
#if DISTOPT_COMPRESS_X86
  const __m128 zero = _mm_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const int m0 = _mm_movemask_ps(_mm_cmplt_ps(_mm_loadu_ps(x + i), zero));
    const int m1 = _mm_movemask_ps(_mm_cmplt_ps(_mm_loadu_ps(x + i + 4), zero));
    const int m2 = _mm_movemask_ps(_mm_cmplt_ps(_mm_loadu_ps(x + i + 8), zero));
    const int m3 = _mm_movemask_ps(_mm_cmplt_ps(_mm_loadu_ps(x + i + 12), zero));
    const auto m = static_cast<std::uint16_t>(m0 | (m1 << 4) | (m2 << 8) | (m3 << 12));
    std::memcpy(out + i / 8, &m, 2);
  }
#else
  for (; i + 8 <= n; i += 8) {
    unsigned v = 0;
    for (unsigned j = 0; j < 8; ++j) v |= unsigned{x[i + j] < 0.0f} << j;
    out[i / 8] = static_cast<std::byte>(v);
  }
#endif
  pack_negative_mask_tail(x, i, n, out);
}

#if DISTOPT_COMPRESS_X86
/// Software prefetch 8 KiB ahead of a streaming read (two cache lines per 32 floats): measured
/// ~10% faster than the hardware prefetcher alone on these machines for 64 MB inputs.
inline constexpr std::size_t prefetch_distance = 2048;  // floats

__attribute__((target("avx2"))) inline std::uint32_t negative_mask32_avx2(const float* x) noexcept {
  const __m256 zero = _mm256_setzero_ps();
  std::uint32_t m = 0;
  for (unsigned q = 0; q < 4; ++q)
    m |= static_cast<std::uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + 8 * q), zero, _CMP_LT_OQ)))
         << (8 * q);
  return m;
}

__attribute__((target("avx2"))) inline void pack_negative_mask_avx2(const float* x, std::size_t n,
                                                                    std::byte* out) noexcept {
  std::size_t i = 0;
  for (; i + prefetch_distance + 32 <= n; i += 32) {  // bulk, prefetching
    _mm_prefetch(reinterpret_cast<const char*>(x + i + prefetch_distance), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(x + i + prefetch_distance + 16), _MM_HINT_T0);
    const std::uint32_t m = negative_mask32_avx2(x + i);
    std::memcpy(out + i / 8, &m, 4);
  }
  for (; i + 32 <= n; i += 32) {  // the last 8 KiB
    const std::uint32_t m = negative_mask32_avx2(x + i);
    std::memcpy(out + i / 8, &m, 4);
  }
  pack_negative_mask_tail(x, i, n, out);
}

inline bool cpu_has_avx2() noexcept {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#else
inline bool cpu_has_avx2() noexcept { return false; }
#endif

/// Writes mask_bytes(n) bytes: bit i = [x_i < 0].
inline void pack_negative_mask(const float* x, std::size_t n, std::byte* out) noexcept {
#if DISTOPT_COMPRESS_X86
  if (cpu_has_avx2()) return pack_negative_mask_avx2(x, n, out);
#endif
  pack_negative_mask_portable(x, n, out);
}

// ---- expand_mask ---------------------------------------------------------------------

inline void expand_mask_portable(const std::byte* bits, std::size_t n, float neg, float pos, float* out) noexcept {
  const std::size_t whole = n / 8;
  for (std::size_t b = 0; b < whole; ++b) {
    const auto v = static_cast<unsigned>(bits[b]);
    for (unsigned j = 0; j < 8; ++j) out[8 * b + j] = (v >> j) & 1u ? neg : pos;
  }
  for (std::size_t i = 8 * whole; i < n; ++i) out[i] = (static_cast<unsigned>(bits[i / 8]) >> (i % 8)) & 1u ? neg : pos;
}

#if DISTOPT_COMPRESS_X86
__attribute__((target("avx2"))) inline void expand_mask_avx2(const std::byte* bits, std::size_t n, float neg, float pos,
                                                             float* out) noexcept {
  const __m256i select = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256 negv = _mm256_set1_ps(neg), posv = _mm256_set1_ps(pos);
  const std::size_t whole = n / 8;
  for (std::size_t b = 0; b < whole; ++b) {
    const __m256i v = _mm256_set1_epi32(static_cast<int>(bits[b]));
    const __m256i m = _mm256_cmpeq_epi32(_mm256_and_si256(v, select), select);
    _mm256_storeu_ps(out + 8 * b, _mm256_blendv_ps(posv, negv, _mm256_castsi256_ps(m)));
  }
  for (std::size_t i = 8 * whole; i < n; ++i) out[i] = (static_cast<unsigned>(bits[i / 8]) >> (i % 8)) & 1u ? neg : pos;
}
#endif

/// out_i = bit_i ? neg : pos for i < n.
inline void expand_mask(const std::byte* bits, std::size_t n, float neg, float pos, float* out) noexcept {
#if DISTOPT_COMPRESS_X86
  if (cpu_has_avx2()) return expand_mask_avx2(bits, n, neg, pos, out);
#endif
  expand_mask_portable(bits, n, neg, pos, out);
}

/// Number of set bits among the first n bits of a mask.
inline std::size_t count_mask(const std::byte* bits, std::size_t n) noexcept {
  std::size_t c = 0, b = 0;
  for (; 64 * (b + 1) <= n; ++b) {
    std::uint64_t w;
    std::memcpy(&w, bits + 8 * b, 8);
    c += static_cast<std::size_t>(std::popcount(w));
  }
  for (std::size_t i = 64 * b; i < n; ++i) c += (static_cast<unsigned>(bits[i / 8]) >> (i % 8)) & 1u;
  return c;
}

// ---- sums in a fixed order -----------------------------------------------------------

inline constexpr std::size_t sum_chunk = 1024;

/// Sixteen float lanes: lane j sums entries j, j + 16, ... of a chunk (on x86-64 four SSE2
/// registers, the same additions in the same order as the scalar loop, and enough independent
/// chains to hide the add latency). The lanes are then added pairwise in a fixed tree, plus the tail.
inline constexpr std::size_t sum_lanes = 16;
inline float lanes_total(const float* a, float tail) noexcept {
  float t[8];
  for (unsigned j = 0; j < 8; ++j) t[j] = a[2 * j] + a[2 * j + 1];
  return (((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]))) + tail;
}

/// sum |x_i| over 16 float lanes per chunk of 1024 (see lanes_total), chunks added in double:
/// the same result on every path.
inline double sum_abs(const float* x, std::size_t n) noexcept {
  double total = 0.0;
  for (std::size_t c = 0; c < n; c += sum_chunk) {
    const std::size_t len = n - c < sum_chunk ? n - c : sum_chunk;
    const float* p = x + c;
    alignas(16) float a[sum_lanes] = {};
    std::size_t i = 0;
#if DISTOPT_COMPRESS_X86
    const __m128 abs_mask = _mm_castsi128_ps(_mm_set1_epi32(0x7FFFFFFF));
    __m128 acc[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
    for (; i + sum_lanes <= len; i += sum_lanes)
      for (unsigned q = 0; q < 4; ++q) acc[q] = _mm_add_ps(acc[q], _mm_and_ps(_mm_loadu_ps(p + i + 4 * q), abs_mask));
    for (unsigned q = 0; q < 4; ++q) _mm_store_ps(a + 4 * q, acc[q]);
#else
    for (; i + sum_lanes <= len; i += sum_lanes)
      for (unsigned j = 0; j < sum_lanes; ++j) a[j] += std::fabs(p[i + j]);
#endif
    float tail = 0.0f;
    for (; i < len; ++i) tail += std::fabs(p[i]);
    total += double(lanes_total(a, tail));
  }
  return total;
}

struct split_sums {
  double negative = 0.0;      ///< sum of the x_i < 0
  double non_negative = 0.0;  ///< sum of the other x_i
};

// The end of one chunk of sum_split, the same on every path: entries [i, len) that fill no
// whole lane group go to the mask and to scalar tails, then the lane sums join s.
inline void finish_split_chunk(const float* p, std::size_t i, std::size_t len, const float* a, const float* b,
                               std::byte* bits, split_sums& s) noexcept {
  if (bits != nullptr) pack_negative_mask_tail(p, i, len, bits);
  float ta = 0.0f, tb = 0.0f;
  for (; i < len; ++i) {
    const auto u = std::bit_cast<std::uint32_t>(p[i]);
    const std::uint32_t neg_mask = 0u - (u >> 31);
    ta += std::bit_cast<float>(u & neg_mask);
    tb += std::bit_cast<float>(u & ~neg_mask);
  }
  s.negative += double(lanes_total(a, ta));
  s.non_negative += double(lanes_total(b, tb));
}

/// The sums of the negative and of the other entries, in the same fixed order as sum_abs, and,
/// if `bits` is not null, the mask [x_i < 0] of pack_negative_mask written to it in the same pass.
/// Sums split on the sign bit, so -0.0 lands in `negative`, where it adds nothing.
inline split_sums sum_split_portable(const float* x, std::size_t n, std::byte* bits = nullptr) noexcept {
  split_sums s;
  for (std::size_t c = 0; c < n; c += sum_chunk) {
    const std::size_t len = n - c < sum_chunk ? n - c : sum_chunk;
    const float* p = x + c;
    alignas(16) float a[sum_lanes] = {}, b[sum_lanes] = {};
    std::size_t i = 0;
#if DISTOPT_COMPRESS_X86
    __m128 na[4], pa[4];
    for (unsigned q = 0; q < 4; ++q) na[q] = pa[q] = _mm_setzero_ps();
    const __m128 zero = _mm_setzero_ps();
    for (; i + sum_lanes <= len; i += sum_lanes) {
      unsigned m16 = 0;
      for (unsigned q = 0; q < 4; ++q) {
        const __m128 v = _mm_loadu_ps(p + i + 4 * q);
        const __m128 m = _mm_castsi128_ps(_mm_srai_epi32(_mm_castps_si128(v), 31));  // all ones if the sign bit is set
        na[q] = _mm_add_ps(na[q], _mm_and_ps(v, m));
        pa[q] = _mm_add_ps(pa[q], _mm_andnot_ps(m, v));
        m16 |= static_cast<unsigned>(_mm_movemask_ps(_mm_cmplt_ps(v, zero))) << (4 * q);
      }
      if (bits != nullptr) {
        const auto m = static_cast<std::uint16_t>(m16);
        std::memcpy(bits + (c + i) / 8, &m, 2);
      }
    }
    for (unsigned q = 0; q < 4; ++q) {
      _mm_store_ps(a + 4 * q, na[q]);
      _mm_store_ps(b + 4 * q, pa[q]);
    }
#else
    for (; i + sum_lanes <= len; i += sum_lanes)
      for (unsigned j = 0; j < sum_lanes; ++j) {
        const auto u = std::bit_cast<std::uint32_t>(p[i + j]);
        const std::uint32_t neg_mask = 0u - (u >> 31);  // all ones if the sign bit is set
        a[j] += std::bit_cast<float>(u & neg_mask);
        b[j] += std::bit_cast<float>(u & ~neg_mask);
      }
    if (bits != nullptr) pack_negative_mask_portable(p, i, bits + c / 8);
#endif
    finish_split_chunk(p, i, len, a, b, bits == nullptr ? nullptr : bits + c / 8, s);
  }
  return s;
}

#if DISTOPT_COMPRESS_X86
/// AVX2 sum_split: lanes 0-7 and 8-15 in two registers per sum, the same additions in the same
/// order as the portable version, so the same sums and mask.
__attribute__((target("avx2"))) inline split_sums sum_split_avx2(const float* x, std::size_t n,
                                                                 std::byte* bits = nullptr) noexcept {
  split_sums s;
  for (std::size_t c = 0; c < n; c += sum_chunk) {
    const std::size_t len = n - c < sum_chunk ? n - c : sum_chunk;
    const float* p = x + c;
    alignas(32) float a[sum_lanes] = {}, b[sum_lanes] = {};
    std::size_t i = 0;
    __m256 na0 = _mm256_setzero_ps(), na1 = _mm256_setzero_ps(), pa0 = _mm256_setzero_ps(), pa1 = _mm256_setzero_ps();
    const __m256 zero = _mm256_setzero_ps();
    for (; i + sum_lanes <= len; i += sum_lanes) {
      const __m256 v0 = _mm256_loadu_ps(p + i), v1 = _mm256_loadu_ps(p + i + 8);
      const __m256 m0 = _mm256_castsi256_ps(_mm256_srai_epi32(_mm256_castps_si256(v0), 31));
      const __m256 m1 = _mm256_castsi256_ps(_mm256_srai_epi32(_mm256_castps_si256(v1), 31));
      na0 = _mm256_add_ps(na0, _mm256_and_ps(v0, m0));
      na1 = _mm256_add_ps(na1, _mm256_and_ps(v1, m1));
      pa0 = _mm256_add_ps(pa0, _mm256_andnot_ps(m0, v0));
      pa1 = _mm256_add_ps(pa1, _mm256_andnot_ps(m1, v1));
      if (bits != nullptr) {
        const auto m = static_cast<std::uint16_t>(
            static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(v0, zero, _CMP_LT_OQ))) |
            (static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(v1, zero, _CMP_LT_OQ))) << 8));
        std::memcpy(bits + (c + i) / 8, &m, 2);
      }
    }
    _mm256_store_ps(a, na0);
    _mm256_store_ps(a + 8, na1);
    _mm256_store_ps(b, pa0);
    _mm256_store_ps(b + 8, pa1);
    finish_split_chunk(p, i, len, a, b, bits == nullptr ? nullptr : bits + c / 8, s);
  }
  return s;
}
#endif

/// sum_split on the fastest path this CPU has; every path gives the same result.
inline split_sums sum_split(const float* x, std::size_t n, std::byte* bits = nullptr) noexcept {
#if DISTOPT_COMPRESS_X86
  if (cpu_has_avx2()) return sum_split_avx2(x, n, bits);
#endif
  return sum_split_portable(x, n, bits);
}

}  // namespace distopt::compress::detail
