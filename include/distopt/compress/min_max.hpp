#pragma once
// compress::min_max<Bits> — Bagua's ByteGrad quantizer: per bucket, the min m and max M,
// and each entry as a Bits-bit index into the 2^Bits - 1 equal intervals of [m, M].
//
// Encoding. For a bucket v of d entries (buckets of `bucket` entries, the last may be
// shorter), L = 2^Bits - 1 and step = (M - m) / L; entry i becomes level
//   floor(t_i) + 1 with probability t_i - floor(t_i), else floor(t_i),  t_i = (v_i - m) / step,
// stochastic rounding, so the reconstruction m + level * step is unbiased. (Bagua's
// documentation does not say whether it rounds stochastically or to nearest; unbiased
// stochastic rounding is chosen here so min_max is an omega-compressor.)
// Wire: [u64 n][float32 m, float32 M per bucket][Bits-bit codes of each bucket, LSB-first,
// each bucket padded to a whole byte with zero bits], little-endian:
//   bytes(n) = 8 + 8 * ceil(n / bucket) + floor(n / bucket) * ceil(bucket * Bits / 8)
//              + ceil((n mod bucket) * Bits / 8)
// Every code is valid; m, M must be finite with m <= M and M - m finite.
// Bound: unbiased. Each entry's variance is step^2 p (1 - p) <= step^2 / 4, so per bucket
//   (absolute)  E||C(v) - v||^2 <= d (M - m)^2 / (4 L^2),
// and since m and M are two distinct entries of v (or M = m and the error is 0),
// (M - m)^2 <= 2 (m^2 + M^2) <= 2 ||v||^2, giving the relative bound
//   omega(n) = d / (2 L^2) with d = min(n, bucket)   (the largest bucket).
// The absolute bound is the tight one; `error_bound(v)` returns it for a vector.
// Randomness: the caller's rng seeds 32 xoshiro128+ lanes (detail/quantize_impl.hpp).
// Non-finite input, or a bucket whose range M - m overflows float, throws numeric_error.
// Paper: S. Gan, X. Lian, R. Wang, J. Chang, C. Liu, H. Shi, S. Zhang, X. Li, T. Sun, J. Jiang,
// B. Yuan, S. Yang, J. Liu, C. Zhang, "BAGUA: Scaling up Distributed Learning with System
// Relaxations", PVLDB 15(4) 2022, arXiv:2107.01499 (ByteGrad: 8 bits, min-max, per chunk).
//
// Knobs: Bits in [1, 8] (template; 8 is ByteGrad); `bucket` = 512 entries per (m, M).
//
//   distopt::compress::min_max<8> q;             // ByteGrad
//   distopt::byte_buffer wire;
//   q.encode(gradient, wire, g);                 // ~1.02 bytes per float
//   q.decode(wire, reconstruction);              // E[reconstruction] == gradient

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>

#include "distopt/compress/detail/quantize_impl.hpp"
#include "distopt/compress/detail/wire.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::compress {
namespace detail::quantize {

template <unsigned Bits>
struct min_max_encode_kernel {
  /// Writes the (min, max) pairs and codes of x[0, n); false if the input is not finite.
  static DISTOPT_DETAIL_ALWAYS_INLINE bool run(const float* x, std::size_t n, std::size_t bucket, std::byte* ranges,
                                               std::byte* out, lane_bits* lanes) {
    constexpr std::uint32_t levels = (1u << Bits) - 1;
    constexpr float one = float(std::uint32_t{1} << fraction_bits), top = static_cast<float>(levels) * one;
    std::uint32_t rnd[chunk];
    std::uint8_t codes[chunk];
    for (std::size_t lo = 0, b = 0; lo < n; lo += bucket, ++b) {
      const std::size_t d = std::min(bucket, n - lo);
      const float* xb = x + lo;
      float mn[reduction_lanes], mx[reduction_lanes];
      std::uint32_t ex[reduction_lanes] = {};  // max exponent field: 255 flags NaN or Inf
      for (int k = 0; k < reduction_lanes; ++k) mn[k] = mx[k] = xb[0];
      std::size_t i = 0;
      for (; i + reduction_lanes <= d; i += reduction_lanes)
        for (int k = 0; k < reduction_lanes; ++k) {
          const float v = xb[i + k];
          const std::uint32_t e = std::bit_cast<std::uint32_t>(v) & 0x7F800000u;
          mn[k] = v < mn[k] ? v : mn[k];
          mx[k] = v > mx[k] ? v : mx[k];
          ex[k] = e > ex[k] ? e : ex[k];
        }
      for (int k = 0; i < d; ++i, ++k) {
        const float v = xb[i];
        const std::uint32_t e = std::bit_cast<std::uint32_t>(v) & 0x7F800000u;
        mn[k] = v < mn[k] ? v : mn[k];
        mx[k] = v > mx[k] ? v : mx[k];
        ex[k] = e > ex[k] ? e : ex[k];
      }
      const float m = combine_lanes(mn, [](float p, float q) { return q < p ? q : p; });
      const float big = combine_lanes(mx, [](float p, float q) { return q > p ? q : p; });
      const std::uint32_t e = combine_lanes(ex, [](std::uint32_t p, std::uint32_t q) { return q > p ? q : p; });
      const float range = big - m;
      if (e == 0x7F800000u || !(range <= std::numeric_limits<float>::max())) return false;
      std::memcpy(ranges + 8 * b, &m, 4);
      std::memcpy(ranges + 8 * b + 4, &big, 4);
      // Fixed point (see detail::quantize::fraction_bits): T = (v - m) / step * 2^23 <= L * 2^23 < 2^31.
      const auto [pre, scale] = scale_for(top, range);
      for (std::size_t c0 = 0; c0 < d; c0 += chunk) {
        const std::size_t len = std::min(chunk, d - c0);
        lanes->fill_for(rnd, len);
        std::uint8_t* dst = Bits == 8 ? reinterpret_cast<std::uint8_t*>(out) : codes;
        const float* xc = xb + c0;
        for (std::size_t k = 0; k < len; ++k) {
          const float t = std::min((xc[k] - m) * pre * scale, top);
          dst[k] = static_cast<std::uint8_t>(
              (static_cast<std::uint32_t>(static_cast<std::int32_t>(t)) + (rnd[k] >> (32 - fraction_bits))) >>
              fraction_bits);
        }
        if constexpr (Bits < 8) pack_codes<Bits>(codes, len, out);
        out += packed_bytes<Bits>(len);
      }
    }
    return true;
  }
};

template <unsigned Bits>
struct min_max_decode_kernel {
  /// Reconstructs n entries from validated ranges; false if a bucket's pad bits are set.
  static DISTOPT_DETAIL_ALWAYS_INLINE bool run(const std::byte* ranges, const std::byte* in, std::size_t n,
                                               std::size_t bucket, float* out) {
    constexpr std::uint32_t levels = (1u << Bits) - 1;
    std::uint8_t codes[chunk];
    for (std::size_t lo = 0, b = 0; lo < n; lo += bucket, ++b) {
      const std::size_t d = std::min(bucket, n - lo);
      float m, big;
      std::memcpy(&m, ranges + 8 * b, 4);
      std::memcpy(&big, ranges + 8 * b + 4, 4);
      const float step = (big - m) / static_cast<float>(levels);
      for (std::size_t c0 = 0; c0 < d; c0 += chunk) {
        const std::size_t len = std::min(chunk, d - c0);
        const std::uint8_t* src = reinterpret_cast<const std::uint8_t*>(in);
        if constexpr (Bits < 8) {
          if (!unpack_codes<Bits>(in, len, codes)) return false;
          src = codes;
        }
        float* o = out + lo + c0;
        // level * step is exact in double, so an FMA gives the same result (see quantize_impl.hpp).
        for (std::size_t k = 0; k < len; ++k)
          o[k] = static_cast<float>(double(m) + double(static_cast<std::int32_t>(src[k])) * double(step));
        in += packed_bytes<Bits>(len);
      }
    }
    return true;
  }
};

}  // namespace detail::quantize

template <unsigned Bits>
struct min_max {
  static_assert(Bits >= 1 && Bits <= 8, "compress::min_max<Bits>: Bits must be in [1, 8] (8 is Bagua's ByteGrad)");
  static constexpr bool unbiased = true;
  static constexpr bool summable = false;
  /// L, the number of intervals of [min, max]: 2^Bits - 1.
  static constexpr std::uint32_t intervals = (1u << Bits) - 1;
  using wire_format = detail::quantize::bucketed_wire<Bits, 8>;
  static constexpr const char* name = "compress::min_max";

  /// Entries per bucket (one float32 min and max each). Default 512.
  std::size_t bucket = 512;

  void encode(std::span<const float> in, byte_buffer& wire, rng& g) const {
    wire_format::template encode<detail::quantize::min_max_encode_kernel<Bits>>(name, bucket, in, wire, g);
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    wire_format::template decode<detail::quantize::min_max_decode_kernel<Bits>>(
        name, bucket, bytes, out, "bucket ranges",
        [](const detail::reader& r, std::size_t b, const std::byte* header) {
          float m, big;
          std::memcpy(&m, header, 4);
          std::memcpy(&big, header + 4, 4);
          if (!std::isfinite(m) || !std::isfinite(big) || !(m <= big) || !std::isfinite(big - m))
            r.fail("bucket " + std::to_string(b) + " has range [" + std::to_string(m) + ", " + std::to_string(big) +
                   "]; min and max are finite, min <= max, and max - min is finite");
        },
        "nonzero pad bits after the last code of a bucket");
  }

  std::size_t max_encoded_bytes(std::size_t n) const { return wire_format::max_encoded_bytes(name, n, bucket); }

  /// d / (2 L^2) for the largest bucket, d = min(n, bucket) (relative; see the header comment).
  double omega(std::size_t n) const {
    detail::quantize::check_bucket(name, bucket);
    const double l = intervals;
    return static_cast<double>(std::min(n, bucket)) / (2.0 * l * l);
  }

  /// The absolute bound sum over buckets of d (M - m)^2 / (4 L^2) on E||C(x) - x||^2.
  double error_bound(std::span<const float> x) const {
    detail::quantize::check_bucket(name, bucket);
    double total = 0.0;
    const double l = intervals;
    for (std::size_t lo = 0; lo < x.size(); lo += bucket) {
      const auto b = x.subspan(lo, std::min(bucket, x.size() - lo));
      const auto [m, big] = std::minmax_element(b.begin(), b.end());
      const double range = double(*big) - double(*m);
      total += double(b.size()) * range * range / (4.0 * l * l);
    }
    return total;
  }
};

}  // namespace distopt::compress
