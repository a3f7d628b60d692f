#pragma once
// Decisions that depend on several policies, made in one place.

#include <concepts>

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

}  // namespace distopt
