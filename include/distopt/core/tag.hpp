#pragma once
// tag: separates independent message streams between the same two workers.
// Messages are ordered per (peer, tag).

#include <cstdint>

namespace distopt {

enum class tag : std::uint32_t {};

namespace detail {

/// Tags used by the library's own collectives and protocols; user tags should stay below this.
inline constexpr std::uint32_t reserved_tag_base = 0xD0000000u;

/// Every message stream of the library, numbered once here so that no two collide. The
/// numbers are part of the wire (TCP frames carry the tag): change none of them.
enum class reserved : std::uint32_t {
  ring_allreduce = 1,
  broadcast = 2,
  allgather = 3,
  ring_encoded = 4,
  gossip = 8,       // protocols/gossip.hpp
  model_size = 16,  // optimizer: the ranks agree on the model size
  ps_push = 24,     // protocols/parameter_server_round.hpp
  ps_pull = 25,
  async_push = 32,  // protocols/stale_server.hpp
  async_pull = 33,
  async_gossip = 40,  // protocols/async_gossip.hpp
};

constexpr tag reserved_tag(reserved r) noexcept { return tag{reserved_tag_base + static_cast<std::uint32_t>(r)}; }

}  // namespace detail

}  // namespace distopt
