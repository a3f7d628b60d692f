#pragma once
// compress::scaled_sign — C(x)_b = (||x_b||_1 / d_b) * sgn(x_b) for each bucket x_b of d_b entries
// (sgn(0) = +1). Karimireddy et al.'s compressor for EF-signSGD.
//
// Encoding: u32 n; then one float32 scale ||x_b||_1 / d_b per bucket; then the n sign bits of
//   compress::sign (bit i = [x_i < 0], LSB-first, zero-padded). Buckets are `bucket` consecutive
//   entries (the last may be shorter); bucket = 0 means one bucket for the whole vector.
// Wire size: 4 + 4 * ceil(n / bucket) + ceil(n / 8) bytes (paper: d + 32 bits per tensor).
// Bound: biased, delta-contractive, and the error is exact, not just bounded: per bucket
//   ||C(x_b) - x_b||^2 = ||x_b||^2 - ||x_b||_1^2 / d_b, so
//   ||C(x) - x||^2 = (1 - delta(x)) ||x||^2 with delta(x) = sum_b (||x_b||_1^2 / d_b) / ||x||^2.
//   Per bucket this is Karimireddy et al.'s delta_b = ||x_b||_1^2 / (d_b ||x_b||_2^2) in [1/d_b, 1];
//   delta(x) is their ||x_b||^2-weighted mean, so delta(x) >= min_b delta_b >= 1 / bucket for any x.
// Summable: no.
// Paper: S. P. Karimireddy, Q. Rebjock, S. U. Stich, M. Jaggi, "Error Feedback Fixes SignSGD and
//   other Gradient Compression Schemes", ICML 2019, arXiv:1901.09847.
// Knobs: bucket = 512 (entries per scale; a multiple of 8, or 0 for one scale per vector).
// Non-finite input entries make encode throw numeric_error (the scale would not be finite).
//
//   distopt::compress::scaled_sign c{512};
//   c.encode(x, wire, g);                    // 4 + 4*ceil(n/512) + ceil(n/8) bytes
//   c.decode(wire, out);                     // out_i = +-||x_b||_1 / d_b
//   double d = c.delta(x);                   // ||C(x)-x||^2 == (1 - d) ||x||^2

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "distopt/compress/detail/sign_kernels.hpp"
#include "distopt/compress/detail/sparse_format.hpp"
#include "distopt/compress/detail/wire.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::compress {

namespace detail {

/// Checks a bucket knob: 0 (whole vector) or a positive multiple of 8.
inline void check_bucket(std::size_t bucket, const char* who) {
  if (bucket % 8 != 0)
    throw config_error(std::string(who) + ": bucket must be a multiple of 8 (or 0 for one bucket per vector), got " +
                       std::to_string(bucket) + "; round it to a multiple of 8");
}
/// The bucket length actually used for n entries.
constexpr std::size_t bucket_length(std::size_t bucket, std::size_t n) noexcept {
  return bucket == 0 ? (n == 0 ? 1 : n) : bucket;
}
constexpr std::size_t bucket_count(std::size_t bucket, std::size_t n) noexcept {
  return (n + bucket_length(bucket, n) - 1) / bucket_length(bucket, n);
}

}  // namespace detail

struct scaled_sign {
  static constexpr bool unbiased = false;
  static constexpr bool summable = false;

  std::size_t bucket = 512;  ///< entries per scale: a multiple of 8, or 0 for the whole vector

  scaled_sign() = default;
  explicit scaled_sign(std::size_t bucket_size) : bucket(bucket_size) { validate(); }
  void validate() const { detail::check_bucket(bucket, "compress::scaled_sign"); }

  void encode(std::span<const float> in, byte_buffer& wire, rng& /*unused*/) const {
    validate();
    const std::size_t n = in.size();
    const std::size_t len = detail::bucket_length(bucket, n), buckets = detail::bucket_count(bucket, n);
    detail::put_length(wire, n, "compress::scaled_sign");
    const auto out = detail::grow(wire, 4 * buckets + detail::mask_bytes(n));
    std::byte* bits = out.data() + 4 * buckets;
    for (std::size_t b = 0; b < buckets; ++b) {
      const std::size_t begin = b * len, size = std::min(len, n - begin);
      double l1 = 0.0;
      for (std::size_t c = 0; c < size; c += chunk) {  // sum and signs of a chunk while it is in cache
        const std::size_t m = std::min(chunk, size - c);
        l1 += detail::sum_abs(in.data() + begin + c, m);
        detail::pack_negative_mask(in.data() + begin + c, m, bits + (begin + c) / 8);
      }
      const auto scale = static_cast<float>(l1 / double(size));
      if (!std::isfinite(scale))
        throw numeric_error("compress::scaled_sign: bucket " + std::to_string(b) +
                            " has non-finite entries or overflows float; check the gradient for NaN/Inf");
      std::memcpy(out.data() + 4 * b, &scale, 4);
    }
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    validate();
    detail::reader r(bytes, "compress::scaled_sign");
    const std::size_t n = out.size();
    const std::size_t len = detail::bucket_length(bucket, n), buckets = detail::bucket_count(bucket, n);
    detail::expect_length(r, n);
    const auto scales = r.take(4 * buckets, "scales");
    const auto bits = r.take(detail::mask_bytes(n), "sign bits");
    r.expect_end();
    if (n % 8 != 0 && (static_cast<unsigned>(bits.back()) >> (n % 8)) != 0)
      r.fail("non-zero pad bits after the last sign");
    for (std::size_t b = 0; b < buckets; ++b) {
      float s;
      std::memcpy(&s, scales.data() + 4 * b, 4);
      if (!std::isfinite(s) || s < 0.0f) r.fail("scale " + std::to_string(b) + " is negative or not finite");
      const std::size_t begin = b * len;
      detail::expand_mask(bits.data() + begin / 8, std::min(len, n - begin), -s, s, out.data() + begin);
    }
  }

  std::size_t max_encoded_bytes(std::size_t n) const {
    return 4 + 4 * detail::bucket_count(bucket, n) + detail::mask_bytes(n);
  }

  /// The contraction every vector of n entries gets: 1 / (entries of the largest bucket)
  /// (delta_b >= 1 / d_b, met by x = e_1); 1 for n = 0.
  double delta_bound(std::size_t n) const {
    validate();
    return n == 0 ? 1.0 : 1.0 / double(std::min(detail::bucket_length(bucket, n), n));
  }

  /// The contraction on x, exact: ||C(x) - x||^2 = (1 - delta(x)) ||x||^2 (1 for x = 0).
  double delta(std::span<const float> x) const {
    const std::size_t n = x.size(), len = detail::bucket_length(bucket, n);
    double kept = 0.0, norm2 = 0.0;
    for (std::size_t begin = 0; begin < n; begin += len) {
      const std::size_t size = std::min(len, n - begin);
      double l1 = 0.0;
      for (std::size_t i = begin; i < begin + size; ++i) {
        l1 += std::abs(double(x[i]));
        norm2 += double(x[i]) * double(x[i]);
      }
      kept += l1 * l1 / double(size);
    }
    return norm2 > 0.0 ? kept / norm2 : 1.0;
  }

 private:
  static constexpr std::size_t chunk = 4096;  // a multiple of 1024 (detail::sum_chunk) and of 8
};

}  // namespace distopt::compress
