#pragma once
// compress::scaled<C> — an unbiased compressor shrunk by 1/(1 + omega), which makes it
// contractive (Koloskova, Stich, Jaggi, "Decentralized Stochastic Optimization and Gossip
// Algorithms with Compressed Communication", ICML 2019, arXiv:1902.00340, Remark/Example of
// "rescaled unbiased compressors"; ALGORITHMS.md §5.15). CHOCO-SGD and EF21 need a
// delta-contractive compressor; this turns any unbiased one into one.
//
// Rule: C'(x) = decode_C(encode_C(x)) / (1 + omega), omega = inner's variance factor for n entries.
// Bound: if E C(x) = x and E||C(x) - x||^2 <= omega ||x||^2, then E||C(x)||^2 <= (1 + omega)||x||^2 and
//   E||C'(x) - x||^2 = E||C(x)||^2 / (1+omega)^2 - 2||x||^2 / (1+omega) + ||x||^2
//                   <= (1 - 1/(1 + omega)) ||x||^2,
//   so delta = 1 / (1 + omega), in expectation over the draw (not for every draw). Biased.
// Wire: exactly that of C (the scale is applied at decode, from n and the configuration, which
//   sender and receiver share: no extra bytes). max_encoded_bytes = C's.
// omega: taken from the inner compressor, as `c.omega(n)` (qsgd, terngrad, natural, min_max,
//   random_k, ...) or a static `C::omega` (identity). C must be unbiased and stateless.
// Knobs: `inner` (the wrapped compressor, default-constructed by default).
//
//   distopt::compress::scaled q{distopt::compress::qsgd<4>{}};   // delta = 1 / (1 + omega_qsgd(n))
//   q.encode(x, wire, g);                                         // qsgd<4>'s bytes
//   q.decode(wire, out);                                          // qsgd<4>'s decode / (1 + omega)

#include <concepts>
#include <cstddef>
#include <span>
#include <utility>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::compress {

namespace detail {
/// True if C states its variance factor: `c.omega(n)` or a static `C::omega`.
template <class C>
concept states_omega = requires(const C& c, std::size_t n) {
  { c.omega(n) } -> std::convertible_to<double>;
}
|| requires {
  { C::omega } -> std::convertible_to<double>;
};

/// The variance factor omega of an unbiased compressor for vectors of n entries.
template <states_omega C>
double omega_of(const C& c, std::size_t n) {
  if constexpr (requires { c.omega(n); })
    return static_cast<double>(c.omega(n));
  else
    return static_cast<double>(C::omega);
}
}  // namespace detail

template <compressor C>
struct scaled {
  static_assert(C::unbiased,
                "compress::scaled<C>: C must be unbiased (E[decode(encode(x))] == x); a biased compressor "
                "is already contractive or needs error_feedback<C> instead");
  static_assert(!stateful_encoder<C>, "compress::scaled<C>: C keeps per-worker state; wrap a stateless compressor");
  static_assert(detail::states_omega<C>,
                "compress::scaled<C>: C must state its variance factor as c.omega(n) or static C::omega");

  /// The unbiased compressor that is scaled down.
  C inner{};

  scaled() = default;
  explicit scaled(C c) : inner(std::move(c)) {}

  static constexpr bool unbiased = false;  // E C'(x) = x / (1 + omega)
  static constexpr bool summable = false;

  void encode(std::span<const float> in, byte_buffer& wire, rng& g) const { inner.encode(in, wire, g); }

  /// Decodes with C, then multiplies by 1 / (1 + omega(out.size())).
  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    inner.decode(bytes, out);
    const auto scale = static_cast<float>(1.0 / (1.0 + omega(out.size())));
    for (float& v : out) v *= scale;
  }

  std::size_t max_encoded_bytes(std::size_t n) const { return inner.max_encoded_bytes(n); }

  /// The inner compressor's variance factor for n entries.
  double omega(std::size_t n) const { return detail::omega_of(inner, n); }

  /// The contraction in expectation: 1 / (1 + omega(n)).
  double delta(std::span<const float> x) const { return delta_bound(x.size()); }
  /// The same for every vector of n entries: 1 / (1 + omega(n)).
  double delta_bound(std::size_t n) const { return 1.0 / (1.0 + omega(n)); }
};

}  // namespace distopt::compress
