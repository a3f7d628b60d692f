#pragma once
// compress::identity — no compression: the 32-bit floats themselves.
//
// Encoding: the n floats, little-endian IEEE-754 binary32 (4n bytes).
// Bound: exact, unbiased with omega = 0.
// Summable: yes; the allreduce topology sums it directly on the ring.
// Paper: the uncompressed baseline of every compressed-SGD paper.
//
//   distopt::optimizer<distopt::compress::identity, distopt::topology::allreduce,
//                      distopt::staleness::synchronous, distopt::local_steps::every_step> opt(t, x0);

#include <cstddef>
#include <cstring>
#include <span>
#include <string>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/errors.hpp"
#include "distopt/core/rng.hpp"

namespace distopt::compress {

struct identity {
  static constexpr bool unbiased = true;
  static constexpr bool summable = true;
  /// The encoding is the floats themselves (core/traits.hpp, sends_raw_floats_v).
  static constexpr bool raw_floats = true;
  static constexpr double omega = 0.0;

  void encode(std::span<const float> in, byte_buffer& wire, rng& /*unused*/) const { append(wire, std::as_bytes(in)); }
  void decode(std::span<const std::byte> bytes, std::span<float> out) const {
    if (bytes.size() != out.size() * sizeof(float))
      throw transport_error("compress::identity: encoding has " + std::to_string(bytes.size()) + " bytes, expected " +
                            std::to_string(out.size() * sizeof(float)) + " for " + std::to_string(out.size()) +
                            " floats; the sender and receiver disagree on the model size or the bytes are corrupt");
    if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  }
  std::size_t max_encoded_bytes(std::size_t n) const { return n * sizeof(float); }
};

}  // namespace distopt::compress
