#pragma once
// compress::delta_bound(c, n) — the contraction a compressor guarantees on every vector of
// n entries, the delta of
//     E ||C(x) - x||^2 <= (1 - delta) ||x||^2      for all x in R^n
// (expectation over C's randomness; DESIGN.md "Compressor"). It is what compressed gossip
// derives its default consensus step from (topology/gossip.hpp, default_consensus_step).
//  - A compressor that states it: `c.delta_bound(n)` (top_k and random_k_biased k/n,
//    scaled<C> 1/(1 + omega), scaled_sign and one_bit 1/bucket, error_feedback<C> its C's).
//  - An unbiased compressor with variance factor omega < 1: 1 - omega (E||C(x) - x||^2 <=
//    omega ||x||^2); identity gives 1. With omega >= 1 it is 0: wrap it in compress::scaled<C>.
//  - Anything else: 0, no guarantee (sign, threshold, rounding and fp16/bf16 have none
//    relative to ||x||: an absolute error, or none at all).
//
//   double d = distopt::compress::delta_bound(distopt::compress::top_k{0.05}, 1000);   // 0.05

#include <algorithm>
#include <cstddef>

#include "distopt/compress/scaled.hpp"
#include "distopt/core/concepts.hpp"

namespace distopt::compress {

/// C states the contraction it guarantees for vectors of n entries.
template <class C>
concept states_delta_bound = requires(const C& c, std::size_t n) {
  { c.delta_bound(n) } -> std::convertible_to<double>;
};

/// The contraction delta in [0, 1] that c guarantees for every vector of n entries (see above).
template <compressor C>
double delta_bound(const C& c, std::size_t n) {
  if constexpr (states_delta_bound<C>)
    return static_cast<double>(c.delta_bound(n));
  else if constexpr (C::unbiased && detail::states_omega<C>)
    return std::max(0.0, 1.0 - detail::omega_of(c, n));
  else
    return 0.0;
}

}  // namespace distopt::compress
