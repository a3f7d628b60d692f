#pragma once
// Exact selection by magnitude on the bit patterns of |x| (top_k, threshold).
//
// key(x) = bits(x) & 0x7FFFFFFF orders |x| exactly for every float (NaN keys sit above
// +Inf, so NaN counts as largest), and -0.0 and +0.0 share key 0.
//
//  - scan_at_least(x, n, lo, hit): calls hit(i, key_i) for every i with key_i >= lo, in
//    index order. SSE2 compares 16 keys per step and touches only the hits, so a scan
//    that hits few entries runs at memory speed.
//  - radix_threshold(for_each_key, k): the k-th largest key T and how many entries equal
//    to T belong to the top k (ties broken towards lower indices by the caller), from
//    three histogram passes of 10, 11 and 10 bits.
//  - select_top_k: the indices of the k largest |x_i| in increasing index order; among
//    equal |x_i| the lower index wins. A sample of 8192 keys gives a bound lo a little below
//    the k-th largest key; one scan collects the candidates (key >= lo, somewhat more than k),
//    and an exact radix select on them finishes. If the sample misjudged (too few candidates,
//    or too many for the scratch), an exact radix select over all of x runs instead, so the
//    result is always exact; the sample only decides the speed.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <vector>

#include "distopt/compress/detail/scratch.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace distopt::compress::detail {

inline std::uint32_t magnitude_key(float v) noexcept { return std::bit_cast<std::uint32_t>(v) & 0x7FFFFFFFu; }

/// Calls hit(i, key_i) for every i < n with key_i >= lo (lo <= 0x7FFFFFFF), in index order.
/// Stops and returns false as soon as hit returns false.
template <class Hit>
bool scan_at_least(const float* x, std::size_t n, std::uint32_t lo, Hit&& hit) {
  std::size_t i = 0;
#if defined(__x86_64__) || defined(_M_X64)
  const __m128i abs_mask = _mm_set1_epi32(0x7FFFFFFF);
  const __m128i below = _mm_set1_epi32(static_cast<int>(lo) - 1);  // key >= lo  <=>  key > lo - 1 (signed, keys >= 0)
  auto mask4 = [&](std::size_t at) {
    const __m128i key = _mm_and_si128(_mm_castps_si128(_mm_loadu_ps(x + at)), abs_mask);
    return static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(key, below))));
  };
  for (; i + 16 <= n; i += 16) {
    unsigned m = mask4(i) | (mask4(i + 4) << 4) | (mask4(i + 8) << 8) | (mask4(i + 12) << 12);
    while (m != 0) {
      const std::size_t j = i + static_cast<std::size_t>(std::countr_zero(m));
      m &= m - 1;
      if (!hit(j, magnitude_key(x[j]))) return false;
    }
  }
#endif
  for (; i < n; ++i) {
    const std::uint32_t key = magnitude_key(x[i]);
    if (key >= lo && !hit(i, key)) return false;
  }
  return true;
}

struct threshold_result {
  std::uint32_t key;       ///< the k-th largest key
  std::size_t take_equal;  ///< how many entries with this key are in the top k (>= 1)
};

/// The k-th largest of the keys visited by for_each_key(f) (which calls f(key) for each key;
/// keys < 2^31), 1 <= k <= their number. `hist` holds 2048 counters.
template <class ForEachKey>
threshold_result radix_threshold(ForEachKey&& for_each_key, std::size_t k, std::uint32_t* hist) {
  struct digit {
    unsigned shift, bits;
  };
  constexpr digit digits[] = {{21, 10}, {10, 11}, {0, 10}};  // 31 key bits, most significant first
  std::size_t need = k;
  std::uint32_t prefix = 0, prefix_mask = 0;
  for (const digit dg : digits) {
    const std::uint32_t dmask = (1u << dg.bits) - 1u;
    std::fill(hist, hist + (std::size_t{1} << dg.bits), 0u);
    for_each_key([&](std::uint32_t key) {
      if ((key & prefix_mask) == prefix) ++hist[(key >> dg.shift) & dmask];
    });
    std::uint32_t d = dmask;
    while (d > 0 && hist[d] < need) need -= hist[d--];
    prefix |= d << dg.shift;
    prefix_mask |= dmask << dg.shift;
  }
  return {prefix, need};
}

/// Extra room collect_at_least may write past `cap`.
inline constexpr std::size_t collect_slack = 64;

/// Portable collect_at_least: SSE2 compares on x86-64, branch-free emission within a block of 16.
inline std::size_t collect_at_least_portable(const float* x, std::size_t n, std::uint32_t lo, std::uint32_t* idx,
                                             std::uint32_t* key, std::size_t cap) noexcept {
  std::size_t count = 0, i = 0;
#if defined(__x86_64__) || defined(_M_X64)
  const __m128i abs_mask = _mm_set1_epi32(0x7FFFFFFF);
  const __m128i below = _mm_set1_epi32(static_cast<int>(lo) - 1);  // key >= lo  <=>  key > lo - 1 (keys >= 0)
  for (; i + 16 <= n; i += 16) {
    __m128i k4[4];
    unsigned m = 0;
    for (unsigned q = 0; q < 4; ++q) {
      k4[q] = _mm_and_si128(_mm_castps_si128(_mm_loadu_ps(x + i + 4 * q)), abs_mask);
      m |= static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(k4[q], below)))) << (4 * q);
    }
    if (m == 0) continue;
    std::uint32_t keys[16];
    std::memcpy(keys, k4, sizeof keys);
    for (unsigned j = 0; j < 16; ++j) {  // write all 16, advance past the hits only
      idx[count] = static_cast<std::uint32_t>(i + j);
      key[count] = keys[j];
      count += (m >> j) & 1u;
    }
    if (count > cap) return count;
  }
#endif
  for (; i < n; ++i) {
    const std::uint32_t kk = magnitude_key(x[i]);
    if (kk >= lo) {
      if (count == cap) return cap + 1;
      idx[count] = static_cast<std::uint32_t>(i);
      key[count++] = kk;
    }
  }
  return count;
}

#if defined(__x86_64__) || defined(_M_X64)
/// For each 8-bit mask, the lane numbers of its set bits first (a left-pack permutation).
struct left_pack_table {
  alignas(32) std::uint32_t lanes[256][8];
  constexpr left_pack_table() : lanes{} {
    for (unsigned m = 0; m < 256; ++m) {
      unsigned out = 0;
      for (unsigned j = 0; j < 8; ++j)
        if ((m >> j) & 1u) lanes[m][out++] = j;
    }
  }
};
inline constexpr left_pack_table left_pack{};

/// AVX2 collect_at_least: no branches per element; each 8-lane hit mask left-packs indices
/// and keys with one permutation from a 256-entry table. Same output as the portable one.
__attribute__((target("avx2,popcnt"))) inline std::size_t collect_at_least_avx2(const float* x, std::size_t n,
                                                                                std::uint32_t lo, std::uint32_t* idx,
                                                                                std::uint32_t* key,
                                                                                std::size_t cap) noexcept {
  std::size_t count = 0, i = 0;
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256i below = _mm256_set1_epi32(static_cast<int>(lo) - 1);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (; i + 32 <= n; i += 32) {
    for (unsigned q = 0; q < 4; ++q) {
      const std::size_t at = i + 8 * q;
      const __m256i k8 = _mm256_and_si256(_mm256_castps_si256(_mm256_loadu_ps(x + at)), abs_mask);
      const auto m = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(k8, below))));
      const __m256i perm = _mm256_load_si256(reinterpret_cast<const __m256i*>(left_pack.lanes[m]));
      const __m256i i8 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(at)), lane);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + count), _mm256_permutevar8x32_epi32(i8, perm));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(key + count), _mm256_permutevar8x32_epi32(k8, perm));
      count += static_cast<std::size_t>(__builtin_popcount(m));
    }
    if (count > cap) return count;
  }
  for (; i < n; ++i) {
    const std::uint32_t kk = magnitude_key(x[i]);
    if (kk >= lo) {
      if (count == cap) return cap + 1;
      idx[count] = static_cast<std::uint32_t>(i);
      key[count++] = kk;
    }
  }
  return count;
}
#endif

/// Writes the index and key of every i < n with key_i >= lo (lo <= 0x7FFFFFFF) to idx/key in
/// index order and returns their number; once more than cap are found it may stop early and
/// returns a number > cap. idx and key must hold cap + collect_slack entries.
inline std::size_t collect_at_least(const float* x, std::size_t n, std::uint32_t lo, std::uint32_t* idx,
                                    std::uint32_t* key, std::size_t cap) noexcept {
#if defined(__x86_64__) || defined(_M_X64)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
  if (avx2) return collect_at_least_avx2(x, n, lo, idx, key, cap);
#endif
  return collect_at_least_portable(x, n, lo, idx, key, cap);
}

/// Working memory of select_top_k; one per compressor object.
struct top_k_scratch {
  scratch<std::uint32_t> sample, cand_index, cand_key, selected, hist;
  std::uint64_t full_selections = 0;  ///< times the sample missed and the exact pass over all of x ran
};

/// Indices of the k largest |x_i| (1 <= k <= n), increasing; ties go to the lower index.
/// Returns a view into s.selected.
inline std::span<const std::uint32_t> select_top_k(const float* x, std::size_t n, std::size_t k, top_k_scratch& s) {
  std::uint32_t* sel = s.selected.sized(k + 1).data();
  if (k == n) {
    for (std::size_t i = 0; i < n; ++i) sel[i] = static_cast<std::uint32_t>(i);
    return {sel, k};
  }
  // Exact over all of x: three histogram passes, then one scan that emits.
  auto exact = [&]() -> std::span<const std::uint32_t> {
    ++s.full_selections;
    const auto t = radix_threshold(
        [&](auto&& f) {
          for (std::size_t i = 0; i < n; ++i) f(magnitude_key(x[i]));
        },
        k, s.hist.sized(2048).data());
    std::size_t count = 0, equal = 0;
    scan_at_least(x, n, t.key, [&](std::size_t i, std::uint32_t key) {
      if (key > t.key || equal++ < t.take_equal) sel[count++] = static_cast<std::uint32_t>(i);
      return count < k;
    });
    return {sel, k};
  };
  // 1. Bracket the threshold with a sample: [lo, ...) should hold the k-th largest key and not
  //    many more than k entries. 512 runs of 16 consecutive floats: one cache line per run.
  constexpr std::size_t runs = 512, run = 16, samples = runs * run;
  if (n < 8 * samples) return exact();
  std::uint32_t* smp = s.sample.sized(samples).data();
  for (std::size_t r = 0; r < runs; ++r) {
    const std::size_t at = ((2 * r + 1) * (n / run) / (2 * runs)) * run;
    for (std::size_t j = 0; j < run; ++j) smp[r * run + j] = magnitude_key(x[at + j]);
  }
  const double expected = double(k) * samples / double(n);  // sample entries at or above the threshold
  const double lo_rank = std::ceil(expected + 4.0 * std::sqrt(expected) + 16.0);
  if (lo_rank >= double(samples)) return exact();
  std::nth_element(smp, smp + std::size_t(lo_rank), smp + samples, std::greater<>{});
  const std::uint32_t lo = smp[std::size_t(lo_rank)];
  if (lo == 0) return exact();  // the bracket would take every zero: not worth it

  // 2. One scan collects the candidates, key >= lo, in index order.
  const std::size_t cap = std::min<std::size_t>(n, std::size_t(2.0 * (lo_rank + 1.0) * double(n) / samples) + 4096);
  std::uint32_t* ci = s.cand_index.sized(cap + collect_slack).data();
  std::uint32_t* ck = s.cand_key.sized(cap + collect_slack).data();
  const std::size_t nc = collect_at_least(x, n, lo, ci, ck, cap);
  if (nc > cap || nc < k) return exact();

  // 3. An exact select among the candidates.
  const auto t = radix_threshold(
      [&](auto&& f) {
        for (std::size_t j = 0; j < nc; ++j) f(ck[j]);
      },
      k, s.hist.sized(2048).data());
  std::size_t out = 0, equal = 0;
  for (std::size_t j = 0; j < nc; ++j) {  // branch-free: about half the candidates are taken, at random
    const bool eq = ck[j] == t.key;
    const bool take = (ck[j] > t.key) | (eq & (equal < t.take_equal));
    sel[out] = ci[j];  // sel has room for k + 1
    out += take;
    equal += eq & take;
  }
  return {sel, k};
}

}  // namespace distopt::compress::detail
