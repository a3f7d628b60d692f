#pragma once
// compress::bf16 — bfloat16: the top 16 bits of a float, round to nearest even.
//
// Encoding: each float becomes the nearest bfloat16 (sign, 8-bit exponent, 7-bit
// mantissa; ties to even); magnitudes that would round to Inf saturate to the largest
// bfloat16 (+-3.3895e38). Wire: the n bfloat16s, little-endian, no header:
//   bytes(n) = 2 n
// so encodings of consecutive chunks concatenate. Exponent field 255 (Inf/NaN) is
// malformed on decode.
// Bound: deterministic, biased. The relative error is <= 2^-8 (unit roundoff) for every
// normal float, so ||C(x) - x||^2 <= (1 - delta) ||x||^2 with delta = 1 - 2^-16.
// Summable: yes (accumulate): bfloat16s are added in float and rounded back at each
// hop of the ring (collective/ring_encoded.hpp).
// Non-finite input throws numeric_error.
// Paper: D. Kalamkar, D. Mudigere, N. Mellempudi, D. Das, K. Banerjee, S. Avancha,
// D. T. Vooturi, N. Jammalamadaka, J. Huang, H. Yuen, J. Yang, J. Park, A. Heinecke,
// E. Georganas, S. Srinivasan, A. Kundu, M. Smelyanskiy, B. Kaul, P. Dubey, "A Study of
// BFLOAT16 for Deep Learning Training", 2019, arXiv:1905.12322.
//
// Knobs: none.
//
//   distopt::compress::bf16 c;
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

/// float -> bfloat16 bits, round to nearest even, saturating at +-3.3895e38 (finite input).
DISTOPT_DETAIL_ALWAYS_INLINE std::uint32_t float_to_bf16_bits(std::uint32_t bits) noexcept {
  const std::uint32_t a = bits & 0x7FFFFFFFu;
  std::uint32_t r = (a + 0x7FFFu + ((a >> 16) & 1u)) >> 16;  // round to nearest even
  r = r < 0x7F7Fu ? r : 0x7F7Fu;                             // saturate instead of Inf
  return r | ((bits >> 16) & 0x8000u);
}

struct bf16_format {
  static constexpr std::uint32_t exponent_mask = 0x7F80u;
  static std::uint32_t to_float_bits(std::uint32_t h) noexcept { return h << 16; }
  static std::uint32_t from_float_bits(std::uint32_t bits) noexcept { return float_to_bf16_bits(bits); }
};

struct bf16_encode_kernel {
  static DISTOPT_DETAIL_ALWAYS_INLINE bool run(const float* x, std::size_t n, std::byte* out) {
    std::uint32_t top = 0;  // max |x| bits: >= 0x7F800000 flags NaN or Inf
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t bits = std::bit_cast<std::uint32_t>(x[i]);
      const std::uint32_t a = bits & 0x7FFFFFFFu;
      top = a > top ? a : top;
      const auto h = static_cast<std::uint16_t>(float_to_bf16_bits(bits));
      std::memcpy(out + 2 * i, &h, 2);
    }
    return top < 0x7F800000u;
  }
};

struct bf16_decode_kernel {
  static DISTOPT_DETAIL_ALWAYS_INLINE bool run(const std::byte* in, std::size_t n, float* out) {
    std::uint32_t top = 0;
    for (std::size_t i = 0; i < n; ++i) {
      std::uint16_t h;
      std::memcpy(&h, in + 2 * i, 2);
      const std::uint32_t e = h & 0x7F80u;
      top = e > top ? e : top;
      out[i] = std::bit_cast<float>(std::uint32_t{h} << 16);
    }
    return top != 0x7F80u;
  }
};

}  // namespace detail::quantize

struct bf16 {
  static constexpr bool unbiased = false;
  static constexpr bool summable = true;
  static constexpr const char* name = "compress::bf16";

  void encode(std::span<const float> in, byte_buffer& wire, rng& /*unused*/) const {
    const std::size_t start = wire.size();
    const std::span<std::byte> out = detail::grow(wire, max_encoded_bytes(in.size()));
    if (!detail::quantize::run_kernel<detail::quantize::bf16_encode_kernel>(in.data(), in.size(), out.data())) {
      wire.resize(start);
      detail::quantize::non_finite_input(name);
    }
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    detail::reader r(bytes, name);
    const auto halves = r.take(2 * out.size(), "bfloat16 values");
    r.expect_end();
    if (!detail::quantize::run_kernel<detail::quantize::bf16_decode_kernel>(halves.data(), out.size(), out.data()))
      r.fail("a bfloat16 is Inf or NaN (exponent field 255), which the encoder never sends");
  }

  std::size_t max_encoded_bytes(std::size_t n) const { return 2 * n; }

  /// Adds encoding `part` into `sum` (same length), rounding each sum to bfloat16 once.
  static void accumulate(std::span<std::byte> sum, std::span<const std::byte> part) {
    detail::quantize::accumulate_16bit<detail::quantize::bf16_format>(sum, part, name);
  }
};

}  // namespace distopt::compress
