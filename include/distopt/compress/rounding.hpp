#pragma once
// compress::rounding — paper 3's deterministic epsilon-compressor: round every entry to the grid
// step * Z, C(x)_i = step * q_i with q_i = nearest integer to x_i / step (ties to even,
// the default rounding mode).
//
// Form implemented: ALGORITHMS.md §4.2, class (C2), "rounding to a grid of step Delta:
//   epsilon = sqrt(d) * Delta / 2" (reconstructed [M], not checked against the PDF). Each entry
//   moves by at most Delta/2, so ||C(x) - x|| <= sqrt(d) * step / 2 = epsilon(d) for every x,
//   deterministically. To guarantee a given epsilon for d entries, use step = 2 epsilon / sqrt(d)
//   (rounding::for_epsilon(epsilon, d)).
//   Float32 output: the bound is exact when step is a power of two and |q_i| < 2^24 (then
//   step * q_i is a float); otherwise rounding step * q_i to float adds at most 2^-24 |C(x)_i| per
//   entry.
// Bias: biased (deterministic), not delta-contractive (x with all |x_i| < step/2 decodes to 0);
//   delta(x) returns 0 and epsilon(n) gives the bound.
// Encoding: u32 n; then per bucket of `bucket` entries (0 = the whole vector): i32 base = min q_i,
//   u8 width w = bits of (max q_i - base), and the offsets q_i - base at w bits each, LSB-first,
//   zero-padded to a byte. Entries need |x_i| / step < 2^31 - 1 (else numeric_error: increase step).
// Wire size: 4 + sum over buckets of (5 + ceil(len_b * w_b / 8)) bytes; w_b <= 32, so at most
//   4 + 5 * ceil(n / bucket) + 4n. A bucket of equal entries costs 5 bytes.
// Summable: no (offsets are relative to per-bucket bases).
// Paper: S. Khirirat, H. R. Feyzmahdavian, M. Johansson, "Distributed learning with compressed
//   gradients", arXiv:1806.06573 (paper 3).
// Knobs: step = 2^-10 (the grid spacing Delta, in (0, 2^90]); bucket = 512 (entries per base and
//   width; 0 = one for the whole vector).
//
//   distopt::compress::rounding c{0x1.0p-10};
//   c.encode(x, wire, g);                    // offsets on the grid step * Z
//   c.decode(wire, out);                     // ||out - x|| <= c.epsilon(x.size())
//   auto c2 = distopt::compress::rounding::for_epsilon(1e-3, x.size());

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "distopt/compress/detail/bit_stream.hpp"
#include "distopt/compress/detail/scratch.hpp"
#include "distopt/compress/detail/sparse_format.hpp"
#include "distopt/compress/detail/wire.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::compress {

struct rounding {
  static constexpr bool unbiased = false;
  static constexpr bool summable = false;

  double step = 0x1.0p-10;   ///< the grid spacing Delta: finite, > 0
  std::size_t bucket = 512;  ///< entries per base and width; 0 = the whole vector

  rounding() = default;
  explicit rounding(double grid_step, std::size_t bucket_size = 512) : step(grid_step), bucket(bucket_size) {
    validate();
  }
  /// The grid that guarantees ||C(x) - x|| <= epsilon for n entries: step = 2 epsilon / sqrt(n).
  static rounding for_epsilon(double epsilon, std::size_t n, std::size_t bucket_size = 512) {
    if (!(epsilon > 0.0 && std::isfinite(epsilon)))
      throw config_error("compress::rounding: epsilon must be finite and > 0, got " + std::to_string(epsilon));
    return rounding{2.0 * epsilon / std::sqrt(double(std::max<std::size_t>(n, 1))), bucket_size};
  }
  void validate() const {
    if (!(step > 0.0 && step <= 0x1.0p90))  // |q| < 2^33 on decode: step * q stays a finite float
      throw config_error("compress::rounding: step must be in (0, 2^90], got " + std::to_string(step) +
                         "; it is the grid spacing (epsilon = sqrt(n) * step / 2)");
  }

  void encode(std::span<const float> in, byte_buffer& wire, rng& /*unused*/) const {
    validate();
    const std::size_t n = in.size(), len = bucket == 0 ? std::max<std::size_t>(n, 1) : bucket;
    detail::put_length(wire, n, "compress::rounding");
    const double inv = 1.0 / step;
    std::int32_t* q = q_.sized(std::min(n, len)).data();
    for (std::size_t begin = 0; begin < n; begin += len) {
      const std::size_t end = std::min(n, begin + len);
      std::int32_t lo = 0, hi = 0;
      bool ok = true;
      for (std::size_t i = begin; i < end; ++i) {
        const double v = double(in[i]) * inv;
        ok &= std::abs(v) <= 2147483647.0;  // also false for NaN
        // Nearest integer, ties to even (default rounding mode): exact for |v| < 2^51.
        const double r = ok ? (v + 0x1.8p52) - 0x1.8p52 : 0.0;
        q[i - begin] = static_cast<std::int32_t>(r);
      }
      if (!ok) {
        for (std::size_t i = begin; i < end; ++i)
          if (!(std::abs(double(in[i]) * inv) <= 2147483647.0))
            throw numeric_error("compress::rounding: entry " + std::to_string(i) + " = " + std::to_string(in[i]) +
                                " is not finite or exceeds (2^31 - 1) * step; increase step");
      }
      lo = *std::min_element(q, q + (end - begin));
      hi = *std::max_element(q, q + (end - begin));
      const auto span = static_cast<std::uint32_t>(std::int64_t{hi} - lo);  // < 2^32
      const auto width = static_cast<unsigned>(std::bit_width(span));
      detail::put(wire, lo);
      detail::put(wire, static_cast<std::uint8_t>(width));
      const auto codes = detail::grow(wire, detail::bit_stream_bytes(end - begin, width));
      detail::bit_writer w(codes.data(), width);
      for (std::size_t i = 0; i < end - begin; ++i) w.put(static_cast<std::uint32_t>(std::int64_t{q[i]} - lo));
      w.finish();
    }
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    validate();
    detail::reader r(bytes, "compress::rounding");
    const std::size_t n = out.size(), len = bucket == 0 ? std::max<std::size_t>(n, 1) : bucket;
    detail::expect_length(r, n);
    for (std::size_t begin = 0; begin < n; begin += len) {
      const std::size_t end = std::min(n, begin + len);
      const auto base = r.get<std::int32_t>("base");
      const auto width = r.get<std::uint8_t>("width");
      if (width > 32) r.fail("width " + std::to_string(width) + " exceeds 32 bits");
      const auto codes = r.take(detail::bit_stream_bytes(end - begin, width), "offsets");
      detail::bit_reader br(codes.data(), width);
      for (std::size_t i = begin; i < end; ++i)
        out[i] = static_cast<float>(step * double(std::int64_t{base} + std::int64_t{br.get()}));
      if (br.leftover() != 0) r.fail("non-zero pad bits after the offsets");
    }
    r.expect_end();
  }

  std::size_t max_encoded_bytes(std::size_t n) const {
    const std::size_t len = bucket == 0 ? std::max<std::size_t>(n, 1) : bucket;
    return 4 + 5 * ((n + len - 1) / len) + 4 * n;
  }

  /// The deterministic bound for n entries: ||C(x) - x|| <= sqrt(n) * step / 2.
  double epsilon(std::size_t n) const { return std::sqrt(double(n)) * step / 2.0; }
  /// Not contractive: 0.
  double delta(std::span<const float> /*x*/) const { return 0.0; }

  mutable detail::scratch<std::int32_t> q_;  ///< working memory (not copied); one object per thread
};

}  // namespace distopt::compress
