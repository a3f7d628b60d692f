#pragma once
// compress::terngrad — TernGrad: each entry becomes -s, 0 or +s, s = ||v||_inf per bucket.
//
// Encoding. For a bucket v of d entries (buckets of `bucket` entries, the last may be
// shorter), s = max_i |v_i|; entry i is sign(v_i) * s with probability |v_i| / s,
// else 0. Codes are 2 bits: 0 -> 0, 1 -> +s, 2 -> -s; code 3 is malformed.
// Wire: [u64 n][float32 s per bucket][2-bit codes of each bucket, LSB-first, each bucket
// padded to a whole byte with zero bits], little-endian:
//   bytes(n) = 8 + 4 * ceil(n / bucket) + floor(n / bucket) * ceil(bucket / 4) + ceil((n mod bucket) / 4)
// (= 8 + 4 ceil(n/bucket) + ceil(n/4) when bucket is a multiple of 4).
// Bound: unbiased; per bucket E||C(v) - v||^2 = s ||v||_1 - ||v||^2 exactly, and
// s ||v||_1 <= ||v||_inf sqrt(d) ||v||_2 <= sqrt(d) ||v||^2, so
//   omega(n) = sqrt(d) - 1 with d = min(n, bucket)   (the largest bucket).
// No gradient clipping (the paper's 2.5 sigma trick) is applied: clip before encoding if wanted.
// Randomness: the caller's rng seeds 32 xoshiro128+ lanes (detail/quantize_impl.hpp);
// the Bernoulli draw compares 23 random bits with |v_i| / s in fixed point (bias <= 2^-23 s).
// Non-finite input throws numeric_error.
// Paper: W. Wen, C. Xu, F. Yan, C. Wu, Y. Wang, Y. Chen, H. Li, "TernGrad: Ternary Gradients
// to Reduce Communication in Distributed Deep Learning", NeurIPS 2017, arXiv:1705.07878.
//
// Knobs: `bucket` = 512 entries per scale (the paper uses one scale per layer).
//
//   distopt::compress::terngrad t;               // or terngrad{.bucket = 4096}
//   distopt::byte_buffer wire;
//   t.encode(gradient, wire, g);                 // ~0.26 bytes per float
//   t.decode(wire, reconstruction);              // E[reconstruction] == gradient

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "distopt/compress/detail/quantize_impl.hpp"
#include "distopt/compress/detail/wire.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::compress {
namespace detail::quantize {

struct terngrad_encode_kernel {
  /// Writes the scales and codes of x[0, n); false if the input is not finite.
  static DISTOPT_DETAIL_ALWAYS_INLINE bool run(const float* x, std::size_t n, std::size_t bucket, std::byte* scales,
                                               std::byte* out, lane_bits* lanes) {
    std::uint32_t rnd[chunk];
    std::uint8_t codes[chunk];
    for (std::size_t lo = 0, b = 0; lo < n; lo += bucket, ++b) {
      const std::size_t d = std::min(bucket, n - lo);
      const float* xb = x + lo;
      const std::uint32_t max_bits = max_abs_bits(xb, d);
      if (max_bits >= 0x7F800000u) return false;  // NaN or Inf
      const float s = std::bit_cast<float>(max_bits);
      std::memcpy(scales + 4 * b, &s, 4);
      // Nonzero iff (23 random bits) < |v_i| / s * 2^23, compared as floats (both exact there).
      const auto [pre, scale] = scale_for(float(std::uint32_t{1} << fraction_bits), s);
      for (std::size_t c0 = 0; c0 < d; c0 += chunk) {
        const std::size_t len = std::min(chunk, d - c0);
        lanes->fill_for(rnd, len);
        const float* xc = xb + c0;
        for (std::size_t k = 0; k < len; ++k) {
          const std::uint32_t bits = std::bit_cast<std::uint32_t>(xc[k]);
          const float t = std::bit_cast<float>(bits & 0x7FFFFFFFu) * pre * scale;
          const float u = static_cast<float>(static_cast<std::int32_t>(rnd[k] >> (32 - fraction_bits)));
          codes[k] = static_cast<std::uint8_t>(u < t ? 1u + (bits >> 31) : 0u);
        }
        pack_codes<2>(codes, len, out);
        out += packed_bytes<2>(len);
      }
    }
    return true;
  }
};

struct terngrad_decode_kernel {
  /// Reconstructs n entries from validated scales; false on a code 3 or set pad bits.
  static DISTOPT_DETAIL_ALWAYS_INLINE bool run(const std::byte* scales, const std::byte* in, std::size_t n,
                                               std::size_t bucket, float* out) {
    std::uint8_t codes[chunk];
    std::uint32_t bad = 0;
    for (std::size_t lo = 0, b = 0; lo < n; lo += bucket, ++b) {
      const std::size_t d = std::min(bucket, n - lo);
      std::uint32_t s_bits;
      std::memcpy(&s_bits, scales + 4 * b, 4);
      for (std::size_t c0 = 0; c0 < d; c0 += chunk) {
        const std::size_t len = std::min(chunk, d - c0);
        if (!unpack_codes<2>(in, len, codes)) return false;
        float* o = out + lo + c0;
        for (std::size_t k = 0; k < len; ++k) {
          const std::uint32_t c = codes[k];
          bad |= c & (c >> 1);  // code 3
          o[k] = std::bit_cast<float>((c != 0 ? s_bits : 0u) | ((c >> 1) << 31));
        }
        in += packed_bytes<2>(len);
      }
    }
    return bad == 0;
  }
};

}  // namespace detail::quantize

struct terngrad {
  static constexpr bool unbiased = true;
  static constexpr bool summable = false;
  using wire_format = detail::quantize::bucketed_wire<2, 4>;
  static constexpr const char* name = "compress::terngrad";

  /// Entries per bucket (one float32 scale each). Default 512.
  std::size_t bucket = 512;

  void encode(std::span<const float> in, byte_buffer& wire, rng& g) const {
    wire_format::template encode<detail::quantize::terngrad_encode_kernel>(name, bucket, in, wire, g);
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    wire_format::template decode<detail::quantize::terngrad_decode_kernel>(
        name, bucket, bytes, out, "bucket scales",
        [](const detail::reader& r, std::size_t b, const std::byte* header) {
          float s;
          std::memcpy(&s, header, 4);
          if (!std::isfinite(s) || std::signbit(s))
            r.fail("bucket " + std::to_string(b) + " has scale " + std::to_string(s) + "; a scale is finite and >= 0");
        },
        "a 2-bit code is 3 (only 0, 1, 2 exist) or pad bits after a bucket's last code are set");
  }

  std::size_t max_encoded_bytes(std::size_t n) const { return wire_format::max_encoded_bytes(name, n, bucket); }

  /// sqrt(d) - 1 for the largest bucket, d = min(n, bucket).
  double omega(std::size_t n) const {
    detail::quantize::check_bucket(name, bucket);
    const std::size_t d = std::min(n, bucket);
    return d == 0 ? 0.0 : std::sqrt(static_cast<double>(d)) - 1.0;
  }
};

}  // namespace distopt::compress
