#pragma once
// topology::ring — gossip on a ring: rank i mixes with i - 1 and i + 1 (mod n),
//   x_i <- (x_{i-1} + x_i + x_{i+1}) / 3        (1/2 each for n = 2; alone for n = 1).
// W's eigenvalues are 1/3 + 2/3 cos(2 pi k / n), so the spectral gap shrinks like
// (2 pi^2 / 3) / n^2: cheap rounds (two neighbours), slow mixing. The topology of
// D-PSGD (Lian et al., NeurIPS 2017, arXiv 1705.09056) and of ChocoSGD's convex
// experiments (9 nodes). The exchange scheme is topology/gossip.hpp's (default:
// exact for compress::identity, CHOCO otherwise).
//
//   distopt::optimizer<distopt::compress::identity, distopt::topology::ring,
//                      distopt::staleness::synchronous, distopt::local_steps::every_step> opt(t, x0);

#include "distopt/graph.hpp"
#include "distopt/topology/gossip.hpp"

namespace distopt::topology {

struct ring {
  static constexpr exchange_kind exchange = exchange_kind::models;
  graph make_graph(int n) const { return graph::ring(n); }
  /// Any world size >= 1 works.
  void validate(int n) const { (void)make_graph(n); }
};

}  // namespace distopt::topology
