#pragma once
// topology::random_pairwise<Base> — time-varying, one random neighbour per round
// (AD-PSGD's and SwarmSGD's interaction, here synchronous):
//   x_i <- (x_i + x_p) / 2 for the partner p of i in round t, or unchanged if i has none.
// The pairs of round t form a random matching of the graph Base (default: complete),
// drawn from the stream rng(seed, 0xFFFFFFFF, t, purpose::topology) — a function of the
// shared options.seed and the round only, so every rank computes the same matching and
// both ends of a pair agree. Matching: visit the ranks in a uniformly random order; an
// unmatched rank picks a uniformly random unmatched neighbour in Base, if any. Odd n
// (and some rounds on sparse graphs) leave a rank without a partner: it keeps its model
// for that round. Every W_t is symmetric and doubly stochastic. Costs O(n * degree) per
// round on every rank to draw the matching.
// Papers: Lian et al., "Asynchronous Decentralized Parallel SGD", ICML 2018,
// arXiv 1710.06952; Nadiradze et al. (SwarmSGD), NeurIPS 2021, arXiv 1910.12308.
// Public copies need fixed neighbours, so the synchronous schedule runs the exact scheme
// (compress::identity; a compressor is refused at compile time). Under
// staleness::asynchronous the same topology runs non-blocking pairwise averaging
// (AD-PSGD, SwarmSGD; protocols/async_gossip.hpp), there with identity or lattice<B>.
//
//   distopt::optimizer<distopt::compress::identity, distopt::topology::random_pairwise<>,
//                      distopt::staleness::synchronous, distopt::local_steps::every_step> opt(t, x0, {.seed = 3});

#include <cstdint>
#include <utility>
#include <vector>

#include "distopt/core/rng.hpp"
#include "distopt/graph.hpp"
#include "distopt/topology/complete.hpp"
#include "distopt/topology/gossip.hpp"

namespace distopt::topology {

template <class Base = complete>
struct random_pairwise {
  static_assert(static_gossip_topology<Base>,
                "topology::random_pairwise<Base>: Base must be a static gossip topology (complete, ring, torus, "
                "custom, ...) whose edges the pairs are drawn from");
  static constexpr exchange_kind exchange = exchange_kind::models;
  /// One random neighbour of `base` per round (protocols/select.hpp: pairwise_topology).
  static constexpr bool pairwise = true;

  Base base{};

  struct schedule_type {
    graph g;
    mutable std::vector<int> order, partner, candidates;  // scratch; one schedule per worker

    void row(int rank, std::uint64_t round, std::uint64_t seed, mixing_row& out) const {
      const int n = g.size();
      rng r(seed, 0xFFFFFFFFu, static_cast<std::uint32_t>(round), purpose::topology);
      order.resize(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
      for (std::size_t k = order.size(); k > 1; --k)  // Fisher–Yates
        std::swap(order[k - 1], order[r.below(static_cast<std::uint32_t>(k))]);
      partner.assign(static_cast<std::size_t>(n), -1);
      for (int u : order) {
        if (partner[static_cast<std::size_t>(u)] >= 0) continue;
        candidates.clear();
        for (int v : g.neighbours(u))
          if (partner[static_cast<std::size_t>(v)] < 0) candidates.push_back(v);
        if (candidates.empty()) continue;
        const int v = candidates[r.below(static_cast<std::uint32_t>(candidates.size()))];
        partner[static_cast<std::size_t>(u)] = v;
        partner[static_cast<std::size_t>(v)] = u;
      }
      out.assign_pair(partner[static_cast<std::size_t>(rank)]);
    }
  };

  schedule_type schedule(int n) const { return {base.make_graph(n), {}, {}, {}}; }
  void validate(int n) const { base.validate(n); }
};

}  // namespace distopt::topology
