#pragma once
// topology::complete — gossip with everyone: x_i <- (1/n) sum_j x_j, W = 11^T / n,
// spectral gap 1. Exact averaging in one round at n - 1 messages per worker: the
// reference point for the sparser graphs (and, with a compressor, CHOCO on the
// complete graph).
//
//   distopt::optimizer<distopt::compress::identity, distopt::topology::complete,
//                      distopt::staleness::synchronous, distopt::local_steps::every_step> opt(t, x0);

#include "distopt/graph.hpp"
#include "distopt/topology/gossip.hpp"

namespace distopt::topology {

struct complete {
  static constexpr exchange_kind exchange = exchange_kind::models;
  graph make_graph(int n) const { return graph::complete(n); }
  /// Any world size >= 1 works.
  void validate(int n) const { (void)make_graph(n); }
};

}  // namespace distopt::topology
