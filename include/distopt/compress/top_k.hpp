#pragma once
// compress::top_k — keep the k entries of largest magnitude, k = max(1, ceil(ratio * n))
// (computed in double; k = 0 for n = 0), and zero the rest.
//
// Encoding (detail/sparse_format.hpp): u32 n, u32 k, then the k indices in increasing order
//   bit-packed at ceil(log2 n) bits each (LSB-first, zero-padded to a byte), then the k values
//   as float32. Bit-packed rather than 32-bit indices: for n <= 2^24 this saves a quarter or
//   more of the index bytes, and it is paper 3's k(32 + ceil(log2 d)) bits exactly.
// Wire size: 8 + ceil(k * ceil(log2 n) / 8) + 4k bytes.
// Selection: exact. Ties in |x_i| go to the lower index; NaN counts as larger than any
//   number, -0.0 equals +0.0. Deterministic (the rng is unused).
// Bound: biased, delta-contractive with delta = k/n: the dropped n - k entries are the smallest,
//   so their squared mass is at most (1 - k/n)||x||^2 (ALGORITHMS.md §5.7; Stich, Cordonnier,
//   Jaggi 2018, Lemma A.1).
// Summable: no (indices differ between workers).
// Papers: N. Strom, "Scalable distributed DNN training using commodity GPU cloud computing",
//   Interspeech 2015 (thresholded sparsification); A. F. Aji, K. Heafield, "Sparse Communication
//   for Distributed Gradient Descent", EMNLP 2017, arXiv:1704.05021 (top-k); S. U. Stich,
//   J.-B. Cordonnier, M. Jaggi, "Sparsified SGD with Memory", NeurIPS 2018, arXiv:1809.07599 (bound).
// Knobs: ratio = 0.01 (fraction kept, in (0, 1]).
// Speed: a sample of 8192 keys gives a bound a little below the threshold; one scan over x
//   collects the candidates (AVX2 left-packing, chosen at run time, or SSE2; same output); an
//   exact radix select on them finishes (detail/magnitude_select.hpp). Working
//   memory is a member: use one top_k object per worker (thread). No allocation once warm.
//
//   distopt::compress::top_k c{0.01};
//   c.encode(x, wire, g);                    // 8 + ceil(k*ceil(log2 n)/8) + 4k bytes
//   c.decode(wire, out);                     // the k largest entries, zeros elsewhere
//   double d = c.delta(x);                   // k / n (= c.delta_bound(n) for every x of n entries)

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "distopt/compress/detail/magnitude_select.hpp"
#include "distopt/compress/detail/sparse_format.hpp"
#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::compress {

namespace detail {
/// k = max(1, ceil(ratio * n)) clamped to n (0 for n = 0).
inline std::size_t kept_count(double ratio, std::size_t n) noexcept {
  if (n == 0) return 0;
  const double k = std::ceil(ratio * double(n));
  return k >= double(n) ? n : std::max<std::size_t>(1, static_cast<std::size_t>(k));
}
inline void check_ratio(double ratio, const char* who) {
  if (!(ratio > 0.0 && ratio <= 1.0))
    throw config_error(std::string(who) + ": ratio must be in (0, 1], got " + std::to_string(ratio) +
                       "; it is the fraction of entries kept (0.01 keeps 1%)");
}
}  // namespace detail

struct top_k {
  static constexpr bool unbiased = false;
  static constexpr bool summable = false;

  double ratio = 0.01;  ///< fraction of entries kept, in (0, 1]

  top_k() = default;
  explicit top_k(double kept_fraction) : ratio(kept_fraction) { validate(); }
  void validate() const { detail::check_ratio(ratio, "compress::top_k"); }

  /// Entries kept for a vector of n.
  std::size_t k(std::size_t n) const noexcept { return detail::kept_count(ratio, n); }

  void encode(std::span<const float> in, byte_buffer& wire, rng& /*unused*/) const {
    validate();
    const std::size_t n = in.size(), kk = k(n);
    detail::check_length(n, "compress::top_k");
    std::span<const std::uint32_t> idx;
    if (kk > 0) idx = detail::select_top_k(in.data(), n, kk, scratch_);
    detail::write_sparse(
        wire, n, idx, [&](std::size_t j) { return in[idx[j]]; }, "compress::top_k");
  }

  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    validate();
    detail::read_sparse(bytes, out, "compress::top_k", k(out.size()));
  }

  std::size_t max_encoded_bytes(std::size_t n) const { return detail::sparse_bytes(n, k(n)); }

  /// The guaranteed contraction: k / n (1 for n = 0).
  double delta(std::span<const float> x) const { return delta_bound(x.size()); }
  /// The contraction every vector of n entries gets: k / n (1 for n = 0).
  double delta_bound(std::size_t n) const noexcept { return n == 0 ? 1.0 : double(k(n)) / double(n); }

  mutable detail::top_k_scratch scratch_;  ///< working memory (not copied); one object per thread
};

}  // namespace distopt::compress
