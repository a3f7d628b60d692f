#pragma once
// topology::hypercube — n = 2^dim ranks, i mixes with i xor 2^k for k < dim:
//   x_i <- (x_i + sum_k x_{i xor 2^k}) / (dim + 1),  spectral gap 2 / (dim + 1).
// One of SwarmSGD's graphs (Nadiradze et al., NeurIPS 2021, arXiv 1910.12308).
//
//   distopt::optimizer<distopt::compress::identity, distopt::topology::hypercube,
//                      distopt::staleness::synchronous, distopt::local_steps::every_step> opt(t, x0);

#include <bit>
#include <string>

#include "distopt/core/errors.hpp"
#include "distopt/graph.hpp"
#include "distopt/topology/gossip.hpp"

namespace distopt::topology {

struct hypercube {
  static constexpr exchange_kind exchange = exchange_kind::models;
  graph make_graph(int n) const {
    if (n < 1 || !std::has_single_bit(static_cast<unsigned>(n)))
      throw config_error("topology::hypercube: the world size must be a power of two, got " + std::to_string(n) +
                         "; use topology::exponential or topology::torus for other sizes");
    return graph::hypercube(std::countr_zero(static_cast<unsigned>(n)));
  }
  void validate(int n) const { (void)make_graph(n); }
};

}  // namespace distopt::topology
