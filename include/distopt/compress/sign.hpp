#pragma once
// compress::sign — signSGD: C(x) = sgn(x), with sgn(0) = +1 (as GRACE; -0.0 and NaN also map to +1).
//
// Encoding: u32 n, then n sign bits, bit i = [x_i < 0], LSB-first, zero-padded to a byte.
// Wire size: 4 + ceil(n / 8) bytes (paper: d bits; the 4-byte length makes it self-describing).
// Decode gives +1 or -1 per entry: the magnitude is discarded entirely.
// Bound: biased and NOT contractive. ||sgn(x) - x||^2 is not bounded by (1 - delta)||x||^2 for any
//   delta > 0 (x = (t, 0, ..., 0) with t -> 0 gives error ~ d), so `delta(x)` returns 0 and the
//   magnitude must be restored elsewhere: a learning rate, majority vote (signSGD), or use
//   compress::scaled_sign / compress::one_bit under error feedback.
// Summable: no (sign bits cannot be added on the wire; majority vote is a decode-side sum).
// Paper: J. Bernstein, Y.-X. Wang, K. Azizzadenesheli, A. Anandkumar, "signSGD: Compressed
//   Optimisation for Non-Convex Problems", ICML 2018, arXiv:1802.04434.
// Knobs: none.
// Speed: the mask is packed 32 floats per step with AVX2 movemask (run-time dispatch) or
//   16 per step with SSE2; all paths give the same bytes.
//
//   distopt::compress::sign c;
//   distopt::byte_buffer wire;
//   c.encode(x, wire, g);                    // 4 + ceil(n/8) bytes
//   c.decode(wire, out);                     // out_i in {-1, +1}

#include <cstddef>
#include <cstdint>
#include <span>

#include "distopt/compress/detail/sign_kernels.hpp"
#include "distopt/compress/detail/sparse_format.hpp"
#include "distopt/compress/detail/wire.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::compress {

struct sign {
  static constexpr bool unbiased = false;
  static constexpr bool summable = false;

  void encode(std::span<const float> in, byte_buffer& wire, rng& /*unused*/) const {
    detail::put_length(wire, in.size(), "compress::sign");
    const auto bits = detail::grow(wire, detail::mask_bytes(in.size()));
    detail::pack_negative_mask(in.data(), in.size(), bits.data());
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    detail::reader r(bytes, "compress::sign");
    detail::expect_length(r, out.size());
    const auto bits = r.take(detail::mask_bytes(out.size()), "sign bits");
    r.expect_end();
    if (out.size() % 8 != 0 && (static_cast<unsigned>(bits.back()) >> (out.size() % 8)) != 0)
      r.fail("non-zero pad bits after the last sign");
    detail::expand_mask(bits.data(), out.size(), -1.0f, 1.0f, out.data());
  }

  std::size_t max_encoded_bytes(std::size_t n) const { return 4 + detail::mask_bytes(n); }

  /// No contraction: sign is not delta-contractive for any delta > 0.
  double delta(std::span<const float> /*x*/) const { return 0.0; }
};

}  // namespace distopt::compress
