#pragma once
// Decisions that depend on several policies, made in one place.

#include <concepts>
#include <cstddef>
#include <span>
#include <type_traits>

#include "distopt/core/concepts.hpp"
#include "distopt/core/transport_ref.hpp"

namespace distopt {

/// True if C declares `static constexpr bool raw_floats = true`: its encoding is the floats
/// themselves (compress::identity), so collectives move and add them without encoding and
/// gossip can mix the models exactly.
template <class C>
inline constexpr bool sends_raw_floats_v = requires {
  requires C::raw_floats;
};

/// True if C declares `static constexpr bool summable = true`: encodings of
/// different workers can be added without decoding.
template <class C>
inline constexpr bool is_summable_v = requires {
  requires C::summable;
};

/// True if C declares `static constexpr bool momentum_before_compression = true`: when a round
/// averages gradients, each worker applies its momentum before encoding, and the optimizer
/// applies none after the round (DGC's momentum correction for error_feedback<C>; Signum for
/// majority_sign). If C also has `mask_momentum(velocity, state)`, the optimizer calls it after
/// the round (DGC's factor masking).
template <class C>
inline constexpr bool momentum_before_compression_v = requires {
  requires C::momentum_before_compression;
};

/// A summable compressor whose encodings add with `C::accumulate(sum, part)`: afterwards
/// decode(sum) is the sum of the two decodes (to the format's rounding), and a part that
/// does not match `sum` (length, round) throws transport_error. The ring then reduces on
/// the encodings (collective/ring_encoded.hpp).
template <class C>
concept summable_encoding = is_summable_v<C> && requires(std::span<std::byte> sum, std::span<const std::byte> part) {
  C::accumulate(sum, part);
};

/// How a centralized round averages the workers' vectors.
enum class reduction {
  ring_on_floats,     ///< ring allreduce of the raw floats (nothing to encode)
  ring_on_encodings,  ///< ring allreduce adding the encodings (summable_encoding: fp16, bf16, random_k_shared)
  gather_decode,      ///< allgather of the encodings, each rank decodes and averages in rank order
  compressor_driven,  ///< the compressor runs its own collective: c.average(t, v, state, g) (power_sgd)
};

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

/// True if C runs its own averaging collective (a multi-round scheme such as PowerSGD):
/// `c.average(transport_ref, std::span<float> v, state&, rng&)` replaces v by the average.
template <class C>
inline constexpr bool drives_own_collective_v = requires(C& c, transport_ref t, std::span<float> v,
                                                         compressor_state_t<C>& s, rng& g) {
  c.average(t, v, s, g);
};

/// The reduction a compressor gets under a centralized topology.
template <compressor C>
inline constexpr reduction reduction_for_v = sends_raw_floats_v<C>        ? reduction::ring_on_floats
                                             : drives_own_collective_v<C> ? reduction::compressor_driven
                                             : summable_encoding<C>       ? reduction::ring_on_encodings
                                                                          : reduction::gather_decode;

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
