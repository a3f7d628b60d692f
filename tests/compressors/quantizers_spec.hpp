#pragma once
// suite::spec<C> for the quantizers (fp16, bf16, qsgd<B>, terngrad, natural, min_max<B>).
// Sizes and bounds are written here from shared/ALGORITHMS.md §5.1-5.3, §5.10 and the
// Bagua ByteGrad description (§2.4), not by calling the headers' omega() or sizes.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include <distopt/compress/bf16.hpp>
#include <distopt/compress/fp16.hpp>
#include <distopt/compress/min_max.hpp>
#include <distopt/compress/natural.hpp>
#include <distopt/compress/qsgd.hpp>
#include <distopt/compress/terngrad.hpp>

#include "compressor_suite.hpp"

namespace suite {

inline std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

/// Bytes of n codes of `bits` bits in buckets of `bucket`, each bucket byte-aligned.
inline std::size_t bucketed_code_bytes(std::size_t n, std::size_t bucket, std::size_t bits) {
  return (n / bucket) * ceil_div(bucket * bits, 8) + ceil_div((n % bucket) * bits, 8);
}

// fp16: 16 bits per entry (ALGORITHMS.md §5.1); relative error <= 2^-11 in the normal
// range [2^-14, 65504], absolute error <= 2^-25 below it, and never more than |x|.
template <>
struct spec<distopt::compress::fp16> {
  using C = distopt::compress::fp16;
  static constexpr bool randomized = false;
  static std::vector<C> configs() { return {C{}}; }
  static std::optional<std::size_t> bytes(const C&, std::size_t n) { return 2 * n; }
  static double delta(const C&, std::span<const float> x) {
    double err2 = 0.0, norm2 = 0.0;
    for (float v : x) {
      const double a = std::abs(double(v));
      const double e =
          a > 65504.0 ? a - 65504.0 : std::min(a, std::max(a * std::ldexp(1.0, -11), std::ldexp(1.0, -25)));
      err2 += e * e;
      norm2 += a * a;
    }
    return norm2 > 0.0 ? 1.0 - err2 / norm2 : 0.0;
  }
};

// bf16: 16 bits per entry; relative error <= 2^-8 for normal floats (ALGORITHMS.md §5.1).
template <>
struct spec<distopt::compress::bf16> {
  using C = distopt::compress::bf16;
  static constexpr bool randomized = false;
  static std::vector<C> configs() { return {C{}}; }
  static std::optional<std::size_t> bytes(const C&, std::size_t n) { return 2 * n; }
  static double delta(const C&, std::span<const float> x) {
    double norm2 = 0.0;
    for (float v : x) norm2 += double(v) * double(v);
    return norm2 > 0.0 ? 1.0 - std::ldexp(1.0, -16) : 0.0;
  }
  static double exact_tolerance(const C&) { return std::ldexp(1.0, -8); }
};

// QSGD with s = 2^(B-1) - 1 levels per bucket: omega = min(d/s^2, sqrt(d)/s) for buckets of
// d entries (ALGORITHMS.md §5.2); wire = 64-bit count + a float norm per bucket + B bits per entry.
template <unsigned B>
struct spec<distopt::compress::qsgd<B>> {
  using C = distopt::compress::qsgd<B>;
  static constexpr bool randomized = true;
  static std::vector<C> configs() { return {C{}, C{.bucket = 37}}; }
  static std::optional<std::size_t> bytes(const C& c, std::size_t n) {
    return 8 + 4 * ceil_div(n, c.bucket) + bucketed_code_bytes(n, c.bucket, B);
  }
  static double omega(const C& c, std::size_t n) {
    const double d = double(std::min(n, c.bucket)), s = double((1u << (B - 1)) - 1);
    return std::min(d / (s * s), std::sqrt(d) / s);
  }
};

// TernGrad: E||C(x)||^2 = s ||x||_1 with s = ||x||_inf per bucket, so omega = sqrt(d) - 1
// (ALGORITHMS.md §5.3); wire = count + a float scale per bucket + 2 bits per entry.
template <>
struct spec<distopt::compress::terngrad> {
  using C = distopt::compress::terngrad;
  static constexpr bool randomized = true;
  static std::vector<C> configs() { return {C{}, C{.bucket = 13}}; }
  static std::optional<std::size_t> bytes(const C& c, std::size_t n) {
    return 8 + 4 * ceil_div(n, c.bucket) + bucketed_code_bytes(n, c.bucket, 2);
  }
  static double omega(const C& c, std::size_t n) {
    const std::size_t d = std::min(n, c.bucket);
    return d == 0 ? 0.0 : std::sqrt(double(d)) - 1.0;
  }
};

// Natural compression: omega = 1/8 (ALGORITHMS.md §5.10); 9 bits per entry (sign + exponent)
// plus the 64-bit count.
template <>
struct spec<distopt::compress::natural> {
  using C = distopt::compress::natural;
  static constexpr bool randomized = true;
  static std::vector<C> configs() { return {C{}}; }
  static std::optional<std::size_t> bytes(const C&, std::size_t n) { return 8 + n + ceil_div(n, 8); }
  static double omega(const C&, std::size_t) { return 1.0 / 8.0; }
};

// min_max (Bagua ByteGrad) with L = 2^B - 1 intervals and stochastic rounding: per entry
// variance <= step^2/4, step = (max-min)/L, and (max-min)^2 <= 2 ||x||^2, so
// omega = d / (2 L^2); wire = count + two floats per bucket + B bits per entry.
template <unsigned B>
struct spec<distopt::compress::min_max<B>> {
  using C = distopt::compress::min_max<B>;
  static constexpr bool randomized = true;
  static std::vector<C> configs() { return {C{}, C{.bucket = 50}}; }
  static std::optional<std::size_t> bytes(const C& c, std::size_t n) {
    return 8 + 8 * ceil_div(n, c.bucket) + bucketed_code_bytes(n, c.bucket, B);
  }
  static double omega(const C& c, std::size_t n) {
    const double l = double((1u << B) - 1);
    return double(std::min(n, c.bucket)) / (2.0 * l * l);
  }
};

}  // namespace suite

#define DISTOPT_QUANTIZERS                                                                                  \
  distopt::compress::fp16, distopt::compress::bf16, distopt::compress::qsgd<8>, distopt::compress::qsgd<4>, \
      distopt::compress::qsgd<2>, distopt::compress::terngrad, distopt::compress::natural,                  \
      distopt::compress::min_max<8>, distopt::compress::min_max<3>
