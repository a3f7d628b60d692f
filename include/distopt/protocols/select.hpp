#pragma once
// protocol_t<C, T, S>: the protocol that a (Topology, Staleness) pair selects, by what the
// policies declare (never by their names):
//
//   topology exchanges | staleness           | protocol
//   gradients          | synchronous         | protocols::centralized   (allreduce, parameter server; local SGD)
//   gradients          | bounded, async      | protocols::stale_server  (SSP, AsySGD; T must name a server)
//   models             | synchronous         | protocols::gossip        (D-PSGD, CHOCO, DCD, ECD, DeepSqueeze)
//   models             | asynchronous        | protocols::pairwise_gossip (AD-PSGD, SwarmSGD; T pairwise)
//
// A topology of one's own chooses its protocol itself by declaring
//   template <class C, class S> using protocol = my_protocol<C, S>;
// (tests/test_extension.cpp). Invalid pairs fail here, with a static_assert saying why.

#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>

#include "distopt/core/concepts.hpp"
#include "distopt/protocols/async_gossip.hpp"
#include "distopt/protocols/centralized.hpp"
#include "distopt/protocols/gossip.hpp"
#include "distopt/protocols/stale_server.hpp"
#include "distopt/topology/gossip.hpp"

namespace distopt {

/// A gossip topology that pairs each worker with one random neighbour of its graph `base`
/// per round (topology::random_pairwise): the topology of asynchronous gossip.
template <class T>
concept pairwise_topology = topology::gossip_topology<T> && requires(const T& t, int n) {
  requires T::pairwise;
  t.base.make_graph(n);
};

namespace detail {

template <class>
inline constexpr bool no_protocol_for = false;

// Stands in for the protocol of an invalid pair, so that its one diagnostic stays alone.
struct invalid_protocol {
  template <class... A>
  explicit invalid_protocol(A&&...) {}
  void step(std::span<float>, std::span<const float>, bool, local_update&) {}
  void finish(std::span<float>) {}
  void poll(std::span<float>) {}
};

template <class C, class T, class S>
consteval auto select_protocol() {
  constexpr bool stale = S::max_staleness != 0;
  if constexpr (requires { typename T::template protocol<C, S>; }) {
    return std::type_identity<typename T::template protocol<C, S>>{};
  } else if constexpr (T::exchange == exchange_kind::gradients) {
    if constexpr (!stale) {
      return std::type_identity<protocols::centralized<C, T>>{};
    } else if constexpr (!server_topology<T>) {
      static_assert(
          no_protocol_for<T>,
          "distopt::optimizer: staleness::bounded and staleness::asynchronous need topology::parameter_server "
          "(SSP, AsySGD) or topology::random_pairwise<G> (AD-PSGD, SwarmSGD): an allreduce is a collective "
          "that every worker enters together, and the compressed downlink (DoubleSqueeze) is synchronous only");
      return std::type_identity<invalid_protocol>{};
    } else {
      return std::type_identity<protocols::stale_server<C, T, S>>{};
    }
  } else if constexpr (!topology::gossip_topology<T>) {
    static_assert(no_protocol_for<T>,
                  "distopt::optimizer<C, T, S, L>: T exchanges models but is not a gossip topology: it needs "
                  "make_graph(n) (static) or schedule(n).row(rank, round, seed, row) (time-varying); see "
                  "distopt/topology/gossip.hpp");
    return std::type_identity<invalid_protocol>{};
  } else {
    if constexpr (!stale) {
      return std::type_identity<protocols::gossip<C, T>>{};
    } else if constexpr (!pairwise_topology<T>) {
      static_assert(no_protocol_for<T>,
                    "distopt::optimizer: asynchronous gossip averages with one random neighbour at a time: use "
                    "topology::random_pairwise<G> with staleness::asynchronous (fixed gossip graphs are synchronous)");
      return std::type_identity<invalid_protocol>{};
    } else if constexpr (S::max_staleness != std::numeric_limits<std::uint64_t>::max()) {
      static_assert(no_protocol_for<S>,
                    "distopt::optimizer: bounded staleness is defined for the parameter server (SSP); pairwise gossip "
                    "runs staleness::asynchronous (AD-PSGD, SwarmSGD) or staleness::synchronous");
      return std::type_identity<invalid_protocol>{};
    } else {
      return std::type_identity<protocols::pairwise_gossip<C, T, S>>{};
    }
  }
}

}  // namespace detail

/// The protocol of compressor C over topology T under staleness S (the table above).
template <class C, class T, class S>
using protocol_t = typename decltype(detail::select_protocol<C, T, S>())::type;

namespace detail {
/// protocol_t as a member, instantiated only where chosen (the optimizer's valid-policies switch).
template <class C, class T, class S>
struct protocol_of {
  using type = protocol_t<C, T, S>;
};
}  // namespace detail

}  // namespace distopt
