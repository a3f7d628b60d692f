#pragma once
// compress::fp16 — IEEE-754 binary16 (half precision), round to nearest even.
//
// Encoding: each float becomes the nearest binary16 (ties to even), including the
// binary16 subnormals; magnitudes above 65504 (the largest half) saturate to +-65504
// instead of becoming Inf. Wire: the n halves, little-endian, no header:
//   bytes(n) = 2 n
// so encodings of consecutive chunks concatenate. Exponent field 31 (Inf/NaN) is
// malformed on decode.
// Bound: deterministic, biased. For |x| in the normal half range [2^-14, 65504] the
// relative error is <= 2^-11 (unit roundoff); below it the absolute error is
// <= 2^-25 (half the subnormal spacing); never more than |x|. So
// ||C(x) - x||^2 <= (1 - delta) ||x||^2 with delta = 1 - 2^-22 when every |x_i| is in
// the normal range.
// Summable: yes (accumulate): halves are added in float and rounded back to binary16 at
// each hop of the ring (collective/ring_encoded.hpp).
// Non-finite input throws numeric_error.
// Paper: IEEE 754-2008 binary16; for training: P. Micikevicius, S. Narang, J. Alben,
// G. Diamos, E. Elsen, D. Garcia, B. Ginsburg, M. Houston, O. Kuchaiev, G. Venkatesh,
// H. Wu, "Mixed Precision Training", ICLR 2018, arXiv:1710.03740.
//
// Knobs: none.
//
//   distopt::compress::fp16 c;
//   distopt::byte_buffer wire;
//   c.encode(gradient, wire, g);                 // 2 bytes per float; g is not used
//   c.decode(wire, reconstruction);

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "distopt/compress/detail/quantize_impl.hpp"
#include "distopt/compress/detail/wire.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::compress {
namespace detail::quantize {

/// float -> binary16 bits, round to nearest even, saturating at +-65504 (finite input).
DISTOPT_DETAIL_ALWAYS_INLINE std::uint32_t float_to_half_bits(std::uint32_t bits) noexcept {
  std::uint32_t a = bits & 0x7FFFFFFFu;
  a = a < 0x477FE000u ? a : 0x477FE000u;  // 65504
  // Normal halves: rebias the exponent (127 -> 15) and round the 13 dropped bits to even.
  const std::uint32_t normal = (a - 0x38000000u + 0x0FFFu + ((a >> 13) & 1u)) >> 13;
  // Subnormal halves (|x| < 2^-14): adding 0.5f aligns the result's ulp to 2^-24, the
  // half subnormal spacing, so the float addition does the round to nearest even.
  const std::uint32_t subnormal = std::bit_cast<std::uint32_t>(std::bit_cast<float>(a) + 0.5f) - 0x3F000000u;
  return (a < 0x38800000u ? subnormal : normal) | ((bits >> 16) & 0x8000u);
}

/// binary16 bits (finite) -> float bits, exact.
DISTOPT_DETAIL_ALWAYS_INLINE std::uint32_t half_to_float_bits(std::uint32_t h) noexcept {
  const std::uint32_t normal = ((h & 0x7FFFu) << 13) + 0x38000000u;
  const std::uint32_t subnormal =
      std::bit_cast<std::uint32_t>(static_cast<float>(static_cast<std::int32_t>(h & 0x3FFu)) * 0x1.0p-24f);
  const std::uint32_t is_subnormal = 0u - static_cast<std::uint32_t>((h & 0x7C00u) == 0);  // all ones or zero
  return (subnormal & is_subnormal) | (normal & ~is_subnormal) | ((h & 0x8000u) << 16);
}

struct fp16_format {
  static constexpr std::uint32_t exponent_mask = 0x7C00u;
  static std::uint32_t to_float_bits(std::uint32_t h) noexcept { return half_to_float_bits(h); }
  static std::uint32_t from_float_bits(std::uint32_t bits) noexcept { return float_to_half_bits(bits); }
};

struct fp16_encode_kernel {
  static DISTOPT_DETAIL_ALWAYS_INLINE bool run(const float* x, std::size_t n, std::byte* out) {
    std::uint32_t top = 0;  // max exponent bits: 0x7F800000 flags NaN or Inf
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t bits = std::bit_cast<std::uint32_t>(x[i]);
      const std::uint32_t e = bits & 0x7F800000u;
      top = e > top ? e : top;
      const std::uint16_t h = static_cast<std::uint16_t>(float_to_half_bits(bits));
      std::memcpy(out + 2 * i, &h, 2);
    }
    return top != 0x7F800000u;
  }
};

struct fp16_decode_kernel {
  static DISTOPT_DETAIL_ALWAYS_INLINE bool run(const std::byte* in, std::size_t n, float* out) {
    std::uint32_t top = 0;
    for (std::size_t i = 0; i < n; ++i) {
      std::uint16_t h;
      std::memcpy(&h, in + 2 * i, 2);
      const std::uint32_t e = h & 0x7C00u;
      top = e > top ? e : top;
      out[i] = std::bit_cast<float>(half_to_float_bits(h));
    }
    return top != 0x7C00u;
  }
};

}  // namespace detail::quantize

struct fp16 {
  static constexpr bool unbiased = false;
  static constexpr bool summable = true;
  static constexpr const char* name = "compress::fp16";

  void encode(std::span<const float> in, byte_buffer& wire, rng& /*unused*/) const {
    const std::size_t start = wire.size();
    const std::span<std::byte> out = detail::grow(wire, max_encoded_bytes(in.size()));
    if (!detail::quantize::run_kernel<detail::quantize::fp16_encode_kernel>(in.data(), in.size(), out.data())) {
      wire.resize(start);
      detail::quantize::non_finite_input(name);
    }
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    detail::reader r(bytes, name);
    const auto halves = r.take(2 * out.size(), "halves");
    r.expect_end();
    if (!detail::quantize::run_kernel<detail::quantize::fp16_decode_kernel>(halves.data(), out.size(), out.data()))
      r.fail("a half is Inf or NaN (exponent field 31), which the encoder never sends");
  }

  std::size_t max_encoded_bytes(std::size_t n) const { return 2 * n; }

  /// Adds encoding `part` into `sum` (same length), rounding each sum to binary16 once.
  static void accumulate(std::span<std::byte> sum, std::span<const std::byte> part) {
    detail::quantize::accumulate_16bit<detail::quantize::fp16_format>(sum, part, name);
  }
};

}  // namespace distopt::compress
