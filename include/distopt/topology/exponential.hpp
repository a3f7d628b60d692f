#pragma once
// topology::exponential — static exponential graph: rank i mixes with i +- 2^k (mod n)
// for every 2^k < n, Metropolis–Hastings weights (uniform 1/(deg + 1) when, as usual,
// the graph is regular). About 2 log2 n neighbours and a spectral gap that shrinks only
// logarithmically in n. Assran et al., "Stochastic Gradient Push", ICML 2019,
// arXiv 1811.10792, use the directed version i -> i + 2^k; the undirected union is
// used here so that W is symmetric. For one peer per round see one_peer_exponential.
//
//   distopt::optimizer<distopt::compress::identity, distopt::topology::exponential,
//                      distopt::staleness::synchronous, distopt::local_steps::every_step> opt(t, x0);

#include "distopt/graph.hpp"
#include "distopt/topology/gossip.hpp"

namespace distopt::topology {

struct exponential {
  static constexpr exchange_kind exchange = exchange_kind::models;
  graph make_graph(int n) const { return graph::exponential(n); }
  /// Any world size >= 1 works.
  void validate(int n) const { (void)make_graph(n); }
};

}  // namespace distopt::topology
