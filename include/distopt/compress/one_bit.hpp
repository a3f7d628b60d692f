#pragma once
// compress::one_bit — 1-bit SGD: per bucket, one bit per entry saying whether it is negative,
// plus the mean of the negative entries and the mean of the other entries; each entry is
// reconstructed as the mean of its group.
//
// Encoding: u32 n; then per bucket two float32: mean of {x_i < 0} and mean of {x_i >= 0} (0 for
//   an empty group); then the n bits [x_i < 0] of compress::sign (LSB-first, zero-padded).
//   Buckets are `bucket` consecutive entries (the last may be shorter); 0 = the whole vector
//   (GRACE's per-tensor granularity; Seide et al. used one per matrix column).
// Wire size: 4 + 8 * ceil(n / bucket) + ceil(n / 8) bytes (paper: d + 64 bits per tensor).
// Bound: biased, delta-contractive, with an exact error. Per bucket b with groups N (negative,
//   n_N entries, sum S_N) and P (the rest, n_P, S_P), the reconstruction is the group mean, the
//   orthogonal projection of x_b onto the span of the two group indicators, so
//     ||C(x_b) - x_b||^2 = ||x_b||^2 - (S_N^2 / n_N + S_P^2 / n_P)      (empty groups omitted)
//   and ||C(x) - x||^2 = (1 - delta(x)) ||x||^2 with
//     delta(x) = sum_b (S_N,b^2 / n_N,b + S_P,b^2 / n_P,b) / ||x||^2       (what delta(x) returns).
//   Guarantee for every x: by Cauchy-Schwarz, S_N^2/n_N + S_P^2/n_P >= (|S_N| + S_P)^2 / d_b
//   = ||x_b||_1^2 / d_b >= ||x_b||^2 / d_b, so delta(x) >= scaled_sign's delta(x) >= 1 / bucket
//   (1 / n for bucket = 0). It must still be used with error feedback (Seide et al.).
// Summable: no.
// Paper: F. Seide, H. Fu, J. Droppo, G. Li, D. Yu, "1-Bit Stochastic Gradient Descent and its
//   Application to Data-Parallel Distributed Training of Speech DNNs", Interspeech 2014.
//   Reconstruction as in GRACE's onebit.py (ALGORITHMS.md §5.4).
// Knobs: bucket = 512 (a multiple of 8, or 0 for one bucket per vector).
// Non-finite input entries make encode throw numeric_error.
//
//   distopt::compress::one_bit c{512};
//   c.encode(x, wire, g);                    // 4 + 8*ceil(n/512) + ceil(n/8) bytes
//   c.decode(wire, out);                     // out_i = mean of x_i's group in its bucket
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
#include "distopt/compress/scaled_sign.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::compress {

struct one_bit {
  static constexpr bool unbiased = false;
  static constexpr bool summable = false;

  std::size_t bucket = 512;  ///< entries per pair of means: a multiple of 8, or 0 for the whole vector

  one_bit() = default;
  explicit one_bit(std::size_t bucket_size) : bucket(bucket_size) { validate(); }
  void validate() const { detail::check_bucket(bucket, "compress::one_bit"); }

  void encode(std::span<const float> in, byte_buffer& wire, rng& /*unused*/) const {
    validate();
    const std::size_t n = in.size();
    const std::size_t len = detail::bucket_length(bucket, n), buckets = detail::bucket_count(bucket, n);
    detail::put_length(wire, n, "compress::one_bit");
    const auto out = detail::grow(wire, 8 * buckets + detail::mask_bytes(n));
    std::byte* bits = out.data() + 8 * buckets;
    for (std::size_t b = 0; b < buckets; ++b) {
      const std::size_t begin = b * len, size = std::min(len, n - begin);
      double neg = 0.0, pos = 0.0;
      for (std::size_t c = 0; c < size; c += chunk) {  // sums and signs in one pass
        const std::size_t m = std::min(chunk, size - c);
        const auto s = detail::sum_split(in.data() + begin + c, m, bits + (begin + c) / 8);
        neg += s.negative;
        pos += s.non_negative;
      }
      const std::size_t n_neg = detail::count_mask(bits + begin / 8, size), n_pos = size - n_neg;
      const float means[2] = {n_neg ? static_cast<float>(neg / double(n_neg)) : 0.0f,
                              n_pos ? static_cast<float>(pos / double(n_pos)) : 0.0f};
      if (!std::isfinite(means[0]) || !std::isfinite(means[1]))
        throw numeric_error("compress::one_bit: bucket " + std::to_string(b) +
                            " has non-finite entries or overflows float; check the gradient for NaN/Inf");
      std::memcpy(out.data() + 8 * b, means, 8);
    }
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    validate();
    detail::reader r(bytes, "compress::one_bit");
    const std::size_t n = out.size();
    const std::size_t len = detail::bucket_length(bucket, n), buckets = detail::bucket_count(bucket, n);
    detail::expect_length(r, n);
    const auto means = r.take(8 * buckets, "means");
    const auto bits = r.take(detail::mask_bytes(n), "sign bits");
    r.expect_end();
    if (n % 8 != 0 && (static_cast<unsigned>(bits.back()) >> (n % 8)) != 0)
      r.fail("non-zero pad bits after the last sign");
    for (std::size_t b = 0; b < buckets; ++b) {
      float m[2];
      std::memcpy(m, means.data() + 8 * b, 8);
      if (!std::isfinite(m[0]) || !std::isfinite(m[1]))
        r.fail("a mean of bucket " + std::to_string(b) + " is not finite");
      const std::size_t begin = b * len;
      detail::expand_mask(bits.data() + begin / 8, std::min(len, n - begin), m[0], m[1], out.data() + begin);
    }
  }

  std::size_t max_encoded_bytes(std::size_t n) const {
    return 4 + 8 * detail::bucket_count(bucket, n) + detail::mask_bytes(n);
  }

  /// The contraction every vector of n entries gets: 1 / (entries of the largest bucket),
  /// the Cauchy-Schwarz bound above; 1 for n = 0.
  double delta_bound(std::size_t n) const {
    validate();
    return n == 0 ? 1.0 : 1.0 / double(std::min(detail::bucket_length(bucket, n), n));
  }

  /// The contraction on x, exact: ||C(x) - x||^2 = (1 - delta(x)) ||x||^2 (1 for x = 0).
  double delta(std::span<const float> x) const {
    const std::size_t n = x.size(), len = detail::bucket_length(bucket, n);
    double kept = 0.0, norm2 = 0.0;
    for (std::size_t begin = 0; begin < n; begin += len) {
      double s[2] = {0.0, 0.0};
      std::size_t c[2] = {0, 0};
      for (std::size_t i = begin; i < std::min(n, begin + len); ++i) {
        const int g = x[i] < 0.0f ? 0 : 1;
        s[g] += x[i];
        ++c[g];
        norm2 += double(x[i]) * double(x[i]);
      }
      for (int g = 0; g < 2; ++g)
        if (c[g] > 0) kept += s[g] * s[g] / double(c[g]);
    }
    return norm2 > 0.0 ? std::min(1.0, kept / norm2) : 1.0;
  }

 private:
  static constexpr std::size_t chunk = 4096;  // a multiple of 1024 (detail::sum_chunk) and of 8
};

}  // namespace distopt::compress
