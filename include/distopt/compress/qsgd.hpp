#pragma once
// compress::qsgd<Bits> — QSGD: unbiased stochastic rounding of |x_i| / ||x||_2 to
// s levels per bucket, plus a sign bit, in fixed-width Bits-bit codes.
//
// Encoding. The vector is cut into buckets of `bucket` entries (the last may be
// shorter). For a bucket v of d entries, with s = 2^(Bits-1) - 1 levels:
//   l_i = floor(s |v_i| / ||v||_2);  level_i = l_i + 1 with probability s|v_i|/||v|| - l_i, else l_i;
//   code_i = level_i | sign(v_i) << (Bits-1)          (level in [0, s], sign = IEEE sign bit)
//   decode: v_i = (-1)^sign * level_i * ||v||_2 / s.
// So Bits = 8 gives s = 127 levels, Bits = 4 gives s = 7, Bits = 2 gives s = 1.
// Every Bits-bit pattern is a valid code.
// Wire: [u64 n][float32 ||v||_2 per bucket][codes of each bucket, LSB-first, each bucket
// padded to a whole byte with zero bits], little-endian:
//   bytes(n) = 8 + 4 * ceil(n / bucket) + floor(n / bucket) * ceil(bucket * Bits / 8)
//              + ceil((n mod bucket) * Bits / 8)
// (= 8 + 4 ceil(n/bucket) + ceil(n Bits / 8) when bucket * Bits is a multiple of 8).
// Bound: unbiased; per bucket E||C(v) - v||^2 <= min(d / s^2, sqrt(d) / s) ||v||^2, so
//   omega(n) = min(d / s^2, sqrt(d) / s) with d = min(n, bucket)   (the largest bucket).
// Randomness: the caller's rng seeds 32 xoshiro128+ lanes (detail/quantize_impl.hpp).
// Non-finite input (or a bucket norm beyond the float range) throws numeric_error.
// Paper: D. Alistarh, D. Grubic, J. Li, R. Tomioka, M. Vojnovic, "QSGD: Communication-
// Efficient SGD via Gradient Quantization and Encoding", NeurIPS 2017, arXiv:1610.02132.
// This is the fixed-width variant (ALGORITHMS.md §5.2), not the Elias-coded one.
//
// Knobs: Bits in [2, 8] (template); `bucket` = 512 entries per norm.
//
//   distopt::compress::qsgd<8> q{.bucket = 1024};
//   distopt::byte_buffer wire;
//   q.encode(gradient, wire, g);                 // ~1.03 bytes per float
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
struct qsgd_encode_kernel {
  /// Writes the norms and codes of x[0, n); false if the input is not finite.
  static DISTOPT_DETAIL_ALWAYS_INLINE bool run(const float* x, std::size_t n, std::size_t bucket, std::byte* norms,
                                               std::byte* out, lane_bits* lanes) {
    constexpr std::uint32_t s = (1u << (Bits - 1)) - 1;
    std::uint32_t rnd[chunk];
    std::uint8_t codes[chunk];
    for (std::size_t lo = 0, b = 0; lo < n; lo += bucket, ++b) {
      const std::size_t d = std::min(bucket, n - lo);
      const float* xb = x + lo;
      const float norm = static_cast<float>(std::sqrt(sum_of_squares(xb, d)));
      if (!(norm <= std::numeric_limits<float>::max())) return false;  // NaN or Inf
      std::memcpy(norms + 4 * b, &norm, 4);
      // Fixed point (see detail::quantize::fraction_bits): T = s |x| / ||v|| * 2^23, clamped to s * 2^23
      // so that level <= s and T fits an int32.
      constexpr float one = float(std::uint32_t{1} << fraction_bits), top = static_cast<float>(s) * one;
      const auto [pre, scale] = scale_for(top, norm);
      for (std::size_t c0 = 0; c0 < d; c0 += chunk) {
        const std::size_t len = std::min(chunk, d - c0);
        lanes->fill_for(rnd, len);
        std::uint8_t* dst = Bits == 8 ? reinterpret_cast<std::uint8_t*>(out) : codes;
        const float* xc = xb + c0;
        for (std::size_t k = 0; k < len; ++k) {
          const std::uint32_t bits = std::bit_cast<std::uint32_t>(xc[k]);
          const float t = std::min(std::bit_cast<float>(bits & 0x7FFFFFFFu) * pre * scale, top);
          const std::uint32_t level =
              (static_cast<std::uint32_t>(static_cast<std::int32_t>(t)) + (rnd[k] >> (32 - fraction_bits))) >>
              fraction_bits;
          dst[k] = static_cast<std::uint8_t>(level | ((bits >> 31) << (Bits - 1)));
        }
        if constexpr (Bits < 8) pack_codes<Bits>(codes, len, out);
        out += packed_bytes<Bits>(len);
      }
    }
    return true;
  }
};

template <unsigned Bits>
struct qsgd_decode_kernel {
  /// Reconstructs n entries from validated norms; false if a bucket's pad bits are set.
  static DISTOPT_DETAIL_ALWAYS_INLINE bool run(const std::byte* norms, const std::byte* in, std::size_t n,
                                               std::size_t bucket, float* out) {
    constexpr std::uint32_t s = (1u << (Bits - 1)) - 1;
    std::uint8_t codes[chunk];
    for (std::size_t lo = 0, b = 0; lo < n; lo += bucket, ++b) {
      const std::size_t d = std::min(bucket, n - lo);
      float norm;
      std::memcpy(&norm, norms + 4 * b, 4);
      const float unit = norm / static_cast<float>(s);
      for (std::size_t c0 = 0; c0 < d; c0 += chunk) {
        const std::size_t len = std::min(chunk, d - c0);
        const std::uint8_t* src = reinterpret_cast<const std::uint8_t*>(in);
        if constexpr (Bits < 8) {
          if (!unpack_codes<Bits>(in, len, codes)) return false;
          src = codes;
        }
        float* o = out + lo + c0;
        for (std::size_t k = 0; k < len; ++k) {
          const std::uint32_t c = src[k];
          const float v = static_cast<float>(static_cast<std::int32_t>(c & s)) * unit;
          o[k] = std::bit_cast<float>(std::bit_cast<std::uint32_t>(v) | ((c >> (Bits - 1)) << 31));
        }
        in += packed_bytes<Bits>(len);
      }
    }
    return true;
  }
};

}  // namespace detail::quantize

template <unsigned Bits>
struct qsgd {
  static_assert(Bits >= 2 && Bits <= 8,
                "compress::qsgd<Bits>: Bits must be in [2, 8] (one sign bit plus 1 to 7 level bits)");
  static constexpr bool unbiased = true;
  static constexpr bool summable = false;
  /// s, the number of nonzero levels: 2^(Bits-1) - 1.
  static constexpr std::uint32_t levels = (1u << (Bits - 1)) - 1;
  using wire_format = detail::quantize::bucketed_wire<Bits, 4>;
  static constexpr const char* name = "compress::qsgd";

  /// Entries per bucket (one float32 norm each). Default 512.
  std::size_t bucket = 512;

  void encode(std::span<const float> in, byte_buffer& wire, rng& g) const {
    wire_format::template encode<detail::quantize::qsgd_encode_kernel<Bits>>(name, bucket, in, wire, g);
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    wire_format::template decode<detail::quantize::qsgd_decode_kernel<Bits>>(
        name, bucket, bytes, out, "bucket norms",
        [](const detail::reader& r, std::size_t b, const std::byte* header) {
          float norm;
          std::memcpy(&norm, header, 4);
          if (!std::isfinite(norm) || std::signbit(norm))
            r.fail("bucket " + std::to_string(b) + " has norm " + std::to_string(norm) + "; a norm is finite and >= 0");
        },
        "nonzero pad bits after the last code of a bucket");
  }

  std::size_t max_encoded_bytes(std::size_t n) const { return wire_format::max_encoded_bytes(name, n, bucket); }

  /// min(d / s^2, sqrt(d) / s) for the largest bucket, d = min(n, bucket).
  double omega(std::size_t n) const {
    detail::quantize::check_bucket(name, bucket);
    const double d = static_cast<double>(std::min(n, bucket)), s = levels;
    return std::min(d / (s * s), std::sqrt(d) / s);
  }
};

}  // namespace distopt::compress
