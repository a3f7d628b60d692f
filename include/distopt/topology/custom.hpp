#pragma once
// topology::custom — gossip on a graph you give: an edge list (Metropolis–Hastings
// weights W_ij = 1 / (1 + max(deg_i, deg_j))), a mixing matrix you have checked to be
// symmetric and doubly stochastic, or any distopt::graph generator (random_regular,
// hypercube, ...). The graph must have exactly as many nodes as there are workers.
// Bad graphs are refused when built (graph.hpp); a size mismatch when the optimizer starts.
//
//   distopt::topology::custom path{distopt::graph::from_edges(4, {{0, 1}, {1, 2}, {2, 3}})};
//   distopt::topology::custom swarm{distopt::graph::random_regular(16, 4, /*seed=*/1)};
//   distopt::optimizer<distopt::compress::identity, distopt::topology::custom,
//                      distopt::staleness::synchronous, distopt::local_steps::every_step> opt(t, x0, {}, {}, path);

#include <memory>
#include <string>
#include <utility>

#include "distopt/core/errors.hpp"
#include "distopt/graph.hpp"
#include "distopt/topology/gossip.hpp"

namespace distopt::topology {

struct custom {
  static constexpr exchange_kind exchange = exchange_kind::models;

  custom() = default;
  explicit custom(graph g) : graph_(std::make_shared<const graph>(std::move(g))) {}

  graph make_graph(int n) const {
    if (!graph_) throw config_error("topology::custom: no graph was given; construct it as topology::custom{graph}");
    if (graph_->size() != n)
      throw config_error("topology::custom: the graph has " + std::to_string(graph_->size()) +
                         " nodes but the world has " + std::to_string(n) +
                         " workers; build it for n = " + std::to_string(n));
    return *graph_;
  }
  void validate(int n) const { (void)make_graph(n); }

 private:
  std::shared_ptr<const graph> graph_;  // shared: the policy stays a cheap copyable value
};

}  // namespace distopt::topology
