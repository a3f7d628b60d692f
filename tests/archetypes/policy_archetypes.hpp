#pragma once
// Archetypes of the policy concepts (core/concepts.hpp, core/protocol.hpp): each meets
// its concept exactly and offers nothing more; near misses break one requirement each.
// Declarations only: they are used in unevaluated contexts (the static_asserts below,
// compiled by tests/test_extension.cpp).

#include <cstddef>
#include <cstdint>
#include <span>

#include <distopt/core/byte_buffer.hpp>
#include <distopt/core/concepts.hpp>
#include <distopt/core/protocol.hpp>
#include <distopt/core/rng.hpp>

namespace archetypes {

struct compressor_archetype {
  static constexpr bool unbiased = false;
  void encode(std::span<const float> in, distopt::byte_buffer& wire, distopt::rng& g);
  void decode(std::span<const std::byte> bytes, std::span<float> out);
  std::size_t max_encoded_bytes(std::size_t n);
};

/// A compressor with per-worker memory: encodes only with its state.
struct stateful_compressor_archetype {
  struct state {};
  static constexpr bool unbiased = false;
  state make_state(std::size_t n);
  void encode(std::span<const float> in, distopt::byte_buffer& wire, distopt::rng& g, state& s);
  void decode(std::span<const std::byte> bytes, std::span<float> out);
  std::size_t max_encoded_bytes(std::size_t n);
};

struct topology_archetype {
  static constexpr distopt::exchange_kind exchange = distopt::exchange_kind::gradients;
  void validate(int world_size) const;
};

struct staleness_archetype {
  static constexpr std::uint64_t max_staleness = 0;
};

struct local_steps_archetype {
  bool communicates_after(std::uint64_t step) const;
};

struct protocol_archetype {
  protocol_archetype(distopt::protocol_context, std::span<const float>, compressor_archetype, topology_archetype,
                     staleness_archetype);
  void step(std::span<float> x, std::span<const float> g, bool talk, distopt::local_update& u);
  void finish(std::span<float> x);
  void poll(std::span<float> x);
};

namespace near_miss {

struct compressor_without_unbiased {
  void encode(std::span<const float>, distopt::byte_buffer&, distopt::rng&);
  void decode(std::span<const std::byte>, std::span<float>);
  std::size_t max_encoded_bytes(std::size_t);
};
struct compressor_without_encode {
  static constexpr bool unbiased = true;
  void decode(std::span<const std::byte>, std::span<float>);
  std::size_t max_encoded_bytes(std::size_t);
};
struct compressor_not_copyable {
  compressor_not_copyable(const compressor_not_copyable&) = delete;
  static constexpr bool unbiased = true;
  void encode(std::span<const float>, distopt::byte_buffer&, distopt::rng&);
  void decode(std::span<const std::byte>, std::span<float>);
  std::size_t max_encoded_bytes(std::size_t);
};
/// A state declared, but encode without it: neither form of requirement 1.
struct stateful_compressor_without_stateful_encode {
  struct state {};
  static constexpr bool unbiased = false;
  state make_state(std::size_t);
  void decode(std::span<const std::byte>, std::span<float>);
  std::size_t max_encoded_bytes(std::size_t);
};
struct topology_without_validate {
  static constexpr distopt::exchange_kind exchange = distopt::exchange_kind::models;
};
struct topology_with_mutable_validate {
  static constexpr distopt::exchange_kind exchange = distopt::exchange_kind::models;
  void validate(int);
};
struct staleness_without_bound {};
struct local_steps_returning_int {
  int communicates_after(std::uint64_t) const;
};
struct protocol_without_poll {
  protocol_without_poll(distopt::protocol_context, std::span<const float>, compressor_archetype, topology_archetype,
                        staleness_archetype);
  void step(std::span<float>, std::span<const float>, bool, distopt::local_update&);
  void finish(std::span<float>);
};
struct protocol_not_constructible {
  void step(std::span<float>, std::span<const float>, bool, distopt::local_update&);
  void finish(std::span<float>);
  void poll(std::span<float>);
};

}  // namespace near_miss

static_assert(distopt::compressor<compressor_archetype>);
static_assert(distopt::compressor<stateful_compressor_archetype>);
static_assert(distopt::stateful_encoder<stateful_compressor_archetype>);
static_assert(distopt::topology_policy<topology_archetype>);
static_assert(distopt::staleness_policy<staleness_archetype>);
static_assert(distopt::local_steps_policy<local_steps_archetype>);
static_assert(distopt::protocol<protocol_archetype, compressor_archetype, topology_archetype, staleness_archetype>);

static_assert(!distopt::compressor<int>);
static_assert(!distopt::compressor<near_miss::compressor_without_unbiased>);
static_assert(!distopt::compressor<near_miss::compressor_without_encode>);
static_assert(!distopt::compressor<near_miss::compressor_not_copyable>);
static_assert(!distopt::compressor<near_miss::stateful_compressor_without_stateful_encode>);
static_assert(!distopt::topology_policy<near_miss::topology_without_validate>);
static_assert(!distopt::topology_policy<near_miss::topology_with_mutable_validate>);
static_assert(!distopt::staleness_policy<near_miss::staleness_without_bound>);
static_assert(!distopt::local_steps_policy<near_miss::local_steps_returning_int>);
static_assert(!distopt::protocol<near_miss::protocol_without_poll, compressor_archetype, topology_archetype,
                                 staleness_archetype>);
static_assert(!distopt::protocol<near_miss::protocol_not_constructible, compressor_archetype, topology_archetype,
                                 staleness_archetype>);

}  // namespace archetypes
