#pragma once
// Decisions that depend on several policies, made in one place.

#include <concepts>
#include <cstddef>
#include <span>
#include <type_traits>

#include "distopt/compress/identity.hpp"
#include "distopt/core/concepts.hpp"

namespace distopt {

/// True if C declares `static constexpr bool summable = true`: encodings of
/// different workers can be added without decoding.
template <class C>
inline constexpr bool is_summable_v = requires {
  requires C::summable;
};

/// How a centralized round averages the workers' vectors.
enum class reduction {
  ring_on_floats,  ///< ring allreduce of the raw floats (nothing to encode)
  gather_decode,   ///< allgather of the encodings, each rank decodes and averages in rank order
};

/// The reduction a compressor gets under a centralized topology.
template <compressor C>
inline constexpr reduction reduction_for_v =
    std::same_as<C, compress::identity> ? reduction::ring_on_floats : reduction::gather_decode;

namespace detail {
struct no_state {};
template <class C>
struct state_of {
  using type = no_state;
};
template <stateful_encoder C>
struct state_of<C> {
  using type = typename C::state;
};
}  // namespace detail

/// Per-worker state of a compressor: C::state, or an empty type when it has none.
template <compressor C>
using compressor_state_t = typename detail::state_of<C>::type;

/// Makes the state a worker needs to encode vectors of n floats.
template <compressor C>
compressor_state_t<C> make_compressor_state(C& c, std::size_t n) {
  if constexpr (stateful_encoder<C>)
    return c.make_state(n);
  else
    return {};
}

/// Encodes `in` with or without state, as C requires.
template <compressor C>
void encode(C& c, std::span<const float> in, byte_buffer& wire, rng& g, compressor_state_t<C>& state) {
  if constexpr (stateful_encoder<C>)
    c.encode(in, wire, g, state);
  else
    c.encode(in, wire, g);
}

}  // namespace distopt
