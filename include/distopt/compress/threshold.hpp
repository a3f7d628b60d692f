#pragma once
// compress::threshold — Strom's threshold sparsification: send the entries with |x_i| > tau
// (strictly; NaN counts as larger than any tau), each as itself; the rest decode to zero.
//
// Encoding: the sparse format of top_k (detail/sparse_format.hpp) with a variable count k:
//   u32 n, u32 k, k increasing indices at ceil(log2 n) bits, k float32 values.
// Wire size: 8 + ceil(k * ceil(log2 n) / 8) + 4k bytes, k = #{i : |x_i| > tau} <= n.
// Bound: biased, and NOT delta-contractive in general: when every |x_i| <= tau nothing is sent
//   and ||C(x) - x|| = ||x||, so no delta > 0 holds for all x; delta(x) returns 0. It is an
//   absolute-error compressor instead: ||C(x) - x||^2 <= tau^2 * #{i : |x_i| <= tau} <= n tau^2
//   (each dropped entry is off by at most tau), i.e. paper 3's class C2 with epsilon = sqrt(n) tau.
//   Strom used it with a residual (error feedback), which is how it should be used.
// Summable: no.
// Paper: N. Strom, "Scalable distributed DNN training using commodity GPU cloud computing",
//   Interspeech 2015 (he also quantised the kept values to +-tau; this version sends them exactly,
//   as GRACE's threshold.py does).
// Knobs: tau = 0.01 (finite, >= 0).
// Speed: one scan that collects the hits (AVX2 chosen at run time, or SSE2)
// (detail/magnitude_select.hpp); working memory is a member (one object per worker).
//
//   distopt::compress::threshold c{1e-3};
//   c.encode(x, wire, g);                    // entries with |x_i| > 1e-3
//   c.decode(wire, out);
//   double e = c.epsilon(x.size());          // sqrt(n) * tau: ||C(x)-x|| <= e

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "distopt/compress/detail/magnitude_select.hpp"
#include "distopt/compress/detail/scratch.hpp"
#include "distopt/compress/detail/sparse_format.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::compress {

struct threshold {
  static constexpr bool unbiased = false;
  static constexpr bool summable = false;

  double tau = 0.01;  ///< entries with |x_i| > tau are sent; finite, >= 0

  threshold() = default;
  explicit threshold(double t) : tau(t) { validate(); }
  void validate() const {
    if (!(tau >= 0.0 && std::isfinite(tau)))
      throw config_error("compress::threshold: tau must be finite and >= 0, got " + std::to_string(tau) +
                         "; entries with |x_i| > tau are sent");
  }

  void encode(std::span<const float> in, byte_buffer& wire, rng& /*unused*/) const {
    validate();
    const std::size_t n = in.size();
    detail::check_length(n, "compress::threshold");
    // |x| > tau  <=>  key(x) >= key(t) + 1, where t is the largest float <= tau (key order = |x| order).
    auto t = static_cast<float>(tau);
    if (double(t) > tau) t = std::nextafter(t, 0.0f);
    const std::uint32_t lo = detail::magnitude_key(t) + 1;  // t finite: key <= 0x7F7FFFFF
    // First try with the room left by earlier calls (at least n/32); if more entries pass, once more with room for all.
    auto collect = [&](std::size_t cap) {
      return detail::collect_at_least(in.data(), n, lo, index_.sized(cap + detail::collect_slack).data(),
                                      key_.sized(cap + detail::collect_slack).data(), cap);
    };
    const std::size_t cap = std::min(n, std::max(index_.get().size(), n / 32 + 1024));
    std::size_t k = collect(cap);
    if (k > cap) k = collect(n);
    const auto& idx = index_.get();
    detail::write_sparse(
        wire, n, std::span<const std::uint32_t>(idx.data(), k), [&](std::size_t j) { return in[idx[j]]; },
        "compress::threshold");
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    detail::read_sparse(bytes, out, "compress::threshold");
  }

  std::size_t max_encoded_bytes(std::size_t n) const { return detail::sparse_bytes(n, n); }

  /// No contraction holds for every input: 0.
  double delta(std::span<const float> /*x*/) const { return 0.0; }
  /// The absolute bound: ||C(x) - x|| <= sqrt(n) * tau for every x of n entries.
  double epsilon(std::size_t n) const { return std::sqrt(double(n)) * tau; }

  mutable detail::scratch<std::uint32_t> index_, key_;  ///< working memory (not copied); one object per thread
};

}  // namespace distopt::compress
