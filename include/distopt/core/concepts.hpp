#pragma once
// The concepts of distopt: one per policy axis, plus the transport (and, in
// core/protocol.hpp, the protocol a (Topology, Staleness) pair selects).
// docs/concepts.md mirrors them as requirement tables; change both together.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

#include "distopt/core/byte_buffer.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/tag.hpp"

namespace distopt {

/// What a topology exchanges in a communication round.
enum class exchange_kind {
  gradients,  ///< centralized: all workers average gradients (or model deltas)
  models,     ///< decentralized: each worker mixes models with its neighbours
};

/// Compressor: what goes on the wire.
///
/// Requirements, for `C c`, input `in`, output `out`, `byte_buffer wire`, `bytes`, `rng g`:
///  1. `c.encode(in, wire, g)` appends the encoding of `in` to `wire`; a compressor with
///     per-worker memory (error feedback, PowerSGD, EF21) instead declares a nested
///     `state`, makes it with `c.make_state(n)` and encodes with `c.encode(in, wire, g, s)`.
///  2. `c.decode(bytes, out)` writes the reconstruction; `out.size()` is the encoded
///     length. Malformed `bytes` throw `transport_error`, never read out of bounds.
///  3. `C::unbiased` is true iff E[decode(encode(x))] == x.
///  4. `c.max_encoded_bytes(n)` bounds the bytes appended for n floats.
///
/// Minimal conforming type:
///   struct raw {
///     static constexpr bool unbiased = true;
///     void encode(std::span<const float> in, byte_buffer& w, rng&) const { append(w, std::as_bytes(in)); }
///     void decode(std::span<const std::byte> b, std::span<float> out) const {
///       std::memcpy(out.data(), b.data(), b.size());
///     }
///     std::size_t max_encoded_bytes(std::size_t n) const { return 4 * n; }
///   };
template <class C>
concept stateful_encoder = requires(C& c, std::span<const float> in, byte_buffer& wire, rng& g, std::size_t n) {
  typename C::state;
  { c.make_state(n) } -> std::same_as<typename C::state>;
  requires requires(typename C::state & s) { c.encode(in, wire, g, s); };
};

template <class C>
concept compressor = std::copyable<C> &&
    requires(C& c, std::span<const float> in, std::span<float> out, byte_buffer& wire, std::span<const std::byte> bytes,
             rng& g, std::size_t n) {
  c.decode(bytes, out);
  { C::unbiased } -> std::convertible_to<bool>;
  { c.max_encoded_bytes(n) } -> std::convertible_to<std::size_t>;
} &&(stateful_encoder<C> ||
     requires(C & c, std::span<const float> in, byte_buffer& wire, rng& g) { c.encode(in, wire, g); });

/// Transport: ordered, tagged point-to-point bytes between ranks 0..size()-1.
///
/// Requirements, for `T t`, `int peer`, `tag tg`, `bytes`, `byte_buffer out`:
///  1. `t.rank()`, `t.size()`: this worker's rank and the world size.
///  2. `t.send(peer, tg, bytes)` queues `bytes` for `peer`; `bytes` may be reused on
///     return. Messages are delivered in order per (sender, receiver, tag).
///  3. `t.recv(peer, tg, out)` replaces the contents of `out` with the next message;
///     it blocks until one arrives or the transport's deadline passes, then throws
///     `transport_error` naming the peer.
///  4. `t.try_recv(peer, tg, out)` is `recv` without blocking; false if none is there.
///
/// Minimal conforming type: tests/archetypes/transport_archetype.hpp.
template <class T>
concept transport = requires(T& t, int peer, tag tg, std::span<const std::byte> bytes, byte_buffer& out) {
  { t.rank() } -> std::convertible_to<int>;
  { t.size() } -> std::convertible_to<int>;
  t.send(peer, tg, bytes);
  t.recv(peer, tg, out);
  { t.try_recv(peer, tg, out) } -> std::same_as<bool>;
};

/// Topology policy: who talks to whom. (Named topology_policy because `distopt::topology`
/// is the namespace of the topologies.)
///
/// Requirements, for `const T t` and `int world_size`:
///  1. `T::exchange` says whether gradients (centralized) or models (gossip) are exchanged.
///  2. `t.validate(world_size)` throws `config_error` if the topology cannot be
///     built for that many workers.
///
/// Minimal conforming type:
///   struct everyone {
///     static constexpr exchange_kind exchange = exchange_kind::gradients;
///     void validate(int) const {}
///   };
template <class T>
concept topology_policy = std::copyable<T> && requires(const T& t, int world_size) {
  { T::exchange } -> std::convertible_to<exchange_kind>;
  t.validate(world_size);
};

/// Staleness policy: how long anyone waits.
///
/// Requirements: `S::max_staleness` is the largest number of rounds a contribution
/// may lag when it is used (0 = synchronous).
///
/// Minimal conforming type:
///   struct lockstep { static constexpr std::uint64_t max_staleness = 0; };
template <class S>
concept staleness_policy = std::copyable<S> && requires {
  { S::max_staleness } -> std::convertible_to<std::uint64_t>;
};

/// Local-steps policy: how often workers talk.
///
/// Requirements, for `const L l` and `std::uint64_t step` (0-based count of local steps):
///  1. `l.communicates_after(step)` is true if a communication round follows that step.
///
/// Minimal conforming type:
///   struct always {
///     bool communicates_after(std::uint64_t) const { return true; }
///   };
template <class L>
concept local_steps_policy = std::copyable<L> && requires(const L& l, std::uint64_t step) {
  { l.communicates_after(step) } -> std::same_as<bool>;
};

// The Protocol concept is declared in core/protocol.hpp, beside the protocol_context it is
// built from (it needs transport_ref, which needs the transport concept above).

}  // namespace distopt
