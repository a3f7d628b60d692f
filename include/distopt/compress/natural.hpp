#pragma once
// compress::natural — natural compression: unbiased stochastic rounding of each entry
// to a signed power of two.
//
// Encoding. For |t| in [2^e, 2^(e+1)), C(t) = sign(t) 2^(e+1) with probability
// (|t| - 2^e) / 2^e, else sign(t) 2^e. With the float bits of t (exponent field E,
// mantissa field M) that probability is exactly M / 2^23: the entry rounds up iff
// 23 random bits < M, so the rounding is exactly unbiased. The result is a float with
// a zero mantissa, so only its sign and exponent field are sent (9 bits per entry).
// Float subnormals (E = 0, |t| < 2^-126) round the same way to 0 or 2^-126.
// One documented corner: |t| >= 2^127 would round up to 2^128 = Inf; it is sent as
// sign(t) 2^127 instead (biased, but only for entries within a factor 2 of FLT_MAX).
// Wire: [u64 n][sign bits, LSB-first, ceil(n/8) bytes, pad bits zero][n exponent bytes],
// little-endian: bytes(n) = 8 + ceil(n / 8) + n. Exponent byte 255 is malformed
// (decoding never produces Inf or NaN); exponent 0 decodes to (signed) zero.
// Bound: unbiased; E(C(t) - t)^2 = (2^(e+1) - |t|)(|t| - 2^e) <= t^2 / 8 for every
// normal t, so omega = 1/8, whatever n (ALGORITHMS.md §5.10). (Subnormal entries add at
// most 2^-254 each, absolutely.)
// Randomness: the caller's rng seeds 32 xoshiro128+ lanes (detail/quantize_impl.hpp).
// Non-finite input throws numeric_error.
// Paper: S. Horváth, C.-Y. Ho, L. Horváth, A. N. Sahu, M. Canini, P. Richtárik, "Natural
// Compression for Distributed Deep Learning", MSML 2022, arXiv:1905.10988.
//
// Knobs: none.
//
//   distopt::compress::natural c;
//   distopt::byte_buffer wire;
//   c.encode(gradient, wire, g);                 // 1.125 bytes per float
//   c.decode(wire, reconstruction);              // each entry +-2^k, unbiased

#include <algorithm>
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

struct natural_encode_kernel {
  /// Writes the sign bits and exponent bytes of x[0, n); false if the input is not finite.
  static DISTOPT_DETAIL_ALWAYS_INLINE bool run(const float* x, std::size_t n, std::byte* signs, std::byte* exps,
                                               lane_bits* lanes) {
    std::uint32_t rnd[chunk];
    std::uint8_t sign[chunk];
    std::uint32_t top = 0;  // max exponent field seen: 255 flags NaN or Inf
    for (std::size_t c0 = 0; c0 < n; c0 += chunk) {
      const std::size_t len = std::min(chunk, n - c0);
      lanes->fill_for(rnd, len);
      const float* xc = x + c0;
      std::uint8_t* e_out = reinterpret_cast<std::uint8_t*>(exps + c0);
      for (std::size_t k = 0; k < len; ++k) {
        const std::uint32_t bits = std::bit_cast<std::uint32_t>(xc[k]);
        const std::uint32_t e = (bits >> 23) & 0xFFu;
        top = e > top ? e : top;
        std::uint32_t up = e + ((rnd[k] >> 9) < (bits & 0x7FFFFFu) ? 1u : 0u);
        up = up < 254u ? up : 254u;
        e_out[k] = static_cast<std::uint8_t>(up);
        sign[k] = static_cast<std::uint8_t>(bits >> 31);
      }
      pack_codes<1>(sign, len, signs + c0 / 8);
    }
    return top != 255u;
  }
};

struct natural_decode_kernel {
  /// Reconstructs n entries; false on an exponent byte 255 or set pad bits.
  static DISTOPT_DETAIL_ALWAYS_INLINE bool run(const std::byte* signs, const std::byte* exps, std::size_t n,
                                               float* out) {
    std::uint8_t sign[chunk];
    std::uint32_t top = 0;
    for (std::size_t c0 = 0; c0 < n; c0 += chunk) {
      const std::size_t len = std::min(chunk, n - c0);
      if (!unpack_codes<1>(signs + c0 / 8, len, sign)) return false;
      const std::uint8_t* e_in = reinterpret_cast<const std::uint8_t*>(exps + c0);
      float* o = out + c0;
      for (std::size_t k = 0; k < len; ++k) {
        const std::uint32_t e = e_in[k];
        top = e > top ? e : top;
        o[k] = std::bit_cast<float>((std::uint32_t{sign[k]} << 31) | (e << 23));
      }
    }
    return top != 255u;
  }
};

}  // namespace detail::quantize

struct natural {
  static constexpr bool unbiased = true;
  static constexpr bool summable = false;
  static constexpr const char* name = "compress::natural";

  void encode(std::span<const float> in, byte_buffer& wire, rng& g) const {
    const std::size_t n = in.size(), start = wire.size();
    const std::span<std::byte> out = detail::grow(wire, max_encoded_bytes(n));
    const std::uint64_t count = n;
    std::memcpy(out.data(), &count, 8);
    detail::quantize::lane_bits lanes(g);
    std::byte* signs = out.data() + 8;
    if (!detail::quantize::run_kernel<detail::quantize::natural_encode_kernel>(in.data(), n, signs, signs + (n + 7) / 8,
                                                                               &lanes)) {
      wire.resize(start);
      detail::quantize::non_finite_input(name);
    }
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    detail::reader r(bytes, name);
    const std::size_t n = out.size();
    detail::quantize::expect_count(r, n);
    const auto signs = r.take((n + 7) / 8, "sign bits");
    const auto exps = r.take(n, "exponents");
    r.expect_end();
    if (!detail::quantize::run_kernel<detail::quantize::natural_decode_kernel>(signs.data(), exps.data(), n,
                                                                               out.data()))
      r.fail("an exponent byte is 255 (Inf/NaN is never sent) or the pad bits after the last sign are set");
  }

  std::size_t max_encoded_bytes(std::size_t n) const { return 8 + (n + 7) / 8 + n; }

  /// 1/8 for every n.
  double omega(std::size_t /*n*/) const { return 0.125; }
};

}  // namespace distopt::compress
